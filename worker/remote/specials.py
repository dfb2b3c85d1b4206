"""The special ops: objects that are not plain tensor math (see allowlist.SPECIAL).

Each takes the context, the client's session and the op, and returns a fetched value, a move's
message, or None. Operands are checked here, where their meaning is known: a wrong kind of
operand or an unknown keyword is an OpFailure naming the op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fedmq.protocol.codec import DTYPES
from fedmq.protocol.commands import Op
from fedmq.protocol.operands import ModuleSpec, Plain, Ref, TensorMeta, Value
from fedmq.worker.remote import aliases, layers, sizing
from fedmq.worker.remote.allowlist import OPTIMIZERS
from fedmq.worker.remote.context import Context, Outgoing, unseen_failure
from fedmq.worker.remote.store import Entry, OpFailure, Session, Taint, derive, optimizer_state_bound, size_of, structure_bytes
from fedmq.worker.task import as_pair

Special = Callable[[Context, Session, Op], "Value | Outgoing | None"]
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_TAINTS = {taint.name.lower(): taint for taint in Taint}


def _check(op: Op, nargs: int, nouts: int, keywords: tuple[str, ...] = ()) -> None:
    if len(op.args) != nargs or len(op.outs) != nouts:
        raise OpFailure("failed", f"{op.name} takes {nargs} operand(s) and {nouts} result id(s)")
    unknown = sorted(op.kwargs.keys() - set(keywords))
    if unknown:
        raise OpFailure("failed", f"{op.name} takes no keyword {unknown[0]!r}")


def _flag(op: Op, key: str, default: bool) -> bool:
    value = op.kwargs.get(key, default)
    if not isinstance(value, bool):
        raise OpFailure("failed", f"{op.name}: {key} must be true or false")
    return value


def _taint(op: Op) -> Taint:
    """The taint a sent object declares: public unless a worker moved it here from its own store."""
    name = op.kwargs.get("taint", "public")
    if not isinstance(name, str) or name not in _TAINTS:
        raise OpFailure("failed", f"{op.name}: taint must be one of {', '.join(_TAINTS)}")
    return _TAINTS[name]


def _put(context: Context, session: Session, op: Op, value: Any, taint: Taint,  # noqa: ANN401
         structure: Plain = None) -> None:
    context.store.put(session, op.outs[0], Entry(value, taint, size_of(value), structure), op.name)


def _ref_id(arg: object) -> object:
    return arg.id if isinstance(arg, Ref) else arg


def send(context: Context, session: Session, op: Op) -> None:
    _check(op, 1, 1, ("requires_grad", "taint"))
    (tensor,) = op.args
    if not isinstance(tensor, torch.Tensor):
        raise OpFailure("failed", "send takes a tensor")
    context.store.check_room(1, size_of(tensor), op.name)
    value = tensor.to(context.device, copy=True)  # owned memory, not a view of the message
    if _flag(op, "requires_grad", False):
        value.requires_grad_(True)
    _put(context, session, op, value, _taint(op))


def module(context: Context, session: Session, op: Op) -> None:
    _check(op, 1, 1, ("taint",))
    (spec,) = op.args
    if not isinstance(spec, ModuleSpec):
        raise OpFailure("failed", "module takes a layer structure and its weights")
    # Layers cost memory even without parameters: counted on the structure, before building.
    context.store.check_room(1, sum(size_of(t) for t in spec.weights.values()) + structure_bytes(spec.layers),
                             op.name)
    try:
        built = layers.build(spec.layers, spec.weights, context.device)
    except (ValueError, TypeError) as e:  # TypeError: a constructor that refused its arguments
        raise OpFailure("failed", f"module: {e}") from e
    _put(context, session, op, built, _taint(op), spec.layers)


def task_model(context: Context, session: Session, op: Op) -> None:
    _check(op, 1, 1)
    (weights,) = op.args
    if not isinstance(weights, dict):
        raise OpFailure("failed", "task_model takes the model's weights")
    context.store.check_room(1, sum(size_of(t) for t in weights.values()), op.name)
    model = context.task.build_model()
    try:
        model.load_state_dict(weights)  # copies into the task's own parameters, in its dtypes
    except RuntimeError as e:
        raise OpFailure("failed", f"the weights do not fit task {context.task.name!r}: {e}") from e
    _put(context, session, op, model.to(context.device), Taint.PUBLIC)


def dataset(context: Context, session: Session, op: Op) -> None:
    _check(op, 0, 2)
    pair = as_pair(context.shard)
    if pair is None:
        raise OpFailure("failed", f"task {context.task.name!r} holds no (inputs, targets) pair of tensors here")
    context.store.check_room(2, 0, op.name)
    for out, tensor in zip(op.outs, pair, strict=True):  # the shard itself, no copy: nothing writes in place
        context.store.put(session, out, Entry(tensor, Taint.PRIVATE, 0), op.name)


def forward(context: Context, session: Session, op: Op) -> None:
    if not op.args or len(op.outs) != 1:
        raise OpFailure("failed", "forward takes a module, its inputs and one result id")
    entry, net = context.entry(session, op.args[0], nn.Module)
    taints = [entry.taint]
    used: list[tuple[torch.Tensor, Taint]] = []
    args = [context.resolve(session, arg, taints, used) for arg in op.args[1:]]
    kwargs = {key: context.resolve(session, arg, taints, used) for key, arg in op.kwargs.items()}
    size = sizing.size_forward(net, args, kwargs)
    context.store.check_room(0, size.nbytes, op.name)  # before it runs
    taint = derive(max(taints))
    # A forward may write into the module (running statistics, Embedding's max_norm renormalising
    # the rows it touched, in eval mode too): whatever its inputs were, its state may now hold.
    entry.taint = max(entry.taint, taint)
    aliases.spread(session, aliases.storages(net), entry.taint)
    failed = unseen_failure(session, op)
    try:
        result = net(*args, **kwargs)
    except Exception as e:  # an Embedding meeting a private index out of range, say
        made = context.stand_ins(e, taints, size, [*net.parameters(), *(t for t, _ in used)])
        result = made[0] if len(made) == 1 else tuple(made)
        failed = f"forward failed ({type(e).__name__})"
    else:
        context.check_predicted(op.name, size, list(sizing.tensors_in(result)), taints)
    if not isinstance(result, torch.Tensor):
        raise OpFailure("failed", f"forward gave a {type(result).__name__}; only tensors are kept")
    weights = [(t, entry.taint) for t in [*net.parameters(), *net.buffers()]]
    kept = aliases.at_least(taint, result, [*used, *weights])  # Identity: its input
    context.store.put(session, op.outs[0], Entry(result, kept, size_of(result), failed=failed), op.name)


def backward(context: Context, session: Session, op: Op) -> None:
    _check(op, 1, 0)
    entry, tensor = context.entry(session, op.args[0], torch.Tensor)
    tensor.backward()  # type: ignore[no-untyped-call]  # torch leaves backward unannotated
    # Every gradient this filled in now carries what the loss came from: modules, leaf tensors
    # and optimizers (whose parameters may be stored nowhere else) of this session are tainted at
    # least as the loss (conservative, and cheap), and so is whatever shares their memory.
    taint = derive(entry.taint)
    written: set[int] = set()
    for other in session.objects.values():
        value = other.value
        if isinstance(value, (nn.Module, torch.optim.Optimizer)) or (
                isinstance(value, torch.Tensor) and value.requires_grad and value.is_leaf):
            other.taint = max(other.taint, taint)
            written |= aliases.storages(value)
    aliases.spread(session, written, taint)


def grad(context: Context, session: Session, op: Op) -> None:
    _check(op, 1, 1)
    entry, tensor = context.entry(session, op.args[0], torch.Tensor)
    if tensor.grad is None:
        raise OpFailure("failed", f"object #{_ref_id(op.args[0])} has no gradient: call backward first")
    _put(context, session, op, tensor.grad.detach().clone(), derive(entry.taint))


def optimizer(context: Context, session: Session, op: Op) -> None:
    if len(op.args) != 2 or len(op.outs) != 1 or not isinstance(op.args[1], list):
        raise OpFailure("failed", "optimizer takes a class name, a list of modules or tensors, and one result id")
    name = op.args[0]
    cls = OPTIMIZERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise OpFailure("refused", f"optimizer {str(name)[:60]!r} is not allowed; allowed: {', '.join(sorted(OPTIMIZERS))}")
    params = [p for ref in op.args[1] for p in _parameters(context, session, ref)]
    for key, value in op.kwargs.items():
        if not _number_or_numbers(value):
            raise OpFailure("failed", f"optimizer: {key} must be a number, a flag or a tuple of numbers")
    _put(context, session, op, cls(params, **op.kwargs), Taint.PUBLIC)  # type: ignore[arg-type]


def _parameters(context: Context, session: Session, ref: Any) -> list[torch.Tensor]:  # noqa: ANN401
    if isinstance(ref, Ref) and isinstance(context.store.entry(session, ref.id).value, nn.Module):
        return list(context.entry(session, ref, nn.Module)[1].parameters())
    entry, tensor = context.entry(session, ref, torch.Tensor)
    if entry.taint == Taint.PRIVATE or not (tensor.is_leaf and tensor.requires_grad):
        raise OpFailure("failed", "an optimizer updates modules, or tensors sent with requires_grad=True")
    return [tensor]


def _number_or_numbers(value: object) -> bool:
    if isinstance(value, (tuple, list)):
        return all(isinstance(item, (int, float)) for item in value)
    return value is None or isinstance(value, (bool, int, float))


def zero_grad(context: Context, session: Session, op: Op) -> None:
    _check(op, 1, 0, ("set_to_none",))
    context.entry(session, op.args[0], torch.optim.Optimizer)[1].zero_grad(_flag(op, "set_to_none", True))


def step(context: Context, session: Session, op: Op) -> None:
    _check(op, 1, 0)
    entry, opt = context.entry(session, op.args[0], torch.optim.Optimizer)
    # Its state is allocated by the step itself: room for all of it is made sure of first.
    context.store.check_room(0, max(0, optimizer_state_bound(opt) - entry.nbytes), op.name)
    opt.step()
    # The parameters now hold what their gradients carried, and so does every view of them.
    aliases.spread(session, aliases.storages(opt), entry.taint)
    context.store.resize(entry)  # its state (momentum, Adam's moments) may have grown


def mode(context: Context, session: Session, op: Op) -> None:
    _check(op, 2, 0)
    training = op.args[1]
    if not isinstance(training, bool):
        raise OpFailure("failed", "mode takes a module and true (train) or false (eval)")
    context.entry(session, op.args[0], nn.Module)[1].train(training)


def get(context: Context, session: Session, op: Op) -> Value:
    _check(op, 1, 0)
    ref = op.args[0]
    if not isinstance(ref, Ref):
        raise OpFailure("failed", "get takes a reference")
    entry = context.store.entry(session, ref.id)
    context.check_leaving(entry, ref.id, "get")
    return _copy_out(context, session, entry, ref.id, "get")


def _copy_out(context: Context, session: Session, entry: Entry, object_id: int, what: str) -> Value:
    """A copy of the entry's value for the answer, counted against the caps until it is sent."""
    # Copies: an optimizer step later in the batch must not change what was fetched.
    value = entry.value
    if isinstance(value, torch.Tensor):
        context.store.charge(session, value.numel() * value.element_size(), what, fetched=True)
        return _wire_tensor(value)
    if isinstance(value, nn.Module):
        state = value.state_dict()
        context.store.charge(session, sum(t.numel() * t.element_size() for t in state.values()), what, fetched=True)
        return {key: _wire_tensor(t) for key, t in state.items()}
    raise OpFailure("failed", f"object #{object_id} is an optimizer: optimizers stay on the worker")


def _wire_tensor(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype not in _DTYPE_NAMES:
        raise OpFailure("failed", f"a {tensor.dtype} tensor cannot travel; cast it first")
    return tensor.detach().to("cpu", copy=True)


def meta(context: Context, session: Session, op: Op) -> Value:
    _check(op, 1, 0)
    tensor = context.entry(session, op.args[0], torch.Tensor)[1]
    if tensor.dtype not in _DTYPE_NAMES:
        raise OpFailure("failed", f"dtype {tensor.dtype} cannot travel")
    return TensorMeta(tuple(tensor.shape), _DTYPE_NAMES[tensor.dtype], tensor.requires_grad)


def move(context: Context, session: Session, op: Op) -> Value:
    """The object's value for its client to carry to another worker; the object leaves here.

    Moves go through the client (worker -> client -> worker), the route a provisioned broker
    permits; so a move lets out exactly what a get would, under this worker's --allow-get.
    """
    _check(op, 1, 0)
    ref = op.args[0]
    if not isinstance(ref, Ref):
        raise OpFailure("failed", "move takes a reference")
    entry = context.store.entry(session, ref.id)
    try:
        context.check_leaving(entry, ref.id, "move")
        return _copy_out(context, session, entry, ref.id, "move")
    finally:
        context.store.free(session, ref.id)  # the client's pointer has left: nothing could reach it


def free(context: Context, session: Session, op: Op) -> None:
    for object_id in op.args:
        if type(object_id) is not int:
            raise OpFailure("failed", "free takes object ids")
        context.store.free(session, object_id)


def info(context: Context, session: Session, op: Op) -> Value:
    _check(op, 0, 0)
    return context.store.info(session)


def close(context: Context, session: Session, op: Op) -> None:
    context.store.close(session.client)


SPECIALS: dict[str, Special] = {
    "send": send, "module": module, "task_model": task_model, "dataset": dataset, "forward": forward,
    "backward": backward, "grad": grad, "optimizer": optimizer, "zero_grad": zero_grad, "step": step,
    "mode": mode, "get": get, "meta": meta, "move": move, "free": free, "info": info, "close": close,
}
