"""Remote commands: a client's batch of operations for one worker, and the worker's answer.

A client (coordinator.Federation) drives objects that live on a worker: it sends a
CommandBatch to the worker's task queue, and the worker answers each batch from its client with
a CommandResult on the client's reply queue (the client is a job named by its client id).
Ops run in order; each names its result objects by ids the client chose, so later ops can use
results before they exist (pipelining). The worker stops a batch at its first failing op and
reports that op in `error`. Every batch carries the client's `token` for that worker, an
unguessable value (HMAC of a secret only the client holds, with the worker's name): the worker
binds the client's session to the first token (and AMQP user_id) it sees and refuses batches
that do not match, so a client id that other parties see is not the key to its objects. Operand
kinds and their wire form are in protocol.operands; op names are checked against the worker's
allowlist there, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fedmq.protocol.errors import DecodeError
from fedmq.protocol.names import NAME_PATTERN
from fedmq.protocol.operands import (
    Arg,
    Value,
    arg_from_wire,
    arg_to_wire,
    object_id,
    value_from_wire,
    value_to_wire,
)

COMMAND_KINDS = ("commands", "results")
OP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}(\.[A-Za-z_][A-Za-z0-9_]{0,47})?$")
KWARG_NAME = re.compile(r"^[a-z][A-Za-z0-9_]{0,63}$")  # never a leading underscore: no dunders
MAX_OUTS = 16
TOKEN = re.compile(r"^[0-9a-f]{32,128}$")  # hex: a session token is at least 128 bits
ERROR_KINDS = ("failed", "refused", "permission", "capacity")


@dataclass(frozen=True, eq=False)  # tensor operands have no truth value to compare
class Op:
    """One operation: `name` applied to `args`, its results stored under the ids in `outs`."""

    name: str
    args: tuple[Arg, ...] = ()
    kwargs: dict[str, Arg] = field(default_factory=dict)
    outs: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class CommandBatch:
    client: str  # the client's id: its session on the worker, and the job its answers go to
    seq: int  # the client's batch number for this worker, from 1
    ops: tuple[Op, ...]
    token: str  # the client's token for this worker (hex): the session's key with the client id


@dataclass(frozen=True)
class OpError:
    """The op that stopped a batch, and why."""

    index: int  # in its batch; -1 for a failure carried over (a move into this worker)
    op: str
    reason: str
    kind: str = "failed"  # failed | refused (not allowed) | permission (--allow-get) | capacity


@dataclass(frozen=True, eq=False)
class CommandResult:
    client: str
    seq: int
    worker: str
    values: dict[int, Value]  # op index in the batch -> what that op fetched (get, meta, info)
    error: OpError | None = None


Command = CommandBatch | CommandResult


def command_to_wire(message: Command) -> dict[str, Any]:
    """The message as a msgpack-ready map, without the envelope's version."""
    if isinstance(message, CommandBatch):
        return {"kind": "commands", "client": message.client, "seq": message.seq, "token": message.token,
                "ops": [_op_to_wire(op) for op in message.ops]}
    error = message.error
    return {"kind": "results", "client": message.client, "seq": message.seq, "worker": message.worker,
            "values": [[index, value_to_wire(value)] for index, value in message.values.items()],
            "error": None if error is None else {"index": error.index, "op": error.op,
                                                 "reason": error.reason, "kind": error.kind}}


def _op_to_wire(op: Op) -> list[Any]:
    return [op.name, [arg_to_wire(arg) for arg in op.args],
            {key: arg_to_wire(arg) for key, arg in op.kwargs.items()}, list(op.outs)]


def command_from_wire(obj: dict[str, Any]) -> Command:
    """The command message in a decoded, untrusted map; DecodeError naming the first fault."""
    client = _name(obj, "client")
    seq = obj.get("seq")
    if type(seq) is not int or seq < 0:
        raise DecodeError("field 'seq' is missing or not a non-negative integer")
    if obj.get("kind") == "commands":
        token = obj.get("token")
        if not isinstance(token, str) or not TOKEN.match(token):
            raise DecodeError("field 'token' must be the client's session token (32 to 128 hex digits)")
        if seq < 1:
            raise DecodeError("a batch's 'seq' counts from 1")
        ops = obj.get("ops")
        if not isinstance(ops, list):
            raise DecodeError("field 'ops' must be a list")
        return CommandBatch(client, seq, tuple(_op_from_wire(op) for op in ops), token)
    values = obj.get("values")
    if not isinstance(values, list):
        raise DecodeError("field 'values' must be a list of [index, value] pairs")
    return CommandResult(client, seq, _name(obj, "worker"), dict(_indexed(pair) for pair in values),
                         _error(obj.get("error")))


def _name(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise DecodeError(f"field {key!r} is missing or not a valid name")
    return value


def _op_from_wire(obj: object) -> Op:
    if not isinstance(obj, list) or len(obj) != 4:
        raise DecodeError("an op must be [name, args, kwargs, outs]")
    name, args, kwargs, outs = obj
    if not isinstance(name, str) or not OP_NAME.match(name):
        raise DecodeError(f"op name {str(name)[:60]!r} is not a valid op name")
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(outs, list):
        raise DecodeError(f"op {name!r}: args must be a list, kwargs a map, outs a list")
    bad = [key for key in kwargs if not KWARG_NAME.match(key)]
    if bad:
        raise DecodeError(f"op {name!r}: keyword {bad[0][:60]!r} is not allowed")
    if len(outs) > MAX_OUTS:
        raise DecodeError(f"op {name!r}: at most {MAX_OUTS} results")
    return Op(name, tuple(arg_from_wire(arg) for arg in args),
              {key: arg_from_wire(arg) for key, arg in kwargs.items()}, tuple(object_id(out) for out in outs))


def _indexed(pair: object) -> tuple[int, Value]:
    if not isinstance(pair, list) or len(pair) != 2 or type(pair[0]) is not int or pair[0] < 0:
        raise DecodeError("a fetched value must be [op index, value]")
    return pair[0], value_from_wire(pair[1])


def _error(obj: object) -> OpError | None:
    if obj is None:
        return None
    if not isinstance(obj, dict) or obj.keys() != {"index", "op", "reason", "kind"}:
        raise DecodeError("field 'error' must be null or a map of index, op, reason and kind")
    index, op, reason, kind = obj["index"], obj["op"], obj["reason"], obj["kind"]
    if type(index) is not int or index < -1 or not isinstance(op, str) or not isinstance(reason, str):
        raise DecodeError("an error needs an integer index, an op name and a reason")
    if kind not in ERROR_KINDS:
        raise DecodeError(f"error kind {str(kind)[:40]!r} is not one of {', '.join(ERROR_KINDS)}")
    return OpError(index, op, reason, kind)
