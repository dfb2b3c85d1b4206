"""Presence: the heartbeat every worker and coordinator publishes for `fedmq status`.

A presence message says who is there (role, name), what it serves (task, shard), what it is
doing (state: idle, training, running, done) and how far it got: a worker the last job and round
it answered, a coordinator its job's round out of rounds. It carries no model data. Presence is
advisory and read only by `fedmq status`; the decoder still treats the bytes as hostile, since
anyone allowed to publish on the presence exchange can send anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

from fedmq.protocol.codec import pack, unpack
from fedmq.protocol.errors import DecodeError

KIND = "presence"
MAX_FIELD = 256  # characters of any text field: names, task, shard, state
MAX_VALUES = 64  # a beat is ten fields (21 values): anything much larger is not one


class Role(StrEnum):
    WORKER = "worker"
    COORDINATOR = "coordinator"


class WorkerState(StrEnum):
    """A worker's state in its beats."""

    IDLE = "idle"
    TRAINING = "training"


class JobState(StrEnum):
    """A coordinator's state in its beats: the last beat of a run is done or failed."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # the run raised (too few replies, a broker error, an interrupt): it will not go on


@dataclass(frozen=True)
class Presence:
    role: Role
    name: str  # worker id, or the coordinator's job
    state: WorkerState | JobState  # a worker's or a coordinator's, by role
    at: float  # the sender's wall clock (time.time()): shown as "last seen", never compared for order
    task: str = ""
    shard: str = ""
    job: str = ""  # worker: the job it last answered; coordinator: its job
    round: int = 0  # worker: the round it last answered; coordinator: the last round completed
    rounds: int = 0  # coordinator: the rounds it will run (0 for workers)


def encode_presence(presence: Presence) -> bytes:
    return bytes(pack({"kind": KIND, **asdict(presence)}))


def decode_presence(data: bytes) -> Presence:
    """The presence in `data`; DecodeError for anything else."""
    obj = unpack(data, max_values=MAX_VALUES)
    if obj.get("kind") != KIND:
        raise DecodeError(f"not a presence message (kind {str(obj.get('kind'))[:40]!r})")
    text = {key: _text(obj, key) for key in ("role", "name", "state", "task", "shard", "job")}
    if text["role"] not in Role.__members__.values() or not text["name"]:
        raise DecodeError("presence: role must be worker or coordinator, and name not empty")
    role = Role(text["role"])
    states = WorkerState if role is Role.WORKER else JobState
    if text["state"] not in states.__members__.values():
        raise DecodeError(f"presence: a {role}'s state must be one of {', '.join(states)}")
    at = obj.get("at")
    if not isinstance(at, (int, float)) or isinstance(at, bool) or at != at:
        raise DecodeError("presence: at must be a number")
    return Presence(role=role, name=text["name"], state=states(text["state"]), at=float(at),
                    task=text["task"], shard=text["shard"], job=text["job"],
                    round=_count(obj, "round"), rounds=_count(obj, "rounds"))


def _text(obj: dict[str, object], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise DecodeError(f"presence: {key} must be a string of at most {MAX_FIELD} characters")
    return value


def _count(obj: dict[str, object], key: str) -> int:
    value = obj.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 31:
        raise DecodeError(f"presence: {key} must be a small non-negative integer")
    return value
