"""`fedmq train --mode async` that kills itself with SIGKILL at the N-th call of a hook.

    python -m tests.coordinator.killable_async HOOK:N [fedmq train arguments...]

Hooks (each fires right after the named step returns): `tasks` (the task list written: before a
publish or after an aggregation), `accepted` (an update screened and about to be folded in),
`line` (a version's metrics line written), `state` (a version's checkpoint durable, its updates
not yet acknowledged), `acked` (a version's updates acknowledged), and `any` (whichever of these
comes N-th). A real kill of a real coordinator at a step chosen by the test.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import fedmq.coordinator.async_job as async_job
import fedmq.coordinator.metrics as metrics_module
from fedmq.coordinator.cli import main

HOOKS: dict[str, tuple[Any, str]] = {
    "tasks": (async_job, "save_tasks"), "accepted": (async_job, "scaled"),
    "line": (metrics_module.MetricsLog, "write"), "state": (async_job, "save_state"),
    "acked": (async_job.AsyncJob, "_announce"),
}


def install(spec: str) -> None:
    chosen, _, count = spec.partition(":")
    target = int(count)
    calls = [0]
    for name, (owner, attribute) in HOOKS.items():
        if chosen in (name, "any"):
            setattr(owner, attribute, _counted(getattr(owner, attribute), calls, target))


def _counted(original: Callable[..., Any], calls: list[int], target: int) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapped


if __name__ == "__main__":
    install(sys.argv[1])
    sys.exit(main(["train", *sys.argv[2:]]))
