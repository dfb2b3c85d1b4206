"""Strategies by name: `build_strategy("fedadam", {"eta": "0.01"})`, or a user's class by import path.

A strategy's options are its constructor's keyword-only parameters; their annotations (int,
float, bool, str, or one of those | None) say how a command line's text is parsed. Anything
unknown or unparsable raises StrategyError naming what is valid.
"""

from __future__ import annotations

import importlib
import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from fedmq.coordinator.strategies.fedopt import FedAdagrad, FedAdam, FedAvgM, FedProx, FedYogi
from fedmq.coordinator.strategies.robust import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from fedmq.coordinator.strategy import FedAvg, Strategy
from fedmq.protocol.errors import StrategyError

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def build_strategy(name: str, options: Mapping[str, str] | None = None) -> Strategy:
    """The strategy `name` (a registry name or `module.path:ClassName`) with `options` parsed."""
    cls = strategy_class(name)
    parameters = strategy_options(cls)
    given = dict(options or {})
    unknown = sorted(given.keys() - parameters.keys())
    if unknown:
        valid = ", ".join(_describe(key, p) for key, p in parameters.items()) or "none"
        raise StrategyError(f"strategy {name!r} has no option {', '.join(unknown)}; valid options: {valid}")
    kwargs = {key: _parse(name, key, text, parameters[key]) for key, text in given.items()}
    try:
        return cls(**kwargs)
    except StrategyError:
        raise
    except (TypeError, ValueError) as e:
        raise StrategyError(f"strategy {name!r} refused its options: {e}") from e


def strategy_class(name: str) -> type[Strategy]:
    """The class a registry name or a `module.path:ClassName` import path names."""
    if ":" in name:
        return _import_class(name)
    cls = STRATEGIES.get(name.lower())
    if cls is None:
        raise StrategyError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}, "
                            "or give your own Strategy subclass as module.path:ClassName")
    return cls


def strategy_options(cls: type[Strategy]) -> dict[str, inspect.Parameter]:
    """The options `cls` takes (its constructor's keyword-only parameters), annotations resolved."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - a user's unresolvable annotation: options stay text
        hints = {}
    return {p.name: p.replace(annotation=hints.get(p.name, str))
            for p in inspect.signature(cls).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def describe_strategies() -> str:
    """One line per registered strategy: its name, the first line of its docstring, its options."""
    lines = []
    for name, cls in STRATEGIES.items():
        summary = (inspect.getdoc(cls) or "").split("\n")[0]
        options = ", ".join(_describe(key, p) for key, p in strategy_options(cls).items())
        memory = " Holds every update of a round." if cls.holds_cohort else ""
        lines.append(f"{name}: {summary}{memory}" + (f" Options: {options}." if options else ""))
    return "\n".join(lines)


def _import_class(path: str) -> type[Strategy]:
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise StrategyError(f"strategy path {path!r} must read module.path:ClassName")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure of a user's module is a usage error here
        raise StrategyError(f"cannot import {module_name!r} for strategy {path!r} ({type(e).__name__}: {e}); "
                            "is its folder on PYTHONPATH?") from e
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        found = "nothing" if cls is None else repr(cls)[:80]
        raise StrategyError(f"{path!r} names {found}, not a subclass of fedmq's Strategy")
    if inspect.isabstract(cls):
        raise StrategyError(f"{path!r} is abstract: it must implement begin_round, accumulate and end_round")
    return cls


def _parse(strategy: str, key: str, text: str, parameter: inspect.Parameter) -> Any:
    kind, optional = _base_type(parameter.annotation)
    if optional and text.strip().lower() == "none":
        return None
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError("not a boolean")
            return lowered in _TRUE
        if kind is int:
            return int(text.strip(), 10)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError("not finite")
            return value
    except ValueError:
        raise StrategyError(f"option {key}={text!r} of strategy {strategy!r} must be "
                            f"{_type_name(parameter.annotation)}") from None
    return text


def _base_type(annotation: object) -> tuple[type, bool]:
    """(int | float | bool | str, whether None is allowed); other annotations are passed as str."""
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in args if a is not type(None)]
        base = kinds[0] if len(kinds) == 1 and kinds[0] in (int, float, bool, str) else str
        return base, type(None) in args
    return (annotation if isinstance(annotation, type) and annotation in (int, float, bool, str) else str), False


def _type_name(annotation: object) -> str:
    kind, optional = _base_type(annotation)
    name = {int: "an integer", float: "a finite number", bool: "true or false", str: "text"}[kind]
    return name + (" or none" if optional else "")


def _describe(key: str, parameter: inspect.Parameter) -> str:
    default = "required" if parameter.default is inspect.Parameter.empty else f"default {parameter.default}"
    return f"{key} ({_type_name(parameter.annotation)}, {default})"
