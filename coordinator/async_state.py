"""What an asynchronous run keeps on disk so that a kill at any instant loses and repeats nothing.

Two files in --checkpoint-dir, each replaced atomically (coordinator.durable):

- `async.msgpack`, written once per aggregation: the weights, the version, the strategy's state,
  the counters, and the task ids that aggregation applied. Their replies are acknowledged only
  after this file is durable, so until then the broker holds them: a coordinator killed before
  the checkpoint gets them redelivered and applies them once; one killed after it recognises a
  redelivered reply by its task id (`applied`) and drops it.
- `tasks.msgpack`, written before every task is published and after every aggregation: the tasks
  not yet applied (sent, or answered and buffered), with the version each was sent. A resumed
  coordinator accepts the replies to these, and only these: a task id is unguessable, and a reply
  to a task the coordinator never recorded is dropped.

The buffer itself is not written: its replies are unacknowledged deliveries, which the broker
gives back to the next coordinator. Both files are read with the wire's hostile-input decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmq.coordinator.durable import replace_atomically
from fedmq.coordinator.strategies.state import decode_state, encode_state
from fedmq.protocol.codec import pack, tensors_from_wire, tensors_to_wire, unpack
from fedmq.protocol.errors import DecodeError, FedmqError
from fedmq.protocol.messages import Weights

STATE_FILE = "async.msgpack"
TASKS_FILE = "tasks.msgpack"


@dataclass(frozen=True, kw_only=True)
class Outstanding:
    """A task sent and not yet applied: who has it, the model version it was sent with, when."""

    task_id: str
    worker: str
    base: int
    sent_at: float  # time.time(), so that its deadline survives a restart


@dataclass(frozen=True, kw_only=True)
class AsyncCheckpoint:
    job: str
    task: str
    seed: int
    version: int
    weights: Weights
    strategy_state: dict[str, Any]
    applied: tuple[str, ...] = ()  # the task ids the last aggregation applied
    updates: int = 0  # updates applied since the run began
    seconds: float = 0.0  # the run's wall-clock seconds up to this version, across restarts
    counters: dict[str, int] = field(default_factory=dict)  # dropped, stale, failed ... since the start


def save_state(directory: Path, checkpoint: AsyncCheckpoint) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    c = checkpoint
    replace_atomically(directory / STATE_FILE, pack({
        "job": c.job, "task": c.task, "seed": c.seed, "version": c.version,
        "weights": tensors_to_wire(c.weights), "strategy": encode_state(c.strategy_state),
        "applied": list(c.applied), "updates": c.updates, "seconds": c.seconds, "counters": dict(c.counters)}))


def load_state(directory: Path) -> AsyncCheckpoint | None:
    """The checkpoint in `directory`, or None when there is none yet; FedmqError when unreadable."""
    path = directory / STATE_FILE
    if not path.exists():
        if (directory / "checkpoint.msgpack").exists():
            raise FedmqError(f"{directory} holds a synchronous run's checkpoint; resume it without --mode async "
                             "or use another --checkpoint-dir")
        return None
    try:
        obj = unpack(path.read_bytes())
        weights = {name: t.clone() for name, t in tensors_from_wire(obj["weights"]).items()}
        counters = obj["counters"]
        if not isinstance(counters, dict) or not all(isinstance(v, int) for v in counters.values()):
            raise DecodeError("counters must map names to integers")
        return AsyncCheckpoint(job=_text(obj["job"]), task=_text(obj["task"]), seed=_int(obj["seed"]),
                               version=_int(obj["version"]), weights=weights,
                               strategy_state=decode_state(obj["strategy"]),
                               applied=tuple(_text(t) for t in _list(obj["applied"])),
                               updates=_int(obj["updates"]), seconds=float(obj["seconds"]),
                               counters={str(k): int(v) for k, v in counters.items()})
    except (DecodeError, KeyError, TypeError, ValueError) as e:
        raise FedmqError(f"checkpoint {path} is unreadable ({e}); delete it to start over") from e


def save_tasks(directory: Path, tasks: list[Outstanding]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    replace_atomically(directory / TASKS_FILE, pack({"tasks": [
        [t.task_id, t.worker, t.base, t.sent_at] for t in tasks]}))


def load_tasks(directory: Path) -> list[Outstanding]:
    path = directory / TASKS_FILE
    if not path.exists():
        return []
    try:
        rows = _list(unpack(path.read_bytes())["tasks"])
        return [Outstanding(task_id=_text(row[0]), worker=_text(row[1]), base=_int(row[2]), sent_at=float(row[3]))
                for row in (_list(r) for r in rows)]
    except (DecodeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise FedmqError(f"task list {path} is unreadable ({e}); delete it to start over") from e


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: object) -> int:
    if type(value) is not int:
        raise DecodeError(f"expected an integer, got {type(value).__name__}")
    return value


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError(f"expected a list, got {type(value).__name__}")
    return value
