"""Strategy state for checkpoints: flat maps of tensors and plain values, never pickle.

A strategy's `state_dict()` is a flat map from string keys to tensors or plain numbers and
strings. `encode_state` turns it into msgpack-ready values (tensors through the tensor codec);
`decode_state` reads it back from hostile bytes with the same checks as the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fedmq.protocol.codec import tensor_from_wire, tensor_to_wire
from fedmq.protocol.errors import DecodeError, StrategyError
from fedmq.protocol.messages import Weights

Plain = int | float | str | bool
KIND = "kind"  # every stateful strategy records its registry name, so a resume cannot mix them


def encode_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """`state` with every tensor as a wire map; plain values stay as they are."""
    encoded: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            encoded[key] = tensor_to_wire(value)
        elif isinstance(value, (int, float, str, bool)):
            encoded[key] = value
        else:
            raise StrategyError(f"strategy state {key!r} is a {type(value).__name__}; "
                                "a state holds only tensors, numbers and strings")
    return encoded


def decode_state(obj: object) -> dict[str, Any]:
    """The state `encode_state` wrote; DecodeError for anything else. Tensors are copied out of
    the input buffer, so they are writable and outlive it."""
    if not isinstance(obj, dict) or not all(isinstance(key, str) for key in obj):
        raise DecodeError("strategy state must be a map from names to values")
    decoded: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            decoded[key] = tensor_from_wire(value).clone()
        elif isinstance(value, (int, float, str, bool)):
            decoded[key] = value
        else:
            raise DecodeError(f"strategy state {key!r} is neither a tensor nor a plain value")
    return decoded


def check_kind(state: Mapping[str, Any], kind: str) -> bool:
    """False for an empty state (nothing to restore); raises when another strategy wrote it."""
    if not state:
        return False
    if not isinstance(state.get(KIND), str):
        raise StrategyError(f"the checkpoint's strategy state names no strategy, so {kind!r} cannot "
                            "continue from it; use another --checkpoint-dir to start over")
    if state[KIND] != kind:
        raise StrategyError(f"the checkpoint's strategy state was written by {state.get(KIND)!r}, "
                            f"not {kind!r}; resume with --strategy {state.get(KIND)} or use "
                            "another --checkpoint-dir")
    return True


def tensors_under(state: Mapping[str, Any], prefix: str) -> Weights:
    """The tensors stored as `prefix/<entry name>`, by entry name."""
    found: Weights = {}
    for key, value in state.items():
        if key.startswith(prefix + "/"):
            if not isinstance(value, torch.Tensor):
                raise StrategyError(f"strategy state {key!r} should be a tensor, got {type(value).__name__}")
            found[key[len(prefix) + 1:]] = value
    return found


def flatten(prefix: str, tensors: Weights) -> dict[str, torch.Tensor]:
    """`tensors` keyed as `prefix/<entry name>`, the inverse of `tensors_under`."""
    return {f"{prefix}/{name}": t for name, t in tensors.items()}


def check_fits(kind: str, state: Weights, weights: Weights) -> None:
    """Restored per-entry state must match the entries it is kept for (the floating entries of
    `weights`; a server optimizer passes its parameters only), name and shape."""
    floats = {name: t for name, t in weights.items() if t.is_floating_point()}
    if state.keys() != floats.keys():
        missing = sorted(floats.keys() - state.keys())[:3]
        extra = sorted(state.keys() - floats.keys())[:3]
        raise StrategyError(f"{kind}'s checkpointed state does not fit the model (missing {missing}, "
                            f"unexpected {extra}); use another --checkpoint-dir to start over")
    for name, t in floats.items():
        if state[name].shape != t.shape:
            raise StrategyError(f"{kind}'s checkpointed state {name!r} has shape {list(state[name].shape)}, "
                                f"the model's is {list(t.shape)}; use another --checkpoint-dir")
