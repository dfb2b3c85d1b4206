"""Provisioning a broker for one federation: users, permissions and topology as RabbitMQ
definitions, and one credentials file per principal.

Username == worker name, so the coordinator can hold each reply's AMQP user_id (which RabbitMQ
verifies against the connection) to the worker it answers for. Permissions follow fedmq's names
(RabbitMQ checks writes on the exchange, reads on the queue, configure on what is declared):

| principal   | configure             | write                                 | read                     |
| ----------- | --------------------- | ------------------------------------- | ------------------------ |
| worker w    | nothing               | {p}.replies, {p}.presence             | {p}.tasks.w              |
| coordinator | {p}.replies.<job>.<w> | {p}.tasks, {p}.dlx, {p}.replies.<...> | {p}.replies, its queues  |

A worker may not write the dead-letter exchange: it could flood the bounded dead-letter queue
and push out others' letters, or forge their reasons. Its dead letters go through the broker:
it rejects them, and its task queue's dead-letter exchange moves them (reason "rejected"; the
worker logs its own reason).

The definitions declare the exchanges, the dead-letter queue and every worker's task queue, so
workers need no configure permission; clients check these passively (broker.rabbitmq_topology).
Reply queues are per job: the coordinator declares and deletes them. No password is stored
here, only RabbitMQ's salted SHA-256 hash; the plain passwords go to the credentials files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fedmq.broker.addresses import split_url
from fedmq.broker.topology import QueueType, Topology
from fedmq.protocol.names import check_name

DEFINITIONS_FILE = "definitions.json"
HASHING = "rabbit_password_hashing_sha256"
WORKER, COORDINATOR = "worker", "coordinator"


@dataclass(frozen=True)
class Credentials:
    """One principal's login: what `--credentials FILE` reads."""

    user: str
    password: str
    role: str  # "worker" or "coordinator"
    vhost: str
    prefix: str
    url: str  # amqp(s)://user:password@host:port/vhost
    # The provisioned coordinator: the user whose tasks a worker runs (files of older fedmq
    # versions lack it; the worker then needs --task-senders).
    coordinator: str = ""
    # How the provisioned queues were declared: a client must declare them alike (RabbitMQ
    # refuses a mismatch), so the file says it and --queue-type need not. Older files: classic.
    queue_type: QueueType = QueueType.CLASSIC

    def save(self, path: Path) -> Path:
        _write_private(path, self.to_json())
        return path

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "queue_type": self.queue_type.value}, indent=2) + "\n"


def load_credentials(path: Path) -> Credentials:
    """The credentials in `path`; ValueError saying what is wrong with the file."""
    try:
        data = json.loads(path.read_text())
        optional = {"coordinator": "", "queue_type": QueueType.CLASSIC.value}
        fields = {key: str(data[key] if key not in optional else data.get(key, optional[key]))
                  for key in Credentials.__dataclass_fields__}
        credentials = Credentials(**{**fields, "queue_type": QueueType(fields["queue_type"])})  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read credentials file {path}: {e}") from e
    if credentials.role not in (WORKER, COORDINATOR):
        raise ValueError(f"credentials file {path}: role must be worker or coordinator")
    return credentials


@dataclass(frozen=True)
class Provisioned:
    definitions: dict[str, Any]
    credentials: list[Credentials]


def provision(workers: list[str], coordinator: str, vhost: str, prefix: str,
              endpoint: str = "amqp://127.0.0.1:5672",
              queue_type: QueueType = QueueType.CLASSIC) -> Provisioned:
    """Definitions and fresh credentials for `workers` and `coordinator` on `vhost`."""
    names = [check_name("worker", name) for name in workers]
    check_name("coordinator", coordinator)
    if len(set(names + [coordinator])) != len(names) + 1:
        raise ValueError("worker and coordinator names must be distinct")
    if not vhost:
        raise ValueError("--vhost must not be empty")
    topology = Topology(prefix, queue_type)
    roles = [(name, WORKER) for name in names] + [(coordinator, COORDINATOR)]
    credentials = []
    for name, role in roles:
        password = secrets.token_urlsafe(24)
        url = login_url(endpoint, name, password, vhost)
        credentials.append(Credentials(name, password, role, vhost, prefix, url, coordinator, queue_type))
    return Provisioned(definitions(credentials, names, topology, vhost), credentials)


def definitions(credentials: list[Credentials], workers: list[str], topology: Topology,
                vhost: str) -> dict[str, Any]:
    """RabbitMQ's definitions document (`rabbitmqctl import_definitions`, POST /api/definitions)."""
    exchanges = [(topology.task_exchange, "direct"), (topology.reply_exchange, "direct"),
                 (topology.dead_letter_exchange, "fanout"), (topology.presence_exchange, "fanout")]
    queues: list[tuple[str, dict[str, object]]] = [(topology.dead_letter_queue, topology.dead_letter_queue_arguments())] + [
        (topology.task_queue(worker), topology.task_queue_arguments()) for worker in workers]
    bindings = [(topology.dead_letter_exchange, topology.dead_letter_queue, "")] + [
        (topology.task_exchange, topology.task_queue(worker), worker) for worker in workers]
    return {
        "users": [{"name": c.user, "password_hash": password_hash(c.password),
                   "hashing_algorithm": HASHING, "tags": []} for c in credentials],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": c.user, "vhost": vhost, **permissions(c, topology)} for c in credentials],
        "exchanges": [{"name": name, "vhost": vhost, "type": kind, "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}} for name, kind in exchanges],
        "queues": [{"name": name, "vhost": vhost, "durable": True, "auto_delete": False,
                    "arguments": arguments} for name, arguments in queues],
        "bindings": [{"source": source, "vhost": vhost, "destination": queue, "destination_type": "queue",
                      "routing_key": key, "arguments": {}} for source, queue, key in bindings],
    }


def permissions(credentials: Credentials, topology: Topology) -> dict[str, str]:
    """The configure/write/read regexes of one principal (see the module's table)."""
    p = re.escape(topology.prefix)
    if credentials.role == WORKER:
        return {"configure": "^$", "write": rf"^{p}\.(replies|presence)$",
                "read": rf"^{p}\.tasks\.{re.escape(credentials.user)}$"}
    # `fedmq status` (run with the coordinator's file) watches presence through a server-named,
    # exclusive queue (amq.gen-*): configure to declare it, write to bind it, read to consume it
    # and to bind it to {p}.presence. Exclusive queues are invisible to other connections.
    gen = r"^amq\.gen-.*$"
    return {"configure": rf"^{p}\.replies\..+$|{gen}",
            "write": rf"^{p}\.(tasks|dlx|presence)$|^{p}\.replies\..+$|{gen}",
            "read": rf"^{p}\.(replies|presence)(\..+)?$|{gen}"}


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def login_url(endpoint: str, user: str, password: str, vhost: str) -> str:
    """`endpoint` (amqp[s]://host:port, or a cluster's amqp://h1:5672,h2:5672,h3:5672) with the
    login and the vhost filled in."""
    usage = (f"--endpoint must look like amqp://host:5672, amqps://host:5671 or "
             f"amqp://h1:5672,h2:5672 (a cluster), got {endpoint!r}")
    try:
        split = split_url(endpoint)
    except ValueError as e:
        raise ValueError(usage) from e
    if split.scheme not in ("amqp", "amqps") or not all(urlsplit(f"//{h}").hostname for h in split.hosts):
        raise ValueError(usage)
    login = f"{quote(user, safe='')}:{quote(password, safe='')}"
    query = split.tail[split.tail.index("?"):] if "?" in split.tail else ""  # e.g. ?heartbeat=10
    return replace(split, userinfo=login, tail="/" + quote(vhost, safe="") + query).url(split.hosts)


def write(out: Path, provisioned: Provisioned) -> list[Path]:
    """The definitions file, 0644 in a 0755 directory: `rabbitmqctl import_definitions` reads it as
    the broker's user, and it holds only salted hashes. One credentials file per principal, 0600:
    they hold plain passwords."""
    if not out.exists():
        out.mkdir(parents=True)
        os.chmod(out, 0o755)  # whatever the umask: the broker's user must enter it
    definitions_text = json.dumps(provisioned.definitions, indent=2) + "\n"
    written = [_write_private(out / DEFINITIONS_FILE, definitions_text, mode=0o644)]
    written += [c.save(out / f"{c.user}.json") for c in provisioned.credentials]
    return written


def _write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)  # an existing file keeps its old mode through O_CREAT
    return path
