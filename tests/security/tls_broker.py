"""A RabbitMQ that speaks only TLS and asks for a client certificate, with the test's own PKI.

In order: a `rabbitmq:3-management` container with the certificates and a TLS config mounted
(when a Docker engine answers), else a second RabbitMQ node on this machine started with
`rabbitmq-server` on free ports. With neither, the tests fail saying so: never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions as px

from fedmq.broker.rabbitmq_params import tls_context
from fedmq.broker.settings import BrokerSettings
from tests.conftest import docker_answers
from tests.security.certs import Pki, make_pki

TLS_PORT = 5671
HOST = "localhost"  # mapped container ports and the local node both answer here
START_S = 90.0


def tls_config(certs: str, port: int) -> str:
    return "\n".join([
        "listeners.tcp = none",  # TLS only: a plain amqp:// connection finds nothing
        f"listeners.ssl.default = {port}",
        f"ssl_options.cacertfile = {certs}/ca.pem",
        f"ssl_options.certfile = {certs}/server.pem",
        f"ssl_options.keyfile = {certs}/server.key",
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
        "loopback_users = none", ""])


@contextlib.contextmanager
def tls_broker(directory: Path) -> Iterator[tuple[str, Pki]]:
    """(amqps URL with guest's login, the PKI) of a TLS-only broker, stopped on exit."""
    if docker_answers():
        pki = make_pki(directory / "certs", [HOST, "127.0.0.1"])
        with _container(directory, pki) as url:
            yield url, pki
    elif shutil.which("rabbitmq-server"):
        with _local_node() as started:
            yield started
    else:
        raise RuntimeError("no TLS broker: neither a Docker engine nor rabbitmq-server is available here")


@contextlib.contextmanager
def _container(directory: Path, pki: Pki) -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    config = directory / "20-tls.conf"
    config.write_text(tls_config("/certs", TLS_PORT))
    config.chmod(0o644)
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    container = (DockerContainer("rabbitmq:3-management").with_exposed_ports(TLS_PORT)
                 .with_volume_mapping(str(pki.ca.parent), "/certs", "ro")
                 .with_volume_mapping(str(config), "/etc/rabbitmq/conf.d/20-tls.conf", "ro"))
    container.start()
    try:
        url = f"amqps://guest:guest@{HOST}:{container.get_exposed_port(TLS_PORT)}/"
        _wait_ready(url, pki, lambda: container.get_logs()[0].decode(errors="replace")[-3000:])
        yield url
    finally:
        container.stop()


@contextlib.contextmanager
def _local_node() -> Iterator[tuple[str, Pki]]:
    # Outside pytest's owner-only tmp dirs: the node runs as the rabbitmq user, which must
    # write its data here and read the certificates.
    base = Path(tempfile.mkdtemp(prefix="fedmq-tls-"))
    base.chmod(0o755)
    pki = make_pki(base / "certs", [HOST, "127.0.0.1"])
    with contextlib.suppress(LookupError, PermissionError):
        for path in [base, *base.rglob("*")]:
            shutil.chown(path, "rabbitmq")
    port, dist_port = _free_port(), _free_port()
    (base / "rabbitmq.conf").write_text(tls_config(str(pki.ca.parent), port))
    (base / "enabled_plugins").write_text("[].\n")
    node = f"fedmq-tls-{uuid.uuid4().hex[:8]}@localhost"
    env = {**os.environ, "RABBITMQ_NODENAME": node, "RABBITMQ_NODE_PORT": str(_free_port()),
           "RABBITMQ_DIST_PORT": str(dist_port), "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
           "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
           "RABBITMQ_PID_FILE": str(base / "pid")}
    subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, timeout=60)
    try:
        url = f"amqps://guest:guest@{HOST}:{port}/"
        _wait_ready(url, pki, lambda: "\n".join(p.read_text()[-3000:] for p in (base / "log").glob("*.log")))
        yield url, pki
    finally:
        subprocess.run(["rabbitmqctl", "-n", node, "stop"], env=env, timeout=60, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(url: str, pki: Pki, logs: object) -> None:
    settings = BrokerSettings(url=url, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    params = pika.URLParameters(url)
    params.ssl_options = pika.SSLOptions(tls_context(settings), HOST)
    deadline = time.monotonic() + START_S
    while True:
        try:
            pika.BlockingConnection(params).close()
            return
        except (px.AMQPError, OSError) as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the TLS broker did not answer within {START_S:g}s: {e}\n"
                                   f"{logs() if callable(logs) else ''}") from e
            time.sleep(0.5)



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
