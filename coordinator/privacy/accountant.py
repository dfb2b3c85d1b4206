"""Privacy accounting for DP-FedAvg with Google's dp-accounting (RDP accountant).

Each round is one PoissonSampledDpEvent(q, GaussianDpEvent(z)): every worker is in the round
with probability q (the client-sampling rate, asked / workers) and the sum of clipped updates
gets Gaussian noise of z times the clip norm. Rounds compose; epsilon at delta after round t is
what the RDP accountant reports for the t rounds, and here it is that number: the per-round RDP
curve of each distinct (q, z) is computed once through dp_accounting's RdpAccountant (its
`_rdp`, the curve it composes) and the curves are summed, which is what the accountant does on
compose (to rounding: our test checks 1e-6 against composing with the library directly).

fedmq samples exactly K of N workers without replacement; accounting it as Poisson sampling with
q = K / N is the usual approximation (McMahan et al. 2018, TensorFlow Federated). An exact
fixed-size analysis (dp_accounting's SampledWithoutReplacementDpEvent, replace-one neighbours)
is not what this reports.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

ORDERS = tuple(RdpAccountant()._orders.tolist())  # the library's default orders


def round_event(q: float, z: float) -> PoissonSampledDpEvent:
    """One round of DP-FedAvg as a dp_accounting event."""
    return PoissonSampledDpEvent(q, GaussianDpEvent(z))


class Accountant:
    """The rounds composed so far, as (q, z) per round, and epsilon at `delta` for them."""

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self.rounds: list[tuple[float, float]] = []
        self._rdp = np.zeros(len(ORDERS), dtype=np.float64)

    def compose(self, q: float, z: float) -> None:
        """Add one round with sampling rate q and noise multiplier z."""
        self.rounds.append((q, z))
        self._rdp = self._rdp + _round_curve(q, z)

    def epsilon(self) -> float:
        """epsilon at delta after the rounds composed (0 before any; inf when one had z = 0)."""
        return _epsilon(self._rdp, self.delta)

    def epsilon_if(self, q: float, z: float) -> float:
        """epsilon at delta if one more round (q, z) were composed."""
        return _epsilon(self._rdp + _round_curve(q, z), self.delta)

    def state(self) -> dict[str, torch.Tensor]:
        """The ledger as two float64 tensors (exact), for a checkpoint; empty before round 1."""
        if not self.rounds:
            return {}
        q, z = zip(*self.rounds, strict=True)
        return {"q": torch.tensor(q, dtype=torch.float64), "z": torch.tensor(z, dtype=torch.float64)}

    def load(self, q: torch.Tensor, z: torch.Tensor) -> None:
        """Replay a checkpointed ledger, round by round: the same sums as an uninterrupted run."""
        if q.shape != z.shape or q.ndim != 1:
            raise ValueError("the checkpointed privacy ledger is malformed (q and z differ in shape)")
        self.rounds, self._rdp = [], np.zeros(len(ORDERS), dtype=np.float64)
        for q_i, z_i in zip(q.tolist(), z.tolist(), strict=True):
            if not (0 <= q_i <= 1 and z_i >= 0):
                raise ValueError(f"the checkpointed privacy ledger holds an impossible round (q={q_i}, z={z_i})")
            self.compose(q_i, z_i)


def epsilon_for(q: float, z: float, rounds: int, delta: float) -> float:
    """epsilon at delta after `rounds` identical rounds."""
    return _epsilon(_round_curve(q, z) * rounds, delta) if rounds else 0.0


@functools.lru_cache(maxsize=16)
def calibrate(q: float, rounds: int, delta: float, target: float) -> float:
    """The smallest noise multiplier (to 0.1%, rounded up) whose `rounds` rounds spend at most
    `target` epsilon; ValueError when even z = 1000 does not."""
    low, high = 0.05, 1000.0
    if epsilon_for(q, high, rounds, delta) > target:
        raise ValueError(f"--target-epsilon {target} cannot be met in {rounds} rounds at sampling rate "
                         f"{q:.3g} and delta {delta:g}: run fewer rounds or sample fewer workers")
    if epsilon_for(q, low, rounds, delta) <= target:
        return low
    while high / low > 1.001:  # bisection in log space: about 14 curves
        middle = math.sqrt(low * high)
        low, high = (low, middle) if epsilon_for(q, middle, rounds, delta) <= target else (middle, high)
    return high


@functools.lru_cache(maxsize=64)
def _round_curve(q: float, z: float) -> np.ndarray:
    """The RDP of one round at every order, as dp_accounting's accountant computes it."""
    accountant = RdpAccountant(list(ORDERS))
    with _quiet_absl():
        accountant.compose(round_event(q, z))
    curve: np.ndarray = accountant._rdp.copy()
    curve.setflags(write=False)  # cached: shared by every caller
    return curve


def _epsilon(rdp: np.ndarray, delta: float) -> float:
    if not np.any(rdp):
        return 0.0
    return float(compute_epsilon(np.array(ORDERS), rdp, delta)[0])


@contextmanager
def _quiet_absl() -> Iterator[None]:
    """dp_accounting logs a warning for each fractional order whose series does not converge
    and that it then leaves out (expected for large q): one line per order, per curve."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
