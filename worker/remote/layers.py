"""Modules as data: an allowlisted layer structure plus a state dict, never pickle.

A layer is {"layer": class name, "args": constructor arguments, "train": bool}; a Sequential is
{"layer": "Sequential", "children": [[name, layer], ...], "train": bool}. Constructor arguments
are read back from the module's attributes of the same names (torch.nn layers keep them), so
`describe` works for every class in the allowlist without a table per class. `build` is where a
worker meets a client's structure: class names come from the allowlist, argument names from
the class's signature, values are plain scalars, and the layers are built on the meta device
(no memory) before the weights, which the message itself carried, are put in.
"""

from __future__ import annotations

import inspect
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedmq.protocol.operands import Plain
from fedmq.worker.remote.allowlist import LAYERS

MAX_CHILDREN = 4096
MAX_AMPLIFYING = 4096  # paddings, dilations and output sizes: they grow outputs beyond inputs
_AMPLIFYING = ("padding", "output_padding", "dilation", "output_size")
_SKIPPED = ("self", "device", "dtype")
_CHILD_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # a state-dict key part: never a dot


def describe(module: nn.Module) -> Plain:
    """The layer structure of `module`; ValueError naming the first layer not on the allowlist."""
    name = type(module).__name__
    if LAYERS.get(name) is not type(module):
        raise ValueError(f"{type(module).__qualname__} is not an allowlisted layer; a module travels as "
                         f"these torch.nn layers only: {', '.join(sorted(LAYERS))}. For the worker's own "
                         f"task model use worker.task_model(model)")
    if isinstance(module, nn.Sequential):
        children: list[Plain] = [[child, describe(layer)] for child, layer in module.named_children()]
        return {"layer": name, "children": children, "train": module.training}
    return {"layer": name, "args": _arguments(module), "train": module.training}


def _arguments(module: nn.Module) -> dict[str, Plain]:
    found: dict[str, Plain] = {}
    for parameter in _parameters(type(module)).values():
        if not hasattr(module, parameter.name):
            if parameter.default is inspect.Parameter.empty:
                raise ValueError(f"{type(module).__name__} keeps no {parameter.name!r}: it cannot travel")
            continue  # a deprecated alias (Hardtanh's min_value): its default is what was used
        value = getattr(module, parameter.name)
        if isinstance(value, torch.Tensor) or (value is None and parameter.name == "bias"):
            value = value is not None  # `bias=True` became a Parameter (or None)
        found[parameter.name] = _plain_argument(value, type(module).__name__, parameter.name)
    return found


def _plain_argument(value: object, layer: str, name: str) -> Plain:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(item, (bool, int, float)) for item in value):
        return list(value)
    raise ValueError(f"{layer}.{name} = {value!r} cannot travel: only numbers, strings and tuples of numbers")


def _parameters(cls: type[nn.Module]) -> dict[str, inspect.Parameter]:
    """The constructor's named parameters a layer structure may set."""
    signature = inspect.signature(cls.__init__)
    return {name: p for name, p in signature.parameters.items()
            if name not in _SKIPPED and not name.startswith("_")
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def build(layers: Plain, weights: Mapping[str, torch.Tensor], device: torch.device | str = "cpu") -> nn.Module:
    """The module `layers` describes, holding copies of `weights`, on `device`.

    ValueError naming the fault: a layer not on the allowlist, an unknown or non-plain argument,
    weights that do not fit.
    """
    with torch.device("meta"):  # no memory yet: the weights below are all the module will hold
        module = _build(layers, 0)
    try:
        module.load_state_dict({k: v.to(device, copy=True) for k, v in weights.items()}, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"the weights do not fit the layers: {e}") from e
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"the weights do not fill {', '.join(left)}")
    return module


def _build(layers: Plain, depth: int) -> nn.Module:
    if depth > 64 or not isinstance(layers, dict):
        raise ValueError("a layer must be a map of layer, args (or children) and train")
    name, train = layers.get("layer"), layers.get("train")
    cls = LAYERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"layer {str(name)[:60]!r} is not allowed; allowed: {', '.join(sorted(LAYERS))}")
    if not isinstance(train, bool):
        raise ValueError(f"{name}: 'train' must be true or false")
    if cls is nn.Sequential:
        module: nn.Module = nn.Sequential(_children(layers, depth))
    else:
        if layers.keys() != {"layer", "args", "train"}:
            raise ValueError(f"{name}: a layer holds exactly layer, args and train")
        module = cls(**_checked_arguments(cls, layers["args"]))
    module.training = train  # this node only: its children carry their own flags
    return module


def _children(layers: dict[str, Plain], depth: int) -> OrderedDict[str, nn.Module]:
    children = layers.get("children")
    if layers.keys() != {"layer", "children", "train"} or not isinstance(children, list):
        raise ValueError("Sequential holds exactly layer, children and train")
    if len(children) > MAX_CHILDREN:
        raise ValueError(f"Sequential may hold at most {MAX_CHILDREN} layers")
    built: OrderedDict[str, nn.Module] = OrderedDict()
    for child in children:
        if not (isinstance(child, list) and len(child) == 2 and isinstance(child[0], str)
                and _CHILD_NAME.match(child[0])):
            raise ValueError("a Sequential child is [name, layer] with a name of letters, digits and '_'")
        built[child[0]] = _build(child[1], depth + 1)
    return built


def _checked_arguments(cls: type[nn.Module], args: Plain) -> dict[str, Any]:
    if not isinstance(args, dict):
        raise ValueError(f"{cls.__name__}: args must be a map")
    allowed = _parameters(cls)
    checked: dict[str, Any] = {}
    for name, given in args.items():
        if name not in allowed:
            raise ValueError(f"{cls.__name__} takes no argument {name[:60]!r}")
        value: Any = given
        if isinstance(given, list):
            if not all(isinstance(item, (bool, int, float)) for item in given):
                raise ValueError(f"{cls.__name__}.{name}: a list may hold numbers only")
            value = tuple(given)
        elif isinstance(given, dict):
            raise ValueError(f"{cls.__name__}.{name}: a map is not a constructor argument")
        if name in _AMPLIFYING and _too_large(value):
            raise ValueError(f"{cls.__name__}.{name} = {value!r}: at most {MAX_AMPLIFYING} here")
        # In place, a layer would write into its input, which may be a view of the private shard.
        checked[name] = False if name == "inplace" else value
    return checked


def _too_large(value: object) -> bool:
    items = value if isinstance(value, tuple) else (value,)
    return any(isinstance(item, (int, float)) and abs(item) > MAX_AMPLIFYING for item in items)
