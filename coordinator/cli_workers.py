"""`fedmq worker --id w{0..63} --shard {i}/64`: many logical workers from one command.

fedmq expands the braces itself, so the same command works in every shell (and in a Dockerfile's
exec form, where no shell runs at all). `{i}` (the worker's position, from 0), `{n}` (how many)
and `{id}` (its name) fill in the other options, so each worker gets its own shard and, with
credentials, its own credentials file: `--credentials creds/{id}.json`.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import re
from collections.abc import Callable
from pathlib import Path

from fedmq.broker.base import Broker
from fedmq.broker.memory import MemoryHub
from fedmq.broker.settings import BrokerSettings, open_broker
from fedmq.coordinator.cli_broker import broker_settings, check_worker_credentials
from fedmq.worker.host import Group
from fedmq.worker.settings import WorkerSettings

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
MAX_WORKERS = 10_000  # per process: a typo such as w{0..999999} is refused, not attempted
TEMPLATED = ("shard", "credentials")
# Without --connections: one connection (and dispatcher thread) per this many workers of one
# principal on RabbitMQ. A dispatcher idles while its reply's publish confirm comes back; with a
# few of them one trains while the others wait (64 digits workers on 2 cores: 535 ms a round on
# one connection, 322 on eight, 366 on sixteen). The memory broker has no such wait: one.
WORKERS_PER_CONNECTION = 8  # the options that may name {i}, {n} and {id}


def expand_ids(text: str) -> list[str]:
    """`w{0..3}` -> w0 w1 w2 w3; `{a,b}-{1..2}` -> a-1 a-2 b-1 b-2; ValueError when malformed."""
    pieces: list[list[str]] = []
    at = 0
    for match in _BRACE.finditer(text):
        pieces.append([text[at:match.start()]])
        pieces.append(_alternatives(match.group(1), text))
        at = match.end()
    pieces.append([text[at:]])
    count = 1
    for piece in pieces:
        count *= len(piece)
        if count > MAX_WORKERS:
            raise ValueError(f"--id {text!r} names more than {MAX_WORKERS} workers: run several processes")
    names = ["".join(parts) for parts in itertools.product(*pieces)]
    if any(c in name for name in names for c in "{}"):
        raise ValueError(f"--id {text!r} has an unmatched brace: write w{{0..63}} or {{alice,bob}}")
    if len(set(names)) != len(names):
        raise ValueError(f"--id {text!r} names a worker twice")
    return names


def _alternatives(inside: str, text: str) -> list[str]:
    span = _RANGE.match(inside)
    if span is not None:
        first, last = int(span.group(1)), int(span.group(2))
        if abs(last - first) >= MAX_WORKERS:
            raise ValueError(f"--id {text!r} names more than {MAX_WORKERS} workers: run several processes")
        step = 1 if last >= first else -1
        # Like bash: {00..15} pads every number to the width written.
        padded = any(len(end.lstrip("-")) > 1 and end.lstrip("-").startswith("0") for end in span.groups())
        width = max(len(span.group(1)), len(span.group(2))) if padded else 0
        return [str(k).zfill(width) for k in range(first, last + step, step)]
    if "," in inside:
        return inside.split(",")
    raise ValueError(f"--id {text!r}: {{{inside}}} is neither a range (0..63) nor a list (a,b)")


def worker_args(args: argparse.Namespace) -> list[argparse.Namespace]:
    """One namespace per worker named by --id, with {i}, {n} and {id} filled in its options."""
    names = expand_ids(args.id)
    if len(names) > 1 and "{i}" not in args.shard and "{id}" not in args.shard:
        raise ValueError(f"--id names {len(names)} workers but --shard {args.shard!r} gives them all "
                         f"the same data: write --shard {{i}}/{len(names)}")
    out = []
    for index, name in enumerate(names):
        values = {key: _fill(getattr(args, key), index, len(names), name) for key in TEMPLATED}
        out.append(argparse.Namespace(**{**vars(args), **values, "id": name}))
    return out


def _fill(value: object, index: int, count: int, name: str) -> object:
    if isinstance(value, Path):  # --credentials
        return Path(str(_fill(str(value), index, count, name)))
    if not isinstance(value, str):
        return value  # an option left out (None)
    return value.replace("{i}", str(index)).replace("{n}", str(count)).replace("{id}", name)


def _auto_connections(settings: BrokerSettings, members: int) -> int:
    return 1 if settings.url.startswith("memory:") else -(-members // WORKERS_PER_CONNECTION)


def connection_groups(each: list[argparse.Namespace], build: Callable[[argparse.Namespace], WorkerSettings],
                      connections: int | None = None) -> list[Group]:
    """Workers grouped by connection: one principal (broker settings) each, split `connections`
    ways (None: one connection per WORKERS_PER_CONNECTION on RabbitMQ, one on the memory broker).

    RabbitMQ checks every publish's user_id against its connection's user, so workers with
    credentials of their own never share a connection; without credentials they can.
    """
    if connections is not None and connections < 1:
        raise ValueError(f"--connections must be at least 1, got {connections}")
    by_settings: dict[BrokerSettings, list[argparse.Namespace]] = {}
    for args in each:
        check_worker_credentials(args)  # a worker's user must be its --id
        by_settings.setdefault(broker_settings(args), []).append(args)
    hub = MemoryHub()  # memory:// workers of one process share one in-process broker
    groups: list[Group] = []
    for settings, members in by_settings.items():
        share = min(connections or _auto_connections(settings, len(members)), len(members))
        for k in range(share):
            part = members[k::share]
            connect: Callable[[], Broker] = functools.partial(open_broker, settings, hub)
            label = f"{part[0].id}..{part[-1].id} ({len(part)})" if len(part) > 1 else part[0].id
            groups.append(Group(connect=connect, workers=tuple(build(a) for a in part), label=label))
    return groups
