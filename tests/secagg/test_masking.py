"""Quantization into the ring, masks, and the bounds that keep the sum from wrapping."""

from __future__ import annotations

import pytest
import torch

from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg.errors import SecAggError
from fedmq.protocol.secagg.params import SecAggParams


def _params(**changes: object) -> SecAggParams:
    settings: dict[str, object] = {"num_workers": 4, "threshold": 3, "neighbours": 3, "quant_bits": 12, "clip": 2.0,
                                   "max_examples": 100}
    settings.update(changes)
    return SecAggParams(**settings)  # type: ignore[arg-type]


def test_one_input_decodes_to_its_weighted_update_within_half_a_step() -> None:
    # Given an update inside the clip and 7 examples
    params = _params()
    vector = torch.linspace(-1.0, 1.0, 50, dtype=torch.float64) * 0.2
    # When it is encoded and read back / Then each coordinate is within 7 half-steps of 7 * x
    total, examples = masking.decode_sum(masking.encode_input(vector, num_examples=7, params=params), params=params)
    assert examples == 7
    assert float((total - 7 * vector).abs().max()) <= 7 * masking.quant_step(params) / 2 + 1e-12


def test_masks_added_then_removed_leave_the_input_exactly() -> None:
    params = _params()
    bits = params.ring_bits
    plain = masking.encode_input(torch.full((10,), -0.3, dtype=torch.float64), num_examples=3, params=params)
    masked = plain.clone()
    masking.add_mask_(masked, b"k" * 32, bits=bits, sign=1)
    masking.add_mask_(masked, b"p" * 32, bits=bits, sign=-1)
    assert not torch.equal(masked, plain)
    assert int(masked.min()) >= 0 and int(masked.max()) <= masking.ring_mask(bits)
    masking.add_mask_(masked, b"p" * 32, bits=bits, sign=1)
    masking.add_mask_(masked, b"k" * 32, bits=bits, sign=-1)
    assert torch.equal(masked, plain)


def test_the_worst_case_sum_does_not_wrap() -> None:
    # Given every worker at the example cap, with every coordinate at +C or -C
    params = _params()
    inputs = [masking.encode_input(torch.tensor([5.0, -5.0], dtype=torch.float64), num_examples=params.max_examples,
                                   params=params) for _ in range(params.num_workers)]
    # When summed in the ring and decoded / Then the sums are exactly +-N * cap * C
    total, examples = masking.decode_sum(masking.ring_sum(inputs, params.ring_bits), params=params)
    extreme = params.num_workers * params.max_examples * params.clip
    assert examples == params.num_workers * params.max_examples
    # The clip scales (5, -5) to norm 2: each coordinate is C / sqrt(2)
    assert torch.allclose(total, torch.tensor([extreme, -extreme], dtype=torch.float64) / 2**0.5,
                          atol=params.num_workers * params.max_examples * masking.quant_step(params))


def test_an_update_longer_than_the_clip_is_scaled_to_it() -> None:
    vector = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert float(torch.linalg.vector_norm(masking.clip_l2(vector, 1.0))) == pytest.approx(1.0)
    assert torch.equal(masking.clip_l2(vector, 10.0), vector)


def test_nan_and_out_of_range_example_counts_are_refused() -> None:
    params = _params()
    with pytest.raises(SecAggError, match="NaN"):
        masking.encode_input(torch.tensor([float("nan")]), num_examples=1, params=params)
    with pytest.raises(SecAggError, match="examples"):
        masking.encode_input(torch.zeros(2), num_examples=101, params=params)


def test_a_ring_too_wide_for_int64_is_refused_with_advice() -> None:
    with pytest.raises(ValueError, match="lower --quant-bits"):
        _params(quant_bits=32, max_examples=1 << 40)


def test_ring_bits_follow_workers_examples_and_bits() -> None:
    # 4 workers x 100 examples = 400 < 2**9; 12 bits: |sum| < 2**(11 + 9) = 2**(R - 1)
    assert _params().ring_bits == 21


def test_packed_ring_elements_take_r_bits_each_and_round_trip() -> None:
    # Given 11 elements of a 37-bit ring, the extremes among them
    ring = torch.tensor([0, 1, (1 << 37) - 1, 123456789012] + list(range(7)), dtype=torch.int64)
    packed = masking.pack_ring(ring, 37)
    # Then they travel as 37 planes of 2 bytes (11 bits padded to 16) and come back exactly
    assert packed.shape == (37, 2) and packed.dtype is torch.uint8
    unpacked = masking.unpack_ring(packed)
    assert torch.equal(unpacked[:11], ring) and not unpacked[11:].any()


def test_layout_round_trip_keeps_names_shapes_and_dtypes() -> None:
    update = {"w": torch.ones(2, 3), "steps": torch.tensor([4], dtype=torch.int64)}
    layout = masking.layout_of(update)
    back = masking.unflatten(masking.flatten(update, layout), layout)
    assert {n: (t.shape, t.dtype) for n, t in back.items()} == {n: (t.shape, t.dtype) for n, t in update.items()}
    assert masking.vector_length(layout) == 8
    with pytest.raises(SecAggError, match="layout"):
        masking.flatten({"w": torch.ones(3, 2)}, layout)


def test_packing_round_trips_across_chunk_boundaries() -> None:
    # Given more elements than one packing chunk holds, not a multiple of 8
    ring = masking.expand_mask(b"c" * 32, 3 * (1 << 16) + 5, 41)
    # Then packing and unpacking gives every element back, and zero padding
    unpacked = masking.unpack_ring(masking.pack_ring(ring, 41))
    assert torch.equal(unpacked[:ring.numel()], ring) and not unpacked[ring.numel():].any()
