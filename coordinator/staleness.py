"""Staleness weights for asynchronous aggregation: how much an update from an older model counts.

An update trained from model version b and applied at version v has staleness s = v - b >= 0.
Its delta is scaled by w(s) before it joins the buffer (Xie et al. 2019, "Asynchronous Federated
Optimization", section 5.2; Nguyen et al. 2022, FedBuff, use the polynomial form):

- constant:       w(s) = 1
- polynomial:A:   w(s) = (1 + s) ** -A            (A > 0; the default A = 0.5 is 1/sqrt(1+s))
- hinge:A,B:      w(s) = 1 if s <= B else 1 / (A (s - B) + 1)   (A > 0, B >= 0)

Pure functions of s, parsed once from `--staleness`; `scaled` applies a weight to an update and
`step_toward` takes the server's step toward an aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from fedmq.protocol.messages import Reply, Weights
from fedmq.protocol.stream import StreamedReply


class StalenessKind(Enum):
    CONSTANT = "constant"
    POLYNOMIAL = "polynomial"
    HINGE = "hinge"


@dataclass(frozen=True, kw_only=True)
class Staleness:
    kind: StalenessKind = StalenessKind.POLYNOMIAL
    a: float = 0.5
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.kind is not StalenessKind.CONSTANT and not self.a > 0:
            raise ValueError(f"--staleness {self.kind.value}: A must be positive, got {self.a}")
        if not self.b >= 0:
            raise ValueError(f"--staleness hinge: B must not be negative, got {self.b}")

    def weight(self, staleness: int) -> float:
        """w(s) for an update `staleness` versions old (s >= 0)."""
        if staleness < 0:
            raise ValueError(f"staleness cannot be negative, got {staleness}")
        return _WEIGHTS[self.kind](self, staleness)

    def __str__(self) -> str:
        if self.kind is StalenessKind.CONSTANT:
            return "constant"
        if self.kind is StalenessKind.POLYNOMIAL:
            return f"polynomial:{self.a:g}"
        return f"hinge:{self.a:g},{self.b:g}"


def _constant(rule: Staleness, s: int) -> float:
    return 1.0


def _polynomial(rule: Staleness, s: int) -> float:
    return float((1.0 + s) ** -rule.a)


def _hinge(rule: Staleness, s: int) -> float:
    return 1.0 if s <= rule.b else 1.0 / (rule.a * (s - rule.b) + 1.0)


_WEIGHTS = {StalenessKind.CONSTANT: _constant, StalenessKind.POLYNOMIAL: _polynomial,
            StalenessKind.HINGE: _hinge}
USAGE = "--staleness takes constant, polynomial:A (e.g. polynomial:0.5) or hinge:A,B (e.g. hinge:10,4)"


def parse_staleness(text: str) -> Staleness:
    """The rule `text` names; ValueError saying what is accepted."""
    name, _, args = text.strip().partition(":")
    try:
        kind = StalenessKind(name.strip().lower())
    except ValueError:
        raise ValueError(f"{USAGE}; got {text!r}") from None
    try:
        numbers = [float(part) for part in args.split(",")] if args.strip() else []
    except ValueError:
        raise ValueError(f"{USAGE}; got {text!r}") from None
    expected = {StalenessKind.CONSTANT: (0,), StalenessKind.POLYNOMIAL: (0, 1), StalenessKind.HINGE: (2,)}[kind]
    if len(numbers) not in expected:
        raise ValueError(f"{USAGE}; got {text!r}")
    if kind is StalenessKind.HINGE:
        return Staleness(kind=kind, a=numbers[0], b=numbers[1])
    return Staleness(kind=kind, a=numbers[0]) if numbers else Staleness(kind=kind)


def scaled(reply: Reply, weight: float) -> Reply:
    """The reply with its floating entries times `weight` (counters such as BatchNorm's stay)."""
    if weight == 1.0:
        return reply
    return replace(reply, update={k: v * weight if v.is_floating_point() else v for k, v in reply.update.items()})


def scaled_streamed(reply: StreamedReply, weight: float) -> StreamedReply:
    """`scaled` for a reply whose update is still in its parts: the same values, bit for bit."""
    return reply if weight == 1.0 else replace(reply, update=reply.update.scaled(weight))


def step_toward(old: Weights, aggregate: Weights, step: float) -> Weights:
    """old + step * (aggregate - old) on floating entries; the aggregate elsewhere."""
    if step == 1.0:
        return aggregate
    return {k: old[k] + (t - old[k]) * step if t.is_floating_point() else t for k, t in aggregate.items()}
