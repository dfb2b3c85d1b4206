"""worker.clipping and worker.noise: the bound, integer entries, the noise's spread, bad options."""

from __future__ import annotations

import math

import pytest
import torch

from fedmq.protocol.errors import TaskError
from fedmq.worker import noise
from fedmq.worker.clipping import CLIP_NORM, CLIPPED, NOISE_STD, REPORT_CLIPPED, l2_norm, privatize


def update(scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Two float entries whose joint norm is 5 * scale, and a BatchNorm-like counter."""
    return {"a": torch.tensor([3.0, 0.0]) * scale, "b": torch.tensor([[4.0]]) * scale,
            "num_batches_tracked": torch.tensor(7)}


def test_a_large_update_is_scaled_to_the_clip_norm_as_one_vector() -> None:
    # Given an update of norm 50 and C = 2
    # When it is privatized
    clipped, metrics = privatize(update(10.0), {"train_loss": 0.3, "train_seconds": 1.5}, {CLIP_NORM: 2.0})
    # Then its norm is C, the direction is kept, the counter is zeroed, and only train_seconds is reported
    assert l2_norm(clipped) == pytest.approx(2.0, rel=1e-6)
    assert clipped["a"].tolist() == pytest.approx([1.2, 0.0]) and clipped["b"].item() == pytest.approx(1.6)
    assert clipped["num_batches_tracked"].item() == 0 and clipped["num_batches_tracked"].dtype == torch.int64
    assert metrics == {"train_seconds": 1.5}


def test_a_small_update_is_left_as_it_is_and_reported_unclipped_when_asked() -> None:
    # Given an update of norm 5 below C = 10, and a strategy that asks for the clipped bit
    clipped, metrics = privatize(update(), {}, {CLIP_NORM: 10.0, REPORT_CLIPPED: True})
    # Then the floats are unchanged, and the bit says "not clipped" (never the norm itself)
    assert torch.equal(clipped["a"], update()["a"]) and torch.equal(clipped["b"], update()["b"])
    assert metrics == {CLIPPED: 0.0}
    _, above = privatize(update(), {}, {CLIP_NORM: 4.0, REPORT_CLIPPED: True})
    assert above == {CLIPPED: 1.0}


def test_without_clip_norm_nothing_changes() -> None:
    original = update()
    same, metrics = privatize(original, {"train_loss": 0.5}, {"proximal_mu": 0.1})
    assert same is original and metrics == {"train_loss": 0.5}


def test_noise_has_the_asked_spread_and_differs_per_update() -> None:
    # Given a zero update of 20,000 entries and noise_std 0.5
    zeros = {"w": torch.zeros(20_000)}
    first, _ = privatize(zeros, {}, {CLIP_NORM: 1.0, NOISE_STD: 0.5})
    second, _ = privatize(zeros, {}, {CLIP_NORM: 1.0, NOISE_STD: 0.5})
    # Then the sample std is 0.5 within 3% (about 6 standard errors), the mean near 0,
    # and two updates draw different noise (a fresh key each)
    assert float(first["w"].std()) == pytest.approx(0.5, rel=0.03)
    assert abs(float(first["w"].mean())) < 0.5 * 6 / math.sqrt(20_000)
    assert not torch.equal(first["w"], second["w"])


def test_keyed_noise_is_reproducible_standard_normal_and_label_dependent() -> None:
    key = bytes(range(32))
    a = noise.gaussian((100_001,), 2.0, key, "x")
    # Then the same key and label repeat, another label does not, and the moments fit N(0, 4)
    assert torch.equal(a, noise.gaussian((100_001,), 2.0, key, "x"))
    assert not torch.equal(a, noise.gaussian((100_001,), 2.0, key, "y"))
    assert float(a.std()) == pytest.approx(2.0, rel=0.02) and abs(float(a.mean())) < 0.05
    assert 0.66 < float((a.abs() < 2.0).double().mean()) < 0.70  # P(|Z| < 1) = 0.683
    with pytest.raises(ValueError, match="32 bytes"):
        noise.gaussian((3,), 1.0, b"short", "x")


@pytest.mark.parametrize("options", [{CLIP_NORM: 0.0}, {CLIP_NORM: -1.0}, {CLIP_NORM: "big"},
                                     {CLIP_NORM: float("nan")}, {CLIP_NORM: True},
                                     {CLIP_NORM: 1.0, NOISE_STD: -0.1}, {NOISE_STD: 0.1}])
def test_malformed_options_are_the_tasks_failure(options: dict[str, object]) -> None:
    with pytest.raises(TaskError):
        privatize(update(), {}, options)  # type: ignore[arg-type]
