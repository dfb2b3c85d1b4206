"""A stage-by-stage driver of one secure-aggregation round in one process, for tests that need
to step in between stages (replays, forgeries, a misbehaving coordinator)."""

from __future__ import annotations

from collections.abc import Collection

import torch

from fedmq.coordinator.secagg.round import SecAggRound
from fedmq.coordinator.secagg.simulate import travel
from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.params import SecAggParams, default_threshold
from fedmq.worker.secagg.session import WorkerSession

Update = dict[str, torch.Tensor]


def make_updates(n: int, *, seed: int = 0, scale: float = 0.1, extra: int = 0) -> dict[str, tuple[Update, int]]:
    """n workers' updates (two tensors, 23 coordinates, and `extra` more in a third) of L2 norm
    well under clip 1, with example counts 10, 17, 24, ..."""
    generator = torch.Generator().manual_seed(seed)
    updates = {f"w{i}": ({"weight": torch.randn(4, 5, generator=generator) * scale,
                          "bias": torch.randn(3, generator=generator) * scale}, 10 + 7 * i)
               for i in range(n)}
    for update, _ in updates.values():
        if extra:
            update["extra"] = torch.randn(extra, generator=generator) * scale
    return updates


def fedavg(updates: dict[str, tuple[Update, int]], names: Collection[str]) -> Update:
    """Plain FedAvg of the named workers: the example-weighted mean, in float64."""
    total = sum(updates[name][1] for name in names)
    keys = next(iter(updates.values()))[0]
    return {key: sum(updates[name][0][key].double() * updates[name][1] for name in names) / total  # type: ignore[misc]
            for key in keys}


class Rig:
    def __init__(self, n: int, *, round_: int = 1, threshold: int | None = None, neighbours: int | None = None,
                 job: str = "job", seed: int = 0, extra: int = 0) -> None:
        self.params = SecAggParams(num_workers=n, threshold=threshold or default_threshold(n),
                                   neighbours=neighbours or n - 1)
        self.updates = make_updates(n, seed=seed, extra=extra)
        self.sessions = {name: WorkerSession(job=job, round_=round_, name=name, update=update, num_examples=k)
                         for name, (update, k) in self.updates.items()}
        layout = masking.layout_of(next(iter(self.updates.values()))[0])
        self.coordinator = SecAggRound(job=job, round_=round_, params=self.params,
                                       roster=list(self.updates), layout=layout)
        self.requests: dict[str, m.Request] = self.coordinator.start()

    def answer(self, *, skip: Collection[str] = ()) -> dict[str, m.Reply]:
        """Every addressed worker (but `skip`) handles its request; the coordinator receives
        each reply. The replies, as the coordinator decoded them."""
        replies: dict[str, m.Reply] = {}
        for name, request in self.requests.items():
            if name in skip:
                continue
            reply, _ = travel(self.sessions[name].handle(travel(request)[0]))
            self.coordinator.receive(reply, sender=name)
            replies[name] = reply
        return replies

    def advance(self) -> None:
        self.requests = self.coordinator.advance()

    def step(self, *, skip: Collection[str] = ()) -> dict[str, m.Reply]:
        replies = self.answer(skip=skip)
        self.advance()
        return replies
