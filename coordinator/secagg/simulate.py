"""Secure aggregation in one process: every worker's session and the coordinator's round, with
every message sent through its wire form, as over a broker. For tests, benchmarks and the cost
figures; the broker's version sends the same messages.

`silent` names, per stage, the workers that stop answering from that stage on (a dropout): a
worker silent at SHARE advertised its keys but sent no shares, one silent at UNMASK sent its
masked input but no shares for unmasking.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

import torch

from fedmq.coordinator.secagg.round import SecAggResult, SecAggRound
from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.params import SecAggParams
from fedmq.protocol.secagg.wire import decode, encode
from fedmq.worker.secagg.session import WorkerSession

Observer = Callable[[str, m.SecAggMessage, int], None]  # (worker, message, wire bytes)
M = TypeVar("M", bound=m.SecAggMessage)


def travel(message: M) -> tuple[M, int]:
    """The message as the other side decodes it, and its size on the wire."""
    data = bytes(encode(message))
    decoded = decode(data)
    if not isinstance(decoded, type(message)):
        raise TypeError(f"{type(message).__name__} decoded as {type(decoded).__name__}")
    return decoded, len(data)


def simulate(*, params: SecAggParams, updates: Mapping[str, tuple[Mapping[str, torch.Tensor], int]],
             silent: Mapping[m.Stage, Collection[str]] | None = None, job: str = "job", round_: int = 1,
             nonce: bytes | None = None, to_coordinator: Observer | None = None, to_worker: Observer | None = None) -> SecAggResult:
    """The unmasked example-weighted sum of `updates` {worker: (update, examples)}.

    `to_coordinator` and `to_worker` see every message each way, as decoded, with its size.
    """
    silent = silent or {}
    roster = list(updates)
    first = next(iter(updates.values()))[0]
    sessions = {name: WorkerSession(job=job, round_=round_, name=name, update=update, num_examples=n)
                for name, (update, n) in updates.items()}
    coordinator = SecAggRound(job=job, round_=round_, params=params, roster=roster,
                              layout=masking.layout_of(first), nonce=nonce)
    gone: set[str] = set()
    requests = coordinator.start()
    while not coordinator.done:
        assert coordinator.stage is not None
        gone |= set(silent.get(coordinator.stage, ()))
        for name, request in requests.items():
            if name in gone:
                continue
            delivered, size = travel(request)
            if to_worker:
                to_worker(name, delivered, size)
            reply, size = travel(sessions[name].handle(delivered))
            if to_coordinator:
                to_coordinator(name, reply, size)
            coordinator.receive(reply, sender=name)
        requests = coordinator.advance()
    assert coordinator.result is not None
    return coordinator.result
