"""Pointers to objects on a worker: RemoteTensor, RemoteModule, RemoteOptimizer.

A pointer holds its object's id and its location (a RemoteWorkerHandle). Using it issues ops
to that worker without waiting; `.get()`, and anything else that needs a value (`shape` of a
computed tensor, `bool`, `float`, `len`), waits. Torch functions take remote tensors too
(`torch.matmul(x, w)`, `F.relu(x)`) through torch's `__torch_function__` protocol, as long as
they are on the workers' allowlist (worker.remote.allowlist). When a pointer is garbage
collected or deleted its object is freed on the worker.

Shape and dtype: known without waiting for tensors the client sent; for computed tensors they
are asked of the worker the first time they are needed (one wait), then remembered.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from fedmq.protocol.codec import DTYPES
from fedmq.protocol.operands import Plain, TensorMeta
from fedmq.worker.remote import allowlist, layers

if TYPE_CHECKING:
    from fedmq.coordinator.handle import RemoteWorkerHandle

P = TypeVar("P", bound="RemoteObject")
_PAIRS = {"sort", "topk", "kthvalue", "mode", "cummax", "cummin"}  # (values, indices)
_PAIRS_WITH_DIM = {"max", "min", "median"}  # pairs when reduced along a dimension


class RemoteObject:
    def __init__(self, location: RemoteWorkerHandle, object_id: int) -> None:
        self.location = location
        self.id = object_id

    def move(self: P, worker: RemoteWorkerHandle) -> P:
        """Move the object to `worker` (its value passes through this client); this pointer follows it.

        What moves may leave its worker as a get would (its --allow-get); optimizers do not move.
        """
        self.location.move_out(self, worker)
        self.location = worker
        return self

    def __reduce__(self) -> Any:  # noqa: ANN401 - never returns
        raise TypeError(f"{type(self).__name__} #{self.id} points into a live connection: it cannot be pickled "
                        f"or copied; get() its value instead")

    def __del__(self) -> None:
        # Not contextlib.suppress: at interpreter shutdown even module globals may be gone.
        try:  # noqa: SIM105
            self.location.link.release(self.id)
        except Exception:  # noqa: BLE001 - a half-built pointer, or shutdown: nothing to free
            pass


class RemoteTensor(RemoteObject):
    def __init__(self, location: RemoteWorkerHandle, object_id: int, meta: TensorMeta | None = None) -> None:
        super().__init__(location, object_id)
        self._meta = meta

    # Values: these wait.
    def get(self) -> torch.Tensor:
        """A copy of the tensor's value (the remote object stays until its pointer goes)."""
        value = self.location.fetch("get", self)
        assert isinstance(value, torch.Tensor)
        return value.clone()  # the decoded bytes are read-only

    def item(self) -> float | int | bool:
        return self.get().item()

    def __bool__(self) -> bool:
        return bool(self.get())

    def __float__(self) -> float:
        return float(self.get())

    def __int__(self) -> int:
        return int(self.get())

    @property
    def meta(self) -> TensorMeta:
        if self._meta is None:
            value = self.location.fetch("meta", self)
            assert isinstance(value, TensorMeta)
            self._meta = value
        return self._meta

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.meta.shape)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.meta.dtype]

    @property
    def ndim(self) -> int:
        return len(self.meta.shape)

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[RemoteTensor]:
        return (self[i] for i in range(len(self)))

    # Autograd.
    def backward(self) -> None:
        self.location.issue("backward", (self,), {}, 0)

    @property
    def grad(self) -> RemoteTensor:
        """The gradient, as a new remote tensor (a copy of it, taken now)."""
        return self._call("grad", self)  # type: ignore[no-any-return]

    # Ops.
    def _call(self, name: str, *args: object, **kwargs: object) -> Any:  # noqa: ANN401
        nouts = result_count(name, args, kwargs)
        return self.location.issue(name, args, kwargs, nouts)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name not in allowlist.TENSOR_METHODS:
            raise AttributeError(f"RemoteTensor has no attribute {name!r}: remote tensors offer the allowlisted "
                                 f"tensor methods (README: The allowlist)")

        def method(*args: object, **kwargs: object) -> Any:  # noqa: ANN401
            return self._call(f"Tensor.{name}", self, *args, **kwargs)
        return method

    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: object, args: tuple[object, ...] = (),
                           kwargs: dict[str, object] | None = None) -> Any:  # noqa: ANN401
        name = _TORCH_NAMES.get(func)
        if name is None:
            raise TypeError(f"{getattr(func, '__name__', func)} cannot run on remote tensors: it is not on "
                            f"the workers' allowlist (README: The allowlist)")
        # torch passes its own plumbing along (F.softmax's _stacklevel): not an operand.
        public = {key: value for key, value in (kwargs or {}).items() if not key.startswith("_")}
        worker = location_of((args, public))
        return worker.issue(name, args, public, result_count(name, args, public))

    def __getitem__(self, key: object) -> RemoteTensor:
        return self._call("op.getitem", self, key)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        meta = self._meta
        known = f"shape={list(meta.shape)}, dtype={meta.dtype}" if meta else "shape and dtype not fetched"
        return f"RemoteTensor(#{self.id} on {self.location.name!r}, {known})"

    __hash__ = object.__hash__  # == is elementwise, as for tensors

    def __add__(self, other: object) -> RemoteTensor: return self._binary("add", other)
    def __radd__(self, other: object) -> RemoteTensor: return self._binary("radd", other)
    def __sub__(self, other: object) -> RemoteTensor: return self._binary("sub", other)
    def __rsub__(self, other: object) -> RemoteTensor: return self._binary("rsub", other)
    def __mul__(self, other: object) -> RemoteTensor: return self._binary("mul", other)
    def __rmul__(self, other: object) -> RemoteTensor: return self._binary("rmul", other)
    def __truediv__(self, other: object) -> RemoteTensor: return self._binary("truediv", other)
    def __rtruediv__(self, other: object) -> RemoteTensor: return self._binary("rtruediv", other)
    def __floordiv__(self, other: object) -> RemoteTensor: return self._binary("floordiv", other)
    def __rfloordiv__(self, other: object) -> RemoteTensor: return self._binary("rfloordiv", other)
    def __mod__(self, other: object) -> RemoteTensor: return self._binary("mod", other)
    def __rmod__(self, other: object) -> RemoteTensor: return self._binary("rmod", other)
    def __pow__(self, other: object) -> RemoteTensor: return self._binary("pow", other)
    def __rpow__(self, other: object) -> RemoteTensor: return self._binary("rpow", other)
    def __matmul__(self, other: object) -> RemoteTensor: return self._binary("matmul", other)
    def __rmatmul__(self, other: object) -> RemoteTensor: return self._binary("rmatmul", other)
    def __and__(self, other: object) -> RemoteTensor: return self._binary("and_", other)
    def __rand__(self, other: object) -> RemoteTensor: return self._binary("rand", other)
    def __or__(self, other: object) -> RemoteTensor: return self._binary("or_", other)
    def __ror__(self, other: object) -> RemoteTensor: return self._binary("ror", other)
    def __xor__(self, other: object) -> RemoteTensor: return self._binary("xor", other)
    def __rxor__(self, other: object) -> RemoteTensor: return self._binary("rxor", other)
    def __lt__(self, other: object) -> RemoteTensor: return self._binary("lt", other)
    def __le__(self, other: object) -> RemoteTensor: return self._binary("le", other)
    def __gt__(self, other: object) -> RemoteTensor: return self._binary("gt", other)
    def __ge__(self, other: object) -> RemoteTensor: return self._binary("ge", other)
    def __eq__(self, other: object) -> RemoteTensor: return self._binary("eq", other)  # type: ignore[override]
    def __ne__(self, other: object) -> RemoteTensor: return self._binary("ne", other)  # type: ignore[override]
    def __neg__(self) -> RemoteTensor: return self._call("op.neg", self)  # type: ignore[no-any-return]
    def __pos__(self) -> RemoteTensor: return self._call("op.pos", self)  # type: ignore[no-any-return]
    def __abs__(self) -> RemoteTensor: return self._call("op.abs", self)  # type: ignore[no-any-return]
    def __invert__(self) -> RemoteTensor: return self._call("op.invert", self)  # type: ignore[no-any-return]

    def _binary(self, name: str, other: object) -> RemoteTensor:
        return self._call(f"op.{name}", self, other)  # type: ignore[no-any-return]


class RemoteModule(RemoteObject):
    """A module on a worker: call it on remote tensors, train it there, `get()` it back."""

    def __init__(self, location: RemoteWorkerHandle, object_id: int, structure: Plain = None,
                 template: nn.Module | None = None) -> None:
        super().__init__(location, object_id)
        self._structure = structure  # the layers it was sent as, to rebuild it here on get()
        self._template = template  # or the local model a task model was sent from

    @property
    def structure(self) -> Plain:
        """The layers it was sent as; None for a task model (worker.task_model)."""
        return self._structure

    def __call__(self, *args: object, **kwargs: object) -> RemoteTensor:
        return self.location.issue("forward", (self, *args), kwargs, 1)  # type: ignore[no-any-return]

    forward = __call__

    def train(self, mode: bool = True) -> RemoteModule:
        self.location.issue("mode", (self, mode), {}, 0)
        return self

    def eval(self) -> RemoteModule:
        return self.train(False)

    def get(self) -> nn.Module:
        """A local module holding the remote one's current weights."""
        weights = self.location.fetch("get", self)
        assert isinstance(weights, dict)
        if self._template is not None:
            local = copy.deepcopy(self._template)
            local.load_state_dict(weights)
            return local
        return layers.build(self._structure, weights)

    def __repr__(self) -> str:
        return f"RemoteModule(#{self.id} on {self.location.name!r})"


class RemoteOptimizer(RemoteObject):
    """An optimizer on a worker, over remote modules' or tensors' parameters."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.location.issue("zero_grad", (self,), {"set_to_none": set_to_none}, 0)

    def step(self) -> None:
        self.location.issue("step", (self,), {}, 0)

    def __repr__(self) -> str:
        return f"RemoteOptimizer(#{self.id} on {self.location.name!r})"


def result_count(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> int:
    """How many tensors op `name` gives: two for (values, indices), else one."""
    base = name.partition(".")[2]
    if base in _PAIRS:
        return 2
    along_dim = "dim" in kwargs or (len(args) > 1 and isinstance(args[1], int) and not isinstance(args[1], bool))
    return 2 if base in _PAIRS_WITH_DIM and along_dim else 1


def location_of(operands: object) -> RemoteWorkerHandle:
    """The worker of the first pointer among `operands` (nested in tuples, lists and dicts)."""
    found = _first_pointer(operands)
    if found is None:
        raise TypeError("no remote operand: nothing says which worker should run this")
    return found.location


def _first_pointer(obj: object) -> RemoteObject | None:
    if isinstance(obj, RemoteObject):
        return obj
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (tuple, list)) else ()
    for item in items:
        found = _first_pointer(item)
        if found is not None:
            return found
    return None


def _torch_names() -> dict[Callable[..., Any], str]:
    """Torch's callables (as __torch_function__ receives them) -> their allowlisted wire names."""
    import torch.nn.functional as F

    names: dict[Callable[..., Any], str] = {}
    for base in allowlist.TENSOR_METHODS:
        names[getattr(torch.Tensor, base)] = f"Tensor.{base}"
    for base in allowlist.TORCH_FUNCTIONS:
        names[getattr(torch, base)] = f"torch.{base}"
    for base in allowlist.FUNCTIONAL:
        names[getattr(F, base)] = f"F.{base}"
    for base in allowlist.OPERATORS:  # a local tensor on the left of a remote one: t + x
        dunder = getattr(torch.Tensor, f"__{base.rstrip('_')}__", None)
        if dunder is not None:
            names.setdefault(dunder, f"op.{base}")
    return names


_TORCH_NAMES = _torch_names()
