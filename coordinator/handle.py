"""A worker as a client sees it: send objects there, run ops there, fetch what may leave it."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from types import EllipsisType
from typing import TYPE_CHECKING, Any, overload

import torch
from torch import nn

from fedmq.coordinator.pipeline import Incoming, WorkerLink
from fedmq.coordinator.remote import RemoteModule, RemoteObject, RemoteOptimizer, RemoteTensor, result_count
from fedmq.protocol.codec import DTYPES
from fedmq.protocol.commands import KWARG_NAME, Op
from fedmq.protocol.errors import RemoteError
from fedmq.protocol.operands import Arg, ModuleSpec, Ref, StoreInfo, TensorMeta, Value
from fedmq.worker.remote import allowlist, layers

if TYPE_CHECKING:
    from fedmq.coordinator.federation import Federation

Operand = Any  # what a user may pass to a remote op: pointers, tensors, numbers, slices, ...


class RemoteWorkerHandle:
    def __init__(self, federation: Federation, link: WorkerLink) -> None:
        self.federation = federation
        self.link = link
        self.name = link.worker
        self.torch = TorchOn(self)  # bob.torch.zeros(2, 3): torch's creation functions, run on bob

    @overload
    def send(self, obj: torch.Tensor) -> RemoteTensor: ...
    @overload
    def send(self, obj: nn.Module) -> RemoteModule: ...

    def send(self, obj: torch.Tensor | nn.Module) -> RemoteTensor | RemoteModule:
        """Put a tensor or a module (allowlisted layers only) on this worker; its pointer."""
        object_id = self.federation.new_id()
        if isinstance(obj, nn.Module):
            structure = layers.describe(obj)
            self.link.add(Op("module", (ModuleSpec(structure, _weights(obj)),), {}, (object_id,)), _size(obj))
            return RemoteModule(self, object_id, structure=structure)
        if not isinstance(obj, torch.Tensor):
            raise TypeError(f"send takes a tensor or an nn.Module, not a {type(obj).__name__}")
        tensor = obj.detach().to("cpu", copy=True)  # what it is now, whatever happens to obj later
        kwargs: dict[str, Arg] = {"requires_grad": True} if obj.requires_grad else {}
        self.link.add(Op("send", (tensor,), kwargs, (object_id,)), _size(tensor))
        meta = TensorMeta(tuple(tensor.shape), _dtype_name(tensor.dtype), obj.requires_grad)
        return RemoteTensor(self, object_id, meta)

    def task_model(self, like: nn.Module) -> RemoteModule:
        """The worker's own task model (any class), loaded with `like`'s weights; get() copies `like`."""
        object_id = self.federation.new_id()
        self.link.add(Op("task_model", (_weights(like),), {}, (object_id,)), _size(like))
        return RemoteModule(self, object_id, template=like)

    def dataset(self) -> tuple[RemoteTensor, RemoteTensor]:
        """Pointers to this worker's private shard: (inputs, targets). Their values never leave."""
        data, targets = self.issue("dataset", (), {}, 2)
        return data, targets

    def optimizer(self, cls: type[torch.optim.Optimizer] | str,
                  params: RemoteModule | RemoteTensor | Sequence[RemoteModule | RemoteTensor],
                  **kwargs: float | bool | tuple[float, ...]) -> RemoteOptimizer:
        """A torch.optim optimizer on this worker, e.g. optimizer(torch.optim.SGD, model, lr=0.1)."""
        name = cls if isinstance(cls, str) else cls.__name__
        if name not in allowlist.OPTIMIZERS:
            raise ValueError(f"optimizer {name!r} is not allowed; allowed: {', '.join(sorted(allowlist.OPTIMIZERS))}")
        targets = [params] if isinstance(params, RemoteObject) else list(params)
        object_id = self.federation.new_id()
        self.link.add(Op("optimizer", (name, [self._ref(p) for p in targets]),
                         {key: self.operand(value)[0] for key, value in kwargs.items()}, (object_id,)))
        return RemoteOptimizer(self, object_id)

    def objects(self) -> StoreInfo:
        """How many objects, of how many bytes, this client holds on the worker now (waits)."""
        self.link.flush()  # frees of dropped pointers go out first: they end their batch
        value = self.link.fetch(Op("info"))
        assert isinstance(value, StoreInfo)
        return value

    def flush(self) -> None:
        """Send the buffered ops now, without waiting for them."""
        self.link.flush()

    def sync(self) -> None:
        """Wait until the worker ran every op issued so far; raise the first failure."""
        self.link.wait(self.link.flush())

    def run_op(self, name: str, *args: Operand, nouts: int = 1, **kwargs: Operand) -> Any:  # noqa: ANN401
        """Issue the allowlisted op `name` (e.g. "torch.zeros"); its result pointer(s)."""
        if not allowlist.is_allowed(name):
            raise ValueError(f"op {name!r} is not on the workers' allowlist (README: The allowlist)")
        return self.issue(name, args, kwargs, nouts)

    # For pointers (coordinator.remote).
    def issue(self, name: str, args: Sequence[Operand], kwargs: dict[str, Operand], nouts: int) -> Any:  # noqa: ANN401
        """Buffer op `name`; pointers to its `nouts` results (one: the pointer, else a tuple)."""
        literals = 0
        wire_args: list[Arg] = []
        for arg in args:
            wire, size = self.operand(arg)
            wire_args.append(wire)
            literals += size
        wire_kwargs: dict[str, Arg] = {}
        for key, value in kwargs.items():
            if not KWARG_NAME.match(key):  # the worker could not even decode the batch
                raise ValueError(f"{name}: keyword {key!r} cannot be sent (no leading underscores)")
            wire_kwargs[key], size = self.operand(value)
            literals += size
        outs = tuple(self.federation.new_id() for _ in range(nouts))
        self.link.add(Op(name, tuple(wire_args), wire_kwargs, outs), literals)
        results = tuple(RemoteTensor(self, out) for out in outs)
        return results[0] if nouts == 1 else results if nouts else None

    def fetch(self, name: str, pointer: RemoteObject) -> Value:
        """Run op `name` on `pointer` with everything before it; the value it fetched (waits)."""
        return self.link.fetch(Op(name, (self._ref(pointer),)))

    def move_out(self, pointer: RemoteObject, worker: RemoteWorkerHandle) -> None:
        """Send `pointer`'s object from here to `worker`, through this client (see coordinator.pipeline)."""
        if worker.federation is not self.federation:
            raise ValueError("a pointer moves only between workers of its own federation")
        if worker is self:
            return
        arrive = _arrival(pointer)
        ref = self._ref(pointer)
        meta = self.link.add(Op("meta", (ref,))) if isinstance(pointer, RemoteTensor) else None
        value = self.link.add(Op("move", (ref,)))
        self.link.flush()  # the source answers while the target's ops wait for it
        worker.link.add(Incoming(self.link, value, meta, arrive))

    def operand(self, value: Operand) -> tuple[Arg, int]:
        """`value` as a wire operand, and the bytes of literal tensors in it."""
        if isinstance(value, RemoteObject):
            return self._ref(value), 0
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu", copy=True)
            return tensor, _size(tensor)
        if value is None or isinstance(value, (bool, int, float, str, torch.dtype, slice, EllipsisType)):
            return value, 0
        if isinstance(value, numbers.Integral):
            return int(value), 0
        if isinstance(value, numbers.Real):
            return float(value), 0
        if isinstance(value, (tuple, list)):
            parts = [self.operand(item) for item in value]
            items = [part for part, _ in parts]
            return (tuple(items) if isinstance(value, tuple) else items), sum(size for _, size in parts)
        raise TypeError(f"a {type(value).__name__} cannot be an operand of a remote op")

    def _ref(self, pointer: RemoteObject) -> Ref:
        if not isinstance(pointer, RemoteObject):
            raise TypeError(f"expected a remote object, got {type(pointer).__name__}")
        if pointer.location is not self:
            raise ValueError(f"#{pointer.id} is on worker {pointer.location.name!r}, and this op runs on "
                             f"{self.name!r}: move one of them first (x.move(worker))")
        return Ref(pointer.id)

    def __repr__(self) -> str:
        return f"RemoteWorkerHandle({self.name!r})"


class TorchOn:
    """torch's allowlisted functions, run on one worker: `bob.torch.zeros(2, 3)`."""

    def __init__(self, worker: RemoteWorkerHandle) -> None:
        self._worker = worker

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in allowlist.TORCH_FUNCTIONS:
            raise AttributeError(f"torch.{name} is not on the workers' allowlist (README: The allowlist)")

        def function(*args: Operand, **kwargs: Operand) -> Any:  # noqa: ANN401
            return self._worker.issue(f"torch.{name}", args, kwargs, result_count(f"torch.{name}", args, kwargs))
        return function


def _arrival(pointer: RemoteObject) -> Callable[[Value, Value | None], Op]:
    """How `pointer`'s object, fetched from its worker, is put on another; ValueError if it cannot move."""
    object_id = pointer.id

    def tensor(value: Value, meta: Value | None) -> Op:
        if not isinstance(value, torch.Tensor) or not isinstance(meta, TensorMeta):
            raise RemoteError(f"moving #{object_id}: its worker did not answer with a tensor")
        kwargs: dict[str, Arg] = {"requires_grad": True} if meta.requires_grad else {}
        return Op("send", (value,), kwargs, (object_id,))

    def module(value: Value, meta: Value | None) -> Op:
        if not isinstance(value, dict):
            raise RemoteError(f"moving #{object_id}: its worker did not answer with weights")
        structure = pointer.structure if isinstance(pointer, RemoteModule) else None
        if structure is None:  # a task model: the other worker builds its own and loads these
            return Op("task_model", (value,), {}, (object_id,))
        return Op("module", (ModuleSpec(structure, value),), {}, (object_id,))

    if isinstance(pointer, RemoteTensor):
        return tensor
    if isinstance(pointer, RemoteModule):
        return module
    raise ValueError(f"{type(pointer).__name__} #{object_id} cannot move: optimizers stay on their worker "
                     f"(make a new one where its parameters are)")


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: t.detach().to("cpu", copy=True) for key, t in module.state_dict().items()}


def _size(obj: torch.Tensor | nn.Module) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    return sum(_size(t) for t in obj.state_dict().values())


def _dtype_name(dtype: torch.dtype) -> str:
    for name, known in DTYPES.items():
        if known == dtype:
            return name
    raise ValueError(f"dtype {dtype} cannot travel; allowed: {', '.join(DTYPES)}")
