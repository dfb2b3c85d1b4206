"""Checkpoints: the global weights, the round and the strategy's state, in fedmq's own codec.

Written to a temporary file, fsynced and renamed (coordinator.durable), so a coordinator killed
mid-write leaves the previous checkpoint intact. Read back with the same hostile-input decoder as
the wire (no pickle). A directory holding only an asynchronous run's state (coordinator.async_state)
is refused, not read as empty: a `--resume` would otherwise start over at round 1 without a word
and overwrite nothing the user meant to keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmq.coordinator.async_state import STATE_FILE as ASYNC_STATE_FILE
from fedmq.coordinator.durable import replace_atomically
from fedmq.coordinator.strategies.state import decode_state, encode_state
from fedmq.protocol.codec import pack, tensors_from_wire, tensors_to_wire, unpack
from fedmq.protocol.errors import DecodeError, FedmqError
from fedmq.protocol.messages import Weights

FILE_NAME = "checkpoint.msgpack"


@dataclass(frozen=True)
class Checkpoint:
    job: str
    task: str
    seed: int
    round: int  # the last round completed
    weights: Weights
    strategy_state: dict[str, Any]


def save_checkpoint(directory: Path, checkpoint: Checkpoint) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    data = pack({"job": checkpoint.job, "task": checkpoint.task, "seed": checkpoint.seed,
                 "round": checkpoint.round, "weights": tensors_to_wire(checkpoint.weights),
                 "strategy": encode_state(checkpoint.strategy_state)})
    replace_atomically(path, data)
    return path


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The checkpoint in `directory`, or None when there is none yet; FedmqError when it is
    unreadable or the directory holds an asynchronous run's checkpoint instead."""
    path = directory / FILE_NAME
    if not path.exists():
        if (directory / ASYNC_STATE_FILE).exists():
            raise FedmqError(f"{directory} holds an asynchronous run's checkpoint ({ASYNC_STATE_FILE}); "
                             "resume it with --mode async or use another --checkpoint-dir")
        return None
    try:
        obj = unpack(path.read_bytes())
        weights = {name: t.clone() for name, t in tensors_from_wire(obj["weights"]).items()}
        return Checkpoint(str(obj["job"]), str(obj["task"]), int(obj["seed"]), int(obj["round"]),
                          weights, decode_state(obj["strategy"]))
    except (DecodeError, KeyError, TypeError, ValueError) as e:
        raise FedmqError(f"checkpoint {path} is unreadable ({e}); delete it to start over") from e
