"""Shared fixtures: a real RabbitMQ for the integration tests, chosen once per session.

The broker is, in order: $FEDMQ_TEST_BROKER; a throwaway `rabbitmq:3-management` container
(testcontainers) when a Docker engine answers; a RabbitMQ already listening on
127.0.0.1:5672. When none answers the integration tests fail, never skip: a green run must
mean the transport was exercised. Tests that use these fixtures get the `rabbitmq` marker,
so `pytest -m "not rabbitmq"` runs the unit tests alone.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pika
import pytest

from fedmq.broker.rabbit_connection import redact
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology

ENV_URL = "FEDMQ_TEST_BROKER"
IMAGE = "rabbitmq:3-management"
MANAGEMENT_PORT = 15672
LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/"
BROKER_FIXTURES = {"rabbitmq_url", "rabbit_settings", "rabbitmq_admin"}
START_HELP = (
    "Start one: `docker run -d -p 127.0.0.1:5672:5672 rabbitmq:3-management`, or "
    "`rabbitmq-server -detached`, or point "
    f"{ENV_URL} at a broker (amqp://user:pass@host:5672/)."
)
Ctl = Callable[[list[str]], str]  # runs `rabbitmqctl ARGS` next to the broker, returns stdout


@dataclass
class BrokerAdmin:
    """Server-side powers the AMQP protocol lacks: listing queues, closing connections."""

    url: str
    ctl: Ctl | None = None  # rabbitmqctl in the container, or on this machine
    http: str | None = None  # the management API, when it answers

    @property
    def vhost(self) -> str:
        path = urlsplit(self.url).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    def queues(self) -> list[str] | None:
        """Every queue of the vhost, or None when there is no way to list them."""
        if self.ctl is not None:
            return self.ctl(
                ["-q", "list_queues", "-p", self.vhost, "--no-table-headers", "name"]
            ).split()
        if self.http is not None:
            return [
                queue["name"] for queue in self._get(f"/api/queues/{quote(self.vhost, safe='')}")
            ]
        return None

    def close_connections(self, name_part: str) -> int:
        """Close, from the server side, every connection whose client name contains name_part."""
        if self.ctl is not None:
            listing = self.ctl(
                ["-q", "list_connections", "--no-table-headers", "pid", "client_properties"]
            )
            pids = [line.split("\t")[0] for line in listing.splitlines() if name_part in line]
            for pid in pids:
                self.ctl(["close_connection", pid, "closed by the fedmq tests"])
            return len(pids)
        if self.http is not None:
            names = [
                c["name"]
                for c in self._get("/api/connections")
                if name_part in str(c.get("client_properties"))
            ]
            for name in names:
                self._request("DELETE", f"/api/connections/{quote(name, safe='')}")
            return len(names)
        return 0

    def import_definitions(self, definitions: dict[str, Any]) -> None:
        """Load RabbitMQ definitions (users, vhosts, permissions, topology) into the broker."""
        if self.http is not None:
            self._request("POST", "/api/definitions", json.dumps(definitions).encode())
            return
        assert self.ctl is not None, "no way to import definitions into this broker"
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:  # readable by the broker
            json.dump(definitions, f)
            f.flush()
            os.chmod(f.name, 0o644)
            self.ctl(["import_definitions", f.name])
            vhost = definitions["vhosts"][0]["name"]
            for _ in range(100):  # rabbitmqctl imports asynchronously
                if vhost in self.ctl(["-q", "list_vhosts", "--no-table-headers"]).split():
                    return
                time.sleep(0.1)

    def delete_users_and_vhost(self, users: list[str], vhost: str) -> None:
        for user in users:
            if self.ctl is not None:
                self.ctl(["delete_user", user])
            else:
                self._request("DELETE", f"/api/users/{quote(user, safe='')}")
        if self.ctl is not None:
            self.ctl(["delete_vhost", vhost])
        else:
            self._request("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")

    def _get(self, path: str) -> list[dict[str, Any]]:
        return json.loads(self._request("GET", path))  # type: ignore[no-any-return]

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        parts = urlsplit(self.url)
        token = base64.b64encode(
            f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
        )
        request = urllib.request.Request(
            f"{self.http}{path}",
            data=body,
            method=method,
            headers={"Authorization": f"Basic {token.decode()}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read()  # type: ignore[no-any-return]


ADMIN = pytest.StashKey[BrokerAdmin]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"fedmq integration broker: {_plan()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.rabbitmq)


@pytest.fixture(scope="session")
def rabbitmq_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The AMQP URL of a live broker for this session (see the module docstring)."""
    tried = []
    if os.environ.get(ENV_URL):
        url = os.environ[ENV_URL]
        yield from _use(request, url, f"{ENV_URL}={redact(url)}", _admin_for(url))
        return
    if docker_answers():
        container, problem = _start_container()
        if container is not None:
            url = _container_url(container)
            try:
                yield from _use(
                    request,
                    url,
                    f"testcontainers {IMAGE} at {redact(url)}",
                    _container_admin(url, container),
                )
            finally:
                container.stop()
            return
        tried.append(f"a {IMAGE} container (Docker answered, but: {problem})")
    else:
        tried.append("a testcontainers RabbitMQ (no Docker engine answered)")
    if _answers("127.0.0.1", 5672):
        yield from _use(
            request, LOCAL_URL, f"local broker at {redact(LOCAL_URL)}", _admin_for(LOCAL_URL)
        )
        return
    tried.append("127.0.0.1:5672 (nothing listening)")
    pytest.fail(
        f"no RabbitMQ for the integration tests. Tried ${ENV_URL} (unset), {', '.join(tried)}. {START_HELP}"
    )


@pytest.fixture
def rabbitmq_admin(request: pytest.FixtureRequest, rabbitmq_url: str) -> BrokerAdmin:
    """Server-side operations on the session's broker (closing connections, listing queues)."""
    return request.config.stash[ADMIN]


@pytest.fixture
def rabbit_settings(rabbitmq_url: str, rabbitmq_admin: BrokerAdmin) -> Iterator[BrokerSettings]:
    """Settings with a fresh topology prefix; every queue and exchange under it is deleted after."""
    topology = Topology(prefix=f"test-{uuid.uuid4().hex[:12]}")
    yield BrokerSettings(url=rabbitmq_url, topology=topology)
    _delete_topology(rabbitmq_url, topology, rabbitmq_admin)


def _use(request: pytest.FixtureRequest, url: str, how: str, admin: BrokerAdmin) -> Iterator[str]:
    request.config.stash[ADMIN] = admin
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # else it lands in the first test's output
            reporter.write_line(f"\nfedmq integration broker: {how}")
    yield url


def _delete_topology(url: str, topology: Topology, admin: BrokerAdmin) -> None:
    prefix = f"{topology.prefix}."
    queues = [
        name for name in admin.queues() or [topology.dead_letter_queue] if name.startswith(prefix)
    ]
    exchanges = [topology.task_exchange, topology.reply_exchange, topology.dead_letter_exchange]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)  # idempotent on RabbitMQ
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@functools.cache
def docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - no client, no socket, no daemon: all mean "no Docker"
        return False


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _plan() -> str:
    """Which broker the session would use, without starting anything."""
    if os.environ.get(ENV_URL):
        return f"{ENV_URL}={redact(os.environ[ENV_URL])}"
    if docker_answers():
        return f"testcontainers {IMAGE} (started on first use)"
    if _answers("127.0.0.1", 5672):
        return f"local broker at {redact(LOCAL_URL)}"
    return f"none answers: integration tests will fail. {START_HELP}"


def _start_container() -> tuple[Any, str]:
    # The reaper image may be unreachable, and mapped ports are on localhost here; CI may not
    # have sourced ../shared/docker/env.sh, so default them before testcontainers reads them.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "localhost")
    try:
        try:
            from testcontainers.community.rabbitmq import RabbitMqContainer
        except ImportError:  # testcontainers before 4.14
            from testcontainers.rabbitmq import RabbitMqContainer
        # The management API too: provisioning tests apply definitions through it.
        return RabbitMqContainer(IMAGE).with_exposed_ports(MANAGEMENT_PORT).start(), ""
    except Exception as e:  # noqa: BLE001 - reported in the failure message if nothing else answers
        return None, f"{type(e).__name__}: {e}"


def _container_url(container: Any) -> str:
    params = container.get_connection_params()
    return f"amqp://{container.username}:{container.password}@{params.host}:{params.port}/"


def _container_admin(url: str, container: Any) -> BrokerAdmin:
    def ctl(args: list[str]) -> str:
        exit_code, output = container.exec(["rabbitmqctl", *args])
        if exit_code != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed: {output.decode(errors='replace')}"
            )
        return str(output.decode())

    try:
        http = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(MANAGEMENT_PORT)}"
    except (OSError, ValueError, RuntimeError):
        return BrokerAdmin(url, ctl=ctl)
    for _ in range(60):  # the management listener may open a moment after AMQP's
        try:
            BrokerAdmin(url, http=http)._get("/api/vhosts")
            return BrokerAdmin(url, ctl=ctl, http=http)
        except (OSError, ValueError):
            time.sleep(0.5)
    return BrokerAdmin(url, ctl=ctl)  # no management plugin: rabbitmqctl still does the rest


def _admin_for(url: str) -> BrokerAdmin:
    """rabbitmqctl when the broker runs on this machine and answers it; else the management API."""
    host = urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") and shutil.which("rabbitmqctl"):
        admin = BrokerAdmin(url, ctl=_local_ctl)
        try:
            admin.queues()
            return admin
        except (OSError, subprocess.SubprocessError):
            pass
    http = f"http://{host}:15672"
    admin = BrokerAdmin(url, http=http)
    try:
        admin._get("/api/queues")
        return admin
    except (OSError, ValueError):
        return BrokerAdmin(url)


def _local_ctl(args: list[str]) -> str:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout
