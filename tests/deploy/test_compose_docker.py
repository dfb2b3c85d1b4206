"""The top-level docker-compose.yml, run for real: image built, broker provisioned, three
workers and the coordinator in containers, three rounds.

Needs a Docker engine with Compose (here: ../shared/docker/up.sh). Without one the test is
skipped with the reason shown in pytest's summary (`-ra`), never reported as passed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
RUN_TIMEOUT_S = 600  # a cold image build plus three rounds; a hang fails instead of blocking CI


def _compose_command() -> list[str] | None:
    """`docker compose` (v2) when present, else `docker-compose` (v1): same file format."""
    if shutil.which("docker") is None:
        return None
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command (start an engine: ../shared/docker/up.sh)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"no Docker engine answers `docker info`: {info.stderr.strip()[-300:]}"
    if _compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Compose:
    """One compose project with its own name, ports, image tag and runs directory."""

    def __init__(self, runs: Path) -> None:
        command = _compose_command()
        assert command is not None
        self.project = f"fedmqtest{uuid.uuid4().hex[:8]}"
        self.base = [*command, "-p", self.project, "-f", str(ROOT / "docker-compose.yml")]
        self.image = f"fedmq:{self.project}"
        self.env = {**os.environ, "FEDMQ_IMAGE": self.image, "FEDMQ_RUNS": str(runs),
                    "FEDMQ_ROUNDS": str(ROUNDS), "FEDMQ_UID": str(os.getuid()),
                    "FEDMQ_AMQP_PORT": str(_free_port()), "FEDMQ_MANAGEMENT_PORT": str(_free_port())}

    def run(self, *args: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "200", timeout=120).stdout


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    problem = _engine_problem()
    if problem is not None:
        pytest.skip(f"docker compose test skipped: {problem}")
    runs = tmp_path_factory.mktemp("runs")
    project = Compose(runs)
    # Built once, tagged for this project only; every fedmq service uses it.
    build = subprocess.run(["docker", "build", "-t", project.image, str(ROOT)], capture_output=True,
                           text=True, timeout=RUN_TIMEOUT_S)
    assert build.returncode == 0, f"docker build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    try:
        up = project.run("up", "-d", "--no-build")
        assert up.returncode == 0, f"compose up failed:\n{up.stderr[-3000:]}\n{project.logs()}"
        yield project
    finally:
        project.run("down", "-v", "--remove-orphans", timeout=300)
        subprocess.run(["docker", "image", "rm", "-f", project.image], capture_output=True, timeout=120)


def test_compose_up_trains_three_rounds_with_rising_accuracy(compose: Compose) -> None:
    # Given a fresh project (its own volumes: nothing provisioned yet)
    # When `compose up` has started provisioning, the broker, three workers and the coordinator
    coordinator = compose.run("ps", "-q", "coordinator").stdout.strip()
    waited = subprocess.run(["docker", "wait", coordinator], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    logs = compose.logs()
    # Then the one-shot coordinator exits 0 and its metrics show accuracy rising over 3 rounds
    assert waited.stdout.strip() == "0", f"coordinator exit {waited.stdout!r}:\n{logs}"
    metrics = Path(compose.env["FEDMQ_RUNS"]) / "metrics.jsonl"
    assert metrics.exists(), f"no metrics file:\n{logs}"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    assert [row["round"] for row in rows] == list(range(1, ROUNDS + 1)), logs
    assert all(row["replies"] == 3 for row in rows), rows
    assert rows[-1]["eval_accuracy"] > rows[0]["eval_accuracy"], rows
    assert (Path(compose.env["FEDMQ_RUNS"]) / "checkpoints").is_dir()


def test_the_default_guest_login_is_refused(compose: Compose) -> None:
    # Given the running compose broker, whose users come only from the provisioned definitions
    # When guest/guest tries to log in over AMQP from the host
    import pika

    url = f"amqp://guest:guest@127.0.0.1:{compose.env['FEDMQ_AMQP_PORT']}/%2F"
    # Then the broker refuses it
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(url))


def test_a_worker_container_holds_only_its_own_credentials(compose: Compose) -> None:
    # Given alice's running container
    # When we list what it has mounted at /run/fedmq
    listing = compose.run("exec", "-T", "alice", "ls", "-A", "/run/fedmq", timeout=120)
    # Then it is her credentials file alone
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == ["alice.json"]
