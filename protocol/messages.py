"""Messages between coordinator and workers, as frozen dataclasses with a msgpack form.

Every message is a msgpack map with a protocol version `v` and a `kind`. Updates are the delta
of a worker's weights over its round, which later stages clip, mask or compress.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import torch

from fedmq.protocol.codec import pack, tensors_from_wire, tensors_to_wire, unpack
from fedmq.protocol.commands import COMMAND_KINDS, CommandBatch, CommandResult, command_from_wire, command_to_wire
from fedmq.protocol.errors import DecodeError, UnsupportedVersion
from fedmq.protocol.secagg import messages as secagg
from fedmq.protocol.secagg import wire as secagg_wire
from fedmq.protocol.names import NAME_PATTERN as NAME_PATTERN  # re-exported: they lived here first
from fedmq.protocol.names import check_name as check_name

PROTOCOL_VERSION = 1

Weights = dict[str, torch.Tensor]


Option = float | int | str | bool


class ReplyStatus(str, Enum):
    """How a worker's answer went, as the wire spells it."""

    OK = "ok"
    ERROR = "error"

MAX_OPTIONS = 64  # entries of TrainConfig.options: a strategy's few settings, never data
MAX_OPTION_TEXT = 256  # characters of an option's name or text value


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How a worker trains for one round. `options` carries a strategy's per-worker settings
    (FedProx's `proximal_mu`, ...) to the task's `train` and the default trainer."""

    lr: float = 0.05
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    options: dict[str, Option] = field(default_factory=dict)


@dataclass(frozen=True, eq=False, kw_only=True)  # tensors have no truth value to compare
class TrainTask:
    job: str
    round: int
    task_id: str
    weights: Weights
    config: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True, eq=False, kw_only=True)  # tensors have no truth value to compare
class EvaluateTask:
    job: str
    round: int
    task_id: str
    weights: Weights


@dataclass(frozen=True, eq=False, kw_only=True)  # tensors have no truth value to compare
class Reply:
    """A worker's successful answer: its update (empty for evaluation) and what it measured."""

    job: str
    round: int
    task_id: str
    worker: str
    update: Weights
    num_examples: int
    metrics: dict[str, float]
    status: ClassVar[ReplyStatus] = ReplyStatus.OK  # written on the wire; the kind tells them apart


@dataclass(frozen=True, kw_only=True)
class ErrorReply:
    """A worker's report that it could not run a task, and why."""

    job: str
    round: int
    task_id: str
    worker: str
    reason: str
    status: ClassVar[ReplyStatus] = ReplyStatus.ERROR


Task = TrainTask | EvaluateTask
MAX_ASSIGNMENTS = 65536  # workers one shared task may address


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """One worker's part of a SharedTask: its own task id and, to train, its own config."""

    task_id: str
    config: TrainConfig | None = None  # None: evaluate


@dataclass(frozen=True, eq=False, kw_only=True)  # tensors have no truth value to compare
class SharedTask:
    """One model sent to several workers in one broker message (Broker.publish_shared_task).

    `share_id` names this copy of the model (unique per publish); `assignments` maps each
    addressed worker to its own task. A worker reads only its own entry (`for_worker`): the
    others are never decoded, so it cannot act on another worker's task id or config.
    """

    job: str
    round: int
    share_id: str
    weights: Weights
    assignments: dict[str, Assignment]
    # Decoded messages: each worker's entry still packed as it came off the wire, unpacked only
    # on request.
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def for_worker(self, worker: str) -> TrainTask | EvaluateTask | None:
        """This worker's own task, or None when the message does not address it; DecodeError
        when its entry is malformed."""
        own = self.assignments.get(worker)
        if own is None and worker in self.raw:
            own = _assignment(self.raw[worker], worker)
        if own is None:
            return None
        if own.config is None:
            return EvaluateTask(job=self.job, round=self.round, task_id=own.task_id, weights=self.weights)
        return TrainTask(job=self.job, round=self.round, task_id=own.task_id, weights=self.weights, config=own.config)


Message = (TrainTask | EvaluateTask | SharedTask | Reply | ErrorReply | CommandBatch | CommandResult
           | secagg.SecAggMessage)


@dataclass(frozen=True, kw_only=True)
class _Family:
    """Message kinds defined in their own module that share the envelope (the same version, the
    same decoder): a new family is a new entry in FAMILIES."""

    types: tuple[type, ...]
    kinds: Collection[str]
    to_wire: Callable[[Any], dict[str, Any]]
    from_wire: Callable[[dict[str, Any]], Any]


FAMILIES = (
    # Remote commands of the pointer API (protocol.commands).
    _Family(types=(CommandBatch, CommandResult), kinds=COMMAND_KINDS, to_wire=command_to_wire,
            from_wire=command_from_wire),
    # The stages of secure aggregation (protocol.secagg).
    _Family(types=(secagg.AdvertiseRequest, secagg.AdvertiseReply, secagg.ShareRequest, secagg.ShareReply,
                   secagg.MaskedInputRequest, secagg.MaskedInputReply, secagg.UnmaskRequest,
                   secagg.UnmaskReply),
            kinds=secagg_wire.SECAGG_KINDS, to_wire=secagg_wire.to_wire, from_wire=secagg_wire.from_wire),
)


def encode_message(message: Message) -> memoryview:
    for family in FAMILIES:
        if isinstance(message, family.types):
            return pack({"v": PROTOCOL_VERSION} | family.to_wire(message))
    if not isinstance(message, (TrainTask, EvaluateTask, SharedTask, Reply, ErrorReply)):
        raise TypeError(f"no wire form for a {type(message).__name__}: add its family to FAMILIES")
    if isinstance(message, SharedTask):
        return pack({"v": PROTOCOL_VERSION, "kind": "shared", "job": message.job, "round": message.round,
                     "task_id": message.share_id, "weights": tensors_to_wire(message.weights),
                     # Each entry packed on its own: the envelope's decode meets one bin per
                     # worker, and a worker unpacks only its own (SharedTask.for_worker).
                     "assignments": {worker: bytes(pack(_assignment_to_wire(own)))
                                     for worker, own in message.assignments.items()}})
    head: dict[str, Any] = {"v": PROTOCOL_VERSION, "job": message.job, "round": message.round,
                            "task_id": message.task_id}
    body: dict[str, Any]
    if isinstance(message, TrainTask):
        body = {"kind": "train", "weights": tensors_to_wire(message.weights),
                "config": _config_to_wire(message.config)}
    elif isinstance(message, EvaluateTask):
        body = {"kind": "evaluate", "weights": tensors_to_wire(message.weights)}
    elif isinstance(message, Reply):
        body = {"kind": "reply", "status": message.status.value, "worker": message.worker,
                "update": tensors_to_wire(message.update), "num_examples": message.num_examples,
                "metrics": {k: float(v) for k, v in message.metrics.items()}}
    else:
        body = {"kind": "error", "status": message.status.value, "worker": message.worker, "reason": message.reason}
    return pack(head | body)


def decode_message(data: bytes | memoryview | list[bytes]) -> Message:
    """The message in untrusted bytes; DecodeError (UnsupportedVersion for a foreign `v`)."""
    obj = unpack(data)
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {version!r} is not supported; this build speaks {PROTOCOL_VERSION}")
    kind = obj.get("kind")
    if not isinstance(kind, str):  # hostile maps put lists or maps here: unhashable, no kind at all
        raise DecodeError(f"field 'kind' is missing or not text: {str(kind)[:40]!r}")
    for family in FAMILIES:
        if kind in family.kinds:
            return family.from_wire(obj)  # type: ignore[no-any-return]
    fields = _Fields(obj)
    job, round_, task_id = fields.name("job"), fields.count("round"), fields.text("task_id")
    if kind == "train":
        return TrainTask(job=job, round=round_, task_id=task_id, weights=fields.tensors("weights"), config=_config(fields.mapping("config")))
    if kind == "evaluate":
        return EvaluateTask(job=job, round=round_, task_id=task_id, weights=fields.tensors("weights"))
    if kind == "shared":
        raw = fields.mapping("assignments")
        if len(raw) > MAX_ASSIGNMENTS:
            raise DecodeError(f"a shared task may address at most {MAX_ASSIGNMENTS} workers")
        return SharedTask(job=job, round=round_, share_id=task_id, weights=fields.tensors("weights"),
                          assignments={}, raw=raw)
    if kind == "reply":
        return Reply(job=job, round=round_, task_id=task_id, worker=fields.name("worker"), update=fields.tensors("update"),
                     num_examples=fields.count("num_examples"), metrics=fields.metrics("metrics"))
    if kind == "error":
        return ErrorReply(job=job, round=round_, task_id=task_id, worker=fields.name("worker"), reason=fields.text("reason"))
    raise DecodeError(f"unknown message kind {kind!r}")


def _config_to_wire(config: TrainConfig) -> dict[str, Any]:
    return {"lr": float(config.lr), "epochs": config.epochs, "batch_size": config.batch_size,
            "seed": config.seed, "options": dict(config.options)}


def _assignment_to_wire(own: Assignment) -> dict[str, Any]:
    wire: dict[str, Any] = {"task_id": own.task_id}
    if own.config is not None:
        wire["config"] = _config_to_wire(own.config)
    return wire


def _assignment(packed: object, worker: str) -> Assignment:
    if not isinstance(packed, bytes):
        raise DecodeError(f"the shared task's entry for worker {worker[:80]!r} is not a packed map")
    raw = unpack(packed)
    fields = _Fields(raw)
    config = None if raw.get("config") is None else _config(fields.mapping("config"))
    return Assignment(task_id=fields.text("task_id"), config=config)


def _config(obj: dict[str, Any]) -> TrainConfig:
    fields = _Fields(obj)
    config = TrainConfig(lr=fields.number("lr"), epochs=fields.count("epochs"),
                         batch_size=fields.count("batch_size"), seed=fields.count("seed"),
                         options=_options(obj.get("options", {})))
    if config.epochs < 1 or config.batch_size < 1:
        raise DecodeError("epochs and batch_size must be at least 1")
    return config


def _options(raw: object) -> dict[str, Option]:
    """A TrainConfig's options: a small map of short names to scalars; DecodeError otherwise."""
    if not isinstance(raw, dict) or len(raw) > MAX_OPTIONS:
        raise DecodeError(f"field 'options' must map at most {MAX_OPTIONS} names to scalars")
    for key, value in raw.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_OPTION_TEXT:
            raise DecodeError("an option's name must be text of 1 to 256 characters")
        if not isinstance(value, (bool, int, float, str)) or (isinstance(value, str) and len(value) > MAX_OPTION_TEXT):
            raise DecodeError(f"option {key!r} must be a number, a boolean or short text")
    return dict(raw)


class _Fields:
    """Typed access to a decoded map; a missing or mistyped field is a DecodeError."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self._obj = obj

    def _get(self, key: str, kind: type | tuple[type, ...]) -> Any:  # noqa: ANN401
        value = self._obj.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DecodeError(f"field {key!r} is missing or not {_kind_name(kind)}")
        return value

    def text(self, key: str) -> str:
        return self._get(key, str)  # type: ignore[no-any-return]

    def name(self, key: str) -> str:
        value = self.text(key)
        if not NAME_PATTERN.match(value):
            raise DecodeError(f"field {key!r} is not a valid name: {value[:80]!r}")
        return value

    def count(self, key: str) -> int:
        value = self._get(key, int)
        if value < 0:
            raise DecodeError(f"field {key!r} must not be negative")
        return value  # type: ignore[no-any-return]

    def number(self, key: str) -> float:
        return float(self._get(key, (int, float)))

    def mapping(self, key: str) -> dict[str, Any]:
        return self._get(key, dict)  # type: ignore[no-any-return]

    def tensors(self, key: str) -> Weights:
        return tensors_from_wire(self.mapping(key))

    def metrics(self, key: str) -> dict[str, float]:
        raw = self.mapping(key)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw.values()):
            raise DecodeError(f"field {key!r} must map names to numbers")
        return {k: float(v) for k, v in raw.items()}


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
