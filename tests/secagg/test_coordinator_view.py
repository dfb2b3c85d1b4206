"""What the coordinator holds: masked inputs that look uniform and differ from every true
update, keys, ciphertexts, and for each worker the shares of one secret, never both."""

from __future__ import annotations

import torch

from fedmq.coordinator.secagg.simulate import simulate
from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.params import SecAggParams
from tests.secagg.rig import make_updates

DIM = 4096


def _bits_balanced(vector: torch.Tensor, bits: int) -> bool:
    """Each of the ring's bits is set in 50% +- 5% of the coordinates (a uniform vector of 4096:
    one standard deviation is 0.8%, so this fails by chance with probability below 1e-9 per bit)."""
    ones = torch.stack([(vector >> b) & 1 for b in range(bits)]).double().mean(dim=1)
    return bool(((ones - 0.5).abs() < 0.05).all())


def _chi_square_top_bits(vector: torch.Tensor, bits: int) -> float:
    """Chi-square of the top 4 bits against 16 equal buckets (15 degrees of freedom; the 1e-6
    tail begins near 50)."""
    counts = torch.bincount(vector >> (bits - 4), minlength=16).double()
    expected = vector.numel() / 16
    return float(((counts - expected) ** 2 / expected).sum())


def test_every_masked_input_looks_uniform_and_differs_from_the_true_update() -> None:
    # Given 5 workers with updates of 4096 coordinates, one dropping out before its masked input
    updates = {name: ({"w": torch.randn(DIM, generator=torch.Generator().manual_seed(i)) * 0.005}, 20 + i)
               for i, name in enumerate(["a", "b", "c", "d", "e"])}
    params = SecAggParams(num_workers=5, threshold=3, neighbours=2, quant_bits=16, clip=1.0, max_examples=100)
    received: dict[str, list[m.SecAggMessage]] = {}
    # When the round runs, recording every message the coordinator receives
    simulate(params=params, updates=updates, silent={m.Stage.MASKED_INPUT: ["c"]},
             to_coordinator=lambda name, message, _: received.setdefault(name, []).append(message))
    bits = params.ring_bits
    # Then only masked inputs carry vectors, one per surviving worker
    masked = {name: masking.unpack_ring(msg.masked)[:DIM + 1] for name, msgs in received.items() for msg in msgs
              if isinstance(msg, m.MaskedInputReply)}
    assert sorted(masked) == ["a", "b", "d", "e"]
    for name, vector in masked.items():
        update, examples = updates[name]
        true = masking.encode_input(update["w"].double(), num_examples=examples, params=params)
        # each differs from the worker's true quantized input almost everywhere
        assert float((vector != true).double().mean()) > 0.99
        # and passes the uniformity checks; the chi-square one fails the true input by far (its
        # top bits are all 0 or all 1: small positive or negative numbers)
        assert _bits_balanced(vector[:-1], bits), name
        assert _chi_square_top_bits(vector[:-1], bits) < 60, name
        assert _chi_square_top_bits(true[:-1], bits) > 1000


def test_the_coordinator_never_receives_both_shares_of_one_worker() -> None:
    # Given 6 workers, one gone after sharing (its key shares are needed), one gone at unmask
    updates = make_updates(6)
    params = SecAggParams(num_workers=6, threshold=4, neighbours=5)
    reveals: list[m.UnmaskReply] = []
    simulate(params=params, updates=updates, silent={m.Stage.MASKED_INPUT: ["w2"], m.Stage.UNMASK: ["w4"]},
             to_coordinator=lambda _, message, __: reveals.append(message) if isinstance(message, m.UnmaskReply) else None)
    # Then seed shares came for survivors only, key shares for the dropped worker only
    seeds = {owner for r in reveals for owner in r.seed_shares}
    keys = {owner for r in reveals for owner in r.key_shares}
    assert keys == {2} and 2 not in seeds and seeds == {0, 1, 3, 4, 5}
