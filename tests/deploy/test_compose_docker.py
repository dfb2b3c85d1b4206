"""The top-level docker-compose.yml, run for real: image built, broker provisioned, three
workers and the coordinator in containers, three rounds, ended by the coordinator.

The project comes up next to a listener on 127.0.0.1:5672 (the machine's own RabbitMQ, or one
this module opens), leaves the AMQP port to its default and pins the management UI to a free
port: published ports must be on loopback and must not need 5672.

Needs a Docker engine with Compose (here: ../shared/docker/up.sh). Without one the tests are
skipped with the reason shown in pytest's summary (`-ra`), never reported as passed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
RUN_TIMEOUT_S = 600  # a cold image build plus three rounds; a hang fails instead of blocking CI
AMQP_DEFAULT_PORT = 5672
UI_WAIT_S = 120  # the management listener may open a little after AMQP (the healthcheck's port)


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


def _occupy_default_amqp_port(stack: ExitStack) -> None:
    """Make sure something listens on 127.0.0.1:5672, as on a machine with its own RabbitMQ."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", AMQP_DEFAULT_PORT))
    except OSError:
        listener.close()  # taken already: the situation we want
        return
    listener.listen()
    stack.callback(listener.close)


class Compose:
    """One compose project with its own name, image tag and runs directory. The port variables
    are left to the compose file's defaults except the management UI's, pinned to a free port."""

    def __init__(self, runs: Path) -> None:
        command = _compose_command()
        assert command is not None
        self.project = f"fedmqtest{uuid.uuid4().hex[:8]}"
        self.base = [*command, "-p", self.project, "-f", str(ROOT / "docker-compose.yml")]
        self.image = f"fedmq:{self.project}"
        self.ui_port = _free_port()
        inherited = {k: v for k, v in os.environ.items()
                     if k not in ("FEDMQ_AMQP_PORT", "FEDMQ_BIND_ADDRESS")}
        self.env = {**inherited, "FEDMQ_IMAGE": self.image, "FEDMQ_RUNS": str(runs),
                    "FEDMQ_ROUNDS": str(ROUNDS), "FEDMQ_UID": str(os.getuid()),
                    "FEDMQ_MANAGEMENT_PORT": str(self.ui_port)}

    def run(self, *args: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def ensure_up(self) -> None:
        """provision, rabbitmq and alice running (a no-op when they are: tests run in any order)."""
        up = self.run("up", "-d", "--no-build", "alice")
        assert up.returncode == 0, f"compose up failed:\n{up.stderr[-3000:]}\n{self.logs()}"

    def published(self, container_port: int) -> tuple[str, int]:
        """(host address, host port) where the broker's container port is published."""
        answer = self.run("port", "rabbitmq", str(container_port), timeout=120)
        assert answer.returncode == 0, answer.stderr
        host, _, port = answer.stdout.strip().rpartition(":")
        return host, int(port)

    def running_containers(self) -> list[str]:
        listing = subprocess.run(["docker", "ps", "-q", "--filter",
                                  f"label=com.docker.compose.project={self.project}"],
                                 capture_output=True, text=True, timeout=120)
        return listing.stdout.split()

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
    with ExitStack() as stack:
        stack.callback(subprocess.run, ["docker", "image", "rm", "-f", project.image],
                       capture_output=True, timeout=120)
        stack.callback(project.run, "down", "-v", "--remove-orphans", timeout=300)
        _occupy_default_amqp_port(stack)
        project.ensure_up()
        yield project


def test_published_ports_are_on_loopback_and_clear_of_5672(compose: Compose) -> None:
    # Given the project up next to a listener on 127.0.0.1:5672, AMQP's host port left to the
    # default and the management UI's pinned to a free non-default port
    compose.ensure_up()
    # When we ask compose where the broker's ports are published
    amqp = compose.published(5672)
    ui = compose.published(15672)
    # Then both listen on 127.0.0.1 only, AMQP on a port Docker picked, the UI on the pinned one
    assert amqp[0] == "127.0.0.1" and amqp[1] != AMQP_DEFAULT_PORT, amqp
    assert ui == ("127.0.0.1", compose.ui_port), ui
    # And the management API answers there (401: it wants a login)
    assert _http_status(f"http://127.0.0.1:{compose.ui_port}/api/overview") == 401


def _http_status(url: str) -> int:
    """The HTTP status at url, waiting up to UI_WAIT_S for the listener to open."""
    deadline = time.monotonic() + UI_WAIT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, ConnectionError) as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing answers at {url}: {error}") from error
            time.sleep(1)


def test_the_default_guest_login_is_refused(compose: Compose) -> None:
    # Given the running compose broker, whose users come only from the provisioned definitions
    compose.ensure_up()
    import pika

    host, port = compose.published(5672)
    # When guest/guest tries to log in over AMQP from the host, on the published port
    url = f"amqp://guest:guest@{host}:{port}/%2F"
    # Then the broker refuses it
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(url))


def test_a_worker_container_holds_only_its_own_credentials(compose: Compose) -> None:
    # Given alice's running container
    compose.ensure_up()
    # When we list what it has mounted at /run/fedmq
    listing = compose.run("exec", "-T", "alice", "ls", "-A", "/run/fedmq", timeout=120)
    # Then it is her credentials file alone
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == ["alice.json"]


def test_up_exit_code_from_coordinator_trains_then_stops_everything(compose: Compose) -> None:
    # Given the project (provision, broker and alice may be up already, as after `up -d`)
    # When `up --exit-code-from coordinator` runs in the foreground, as the README says
    up = compose.run("up", "--no-build", "--exit-code-from", "coordinator")
    output = f"{up.stdout[-6000:]}\n{up.stderr[-3000:]}"
    # Then it returns once the coordinator is done, with the coordinator's exit code, 0
    assert up.returncode == 0, output
    coordinator = compose.run("ps", "-q", "coordinator").stdout.strip()
    code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", coordinator],
                          capture_output=True, text=True, timeout=120).stdout.strip()
    assert code == "0", output
    # And no container of the project is left running: not the workers, broker or provision
    assert compose.running_containers() == [], compose.run("ps").stdout
    # And the metrics show the three rounds, every worker answering, accuracy rising
    metrics = Path(compose.env["FEDMQ_RUNS"]) / "metrics.jsonl"
    assert metrics.exists(), output
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    assert [row["round"] for row in rows] == list(range(1, ROUNDS + 1)), output
    assert all(row["replies"] == 3 for row in rows), rows
    assert rows[-1]["eval_accuracy"] > rows[0]["eval_accuracy"], rows
    assert (Path(compose.env["FEDMQ_RUNS"]) / "checkpoints").is_dir()
