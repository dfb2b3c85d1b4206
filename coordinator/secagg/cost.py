"""Bytes per worker per round of secure aggregation, against the plain update it replaces.

Sizes are measured, not estimated: each stage's messages are built at their real sizes (keys,
ciphertexts, shares and the masked vector, with placeholder contents) and encoded in their wire
form; the plain update is a Reply of the same number of float32 parameters. The model sent to
the workers is the same either way and is left out.

    python -m fedmq.coordinator.secagg.cost --params 1048576 --workers 1024 --neighbours 1023 --max-examples 1

Bonawitz et al. (CCS 2017) report a 1.73x expansion for 2**10 users and 2**20-dimensional
vectors of 16-bit values, against sending those values in the clear: compare with `vs_bits`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from fedmq.protocol.messages import Reply, encode_message
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg import wire
from fedmq.protocol.secagg.graph import degree
from fedmq.protocol.secagg.masking import packed_shape
from fedmq.protocol.secagg.params import SecAggParams, default_neighbours, default_threshold


@dataclass(frozen=True, kw_only=True)
class Cost:
    """Bytes one worker receives (`down`) and sends (`up`) per stage, and the plain update's."""

    down: dict[m.Stage, int]
    up: dict[m.Stage, int]
    plain_update: int  # a Reply carrying the update as float32
    plain_bits: int  # the update's B-bit values, packed, with no framing

    @property
    def total(self) -> int:
        return sum(self.down.values()) + sum(self.up.values())

    @property
    def vs_plain(self) -> float:
        """Secure aggregation's traffic over the plain float32 update's."""
        return self.total / self.plain_update

    @property
    def vs_bits(self) -> float:
        """Over the B-bit inputs sent in the clear (Bonawitz et al.'s baseline)."""
        return self.total / self.plain_bits


def wire_cost(*, num_params: int, params: SecAggParams, name_length: int = 12) -> Cost:
    """Per-worker bytes of one round in which every sampled worker survives."""
    n = params.num_workers
    k = degree(n, params.neighbours)
    job, rnd = "j" * 16, 1 << 20
    names = tuple(f"w{i:0{name_length - 1}d}" for i in range(n))
    keys = m.PublicKeys(c_public=bytes(32), s_public=bytes(32))
    sealed = dict.fromkeys(range(k), bytes(m.SEALED_BYTES))
    shares = dict.fromkeys(range(k + 1), 2**256)
    masked = torch.zeros(packed_shape(num_params + 1, params.ring_bits), dtype=torch.uint8)
    down: dict[m.Stage, m.SecAggMessage] = {m.Stage.ADVERTISE: m.AdvertiseRequest(job=job, round=rnd, params=params, nonce=bytes(32), roster=names),
            m.Stage.SHARE: m.ShareRequest(job=job, round=rnd, keys=dict.fromkeys(range(n), keys)),
            m.Stage.MASKED_INPUT: m.MaskedInputRequest(job=job, round=rnd, recipient=n - 1,
                                                       shared=tuple(range(n)), sealed=sealed),
            m.Stage.UNMASK: m.UnmaskRequest(job=job, round=rnd, survivors=tuple(range(n)), dropped=())}
    up: dict[m.Stage, m.SecAggMessage] = {m.Stage.ADVERTISE: m.AdvertiseReply(job=job, round=rnd, sender=n - 1, keys=keys),
          m.Stage.SHARE: m.ShareReply(job=job, round=rnd, sender=n - 1, sealed=sealed),
          m.Stage.MASKED_INPUT: m.MaskedInputReply(job=job, round=rnd, sender=n - 1, masked=masked),
          m.Stage.UNMASK: m.UnmaskReply(job=job, round=rnd, sender=n - 1, seed_shares=shares, key_shares={})}
    plain = Reply(job=job, round=rnd, task_id="t" * 32, worker=names[-1],
                  update={"update": torch.zeros(num_params)}, num_examples=1, metrics={})
    return Cost(down={s: len(wire.encode(msg)) for s, msg in down.items()},
                up={s: len(wire.encode(msg)) for s, msg in up.items()},
                plain_update=len(encode_message(plain)), plain_bits=-(-num_params * params.quant_bits // 8))


def report(cost: Cost, *, num_params: int, params: SecAggParams) -> str:
    lines = [f"N={params.num_workers} K={params.neighbours} (degree {degree(params.num_workers, params.neighbours)}) "
             f"T={params.threshold} B={params.quant_bits} R={params.ring_bits} params={num_params}",
             f"{'stage':<14}{'down':>14}{'up':>14}"]
    lines += [f"{stage.name:<14}{cost.down[stage]:>14,}{cost.up[stage]:>14,}" for stage in m.Stage]
    lines += [f"per worker per round: {cost.total:,} bytes; plain float32 update {cost.plain_update:,} bytes "
              f"({cost.vs_plain:.3f}x); {params.quant_bits}-bit values in the clear {cost.plain_bits:,} bytes "
              f"({cost.vs_bits:.3f}x; Bonawitz et al. report 1.73x at 2^10 users, 2^20 values)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--params", type=int, default=1 << 20, help="model parameters (default 2^20)")
    parser.add_argument("--workers", type=int, default=16, help="N, sampled workers")
    parser.add_argument("--neighbours", type=int, help="K (default: N-1 up to 16 workers, else 4 log2 N)")
    parser.add_argument("--threshold", type=int, help="T (default: a majority)")
    parser.add_argument("--quant-bits", type=int, default=16)
    parser.add_argument("--max-examples", type=int, default=1 << 16)
    args = parser.parse_args(argv)
    n = args.workers
    params = SecAggParams(num_workers=n, threshold=args.threshold or default_threshold(n),
                          neighbours=args.neighbours or default_neighbours(n), quant_bits=args.quant_bits,
                          max_examples=args.max_examples)
    print(report(wire_cost(num_params=args.params, params=params), num_params=args.params, params=params))


if __name__ == "__main__":
    main()
