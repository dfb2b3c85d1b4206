"""A longer fuzz campaign than CI runs: the tests in tests/fuzz at a larger scale.

    .venv/bin/python -m benchmarks.fuzz [SCALE]   # default 10: 20,000 decoder examples per test,
                                                 # 20,000 tasks to a live worker, 15,000 replies
                                                 # to a live coordinator (each plus chunk attacks)

Prints one JSON line per live target (payloads, crashes, RSS before and after) and pytest's
summary; needs the same RabbitMQ as the integration tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main(scale: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        figures = Path(directory) / "figures.jsonl"
        env = {**os.environ, "FEDMQ_FUZZ_SCALE": str(scale), "FEDMQ_FUZZ_FIGURES": str(figures)}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:logging", "tests/fuzz"],
                              env=env)
        if figures.exists():
            print(figures.read_text(), end="")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
