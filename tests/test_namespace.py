"""fedmq installs as one namespace: `import fedmq` and its public API; no generic top-level names."""

import importlib.metadata
import subprocess
import sys

import fedmq


def test_the_public_api_is_at_the_top() -> None:
    # Given the installed package, then the API a user reaches for is one import away
    for name in ("Federation", "Strategy", "FedAvg", "Krum", "build_strategy", "ShardSpec", "TrainConfig"):
        assert hasattr(fedmq, name), name
    assert fedmq.__version__ == importlib.metadata.version("fedmq")
    assert issubclass(fedmq.Krum, fedmq.Strategy)


def test_the_distribution_puts_only_fedmq_at_the_top_level() -> None:
    # When the installed distribution's top-level names are read, then there is just one
    top = importlib.metadata.distribution("fedmq").read_text("top_level.txt")
    assert top is not None and top.split() == ["fedmq"]


def test_python_m_fedmq_is_the_command() -> None:
    # When `python -m fedmq --help` runs (outside the source tree), then it is the fedmq CLI
    done = subprocess.run([sys.executable, "-m", "fedmq", "--help"], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert done.returncode == 0 and "usage: fedmq" in done.stdout
