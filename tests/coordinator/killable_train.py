"""`fedmq train` that kills itself with SIGKILL at a kill point of one round.

    python -m tests.coordinator.killable_train POINT ROUND [fedmq train arguments...]

A real kill of a real coordinator process, at a deterministic point (tests/coordinator/kill_points.py).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

from fedmq.coordinator.cli import main
from tests.coordinator import kill_points


def _kill() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("SIGKILL did not end the process")


if __name__ == "__main__":
    kill_points.install(sys.argv[1], int(sys.argv[2]), _kill)
    sys.exit(main(["train", *sys.argv[3:]]))
