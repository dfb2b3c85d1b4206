"""Provisioning for `docker compose`: one directory per principal, idempotent.

    python -m fedmq.broker.provision_volumes --workers alice,bob,carol --coordinator coordinator \
        --endpoint amqp://rabbitmq:5672 --out /deploy --owner 10001

writes `/deploy/broker/definitions.json` (loaded by RabbitMQ at boot) and `/deploy/NAME/NAME.json`
for each principal. Each directory is meant to be its own volume, so a container mounts only its
own credentials. It runs at every `docker compose up`: a principal whose file already exists keeps
its password (running workers and saved URLs stay valid), new names get fresh ones, and the
definitions are rewritten from the union, so adding a worker is adding its name.

The definitions hold only salted hashes and are made world-readable: the broker image runs as a
user whose id differs between images (999 official, 101 elsewhere). Credentials files are 0600,
owned by `--owner` (the fedmq image's uid), in 0700 directories.

For a cluster (compose/cluster.yml): `--queue-type quorum` declares every provisioned queue as a
quorum queue and writes the type into the credentials files; `--erlang-cookie` writes
`broker/erlang.cookie` once (0600, root's), the secret the nodes share to cluster. Beside the
definitions, `broker/access.json` holds them without queues (users, vhost, permissions,
exchanges): each node loads that at boot, so no node ever has a `guest` user, while the queues
are imported once, after every node has joined, so each gets a replica on every node.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from dataclasses import replace
from pathlib import Path

from fedmq.broker.provision import (
    COORDINATOR,
    DEFINITIONS_FILE,
    WORKER,
    Credentials,
    definitions,
    load_credentials,
    login_url,
    password_hash,
)
from fedmq.broker.topology import QueueType, Topology
from fedmq.protocol.names import check_name

BROKER_DIR = "broker"
ADMIN = "admin"  # the management UI's login; its file stays in the broker's directory
ACCESS_FILE = "access.json"  # the definitions less queues and bindings (module doc)
COOKIE_FILE = "erlang.cookie"


def provision_dirs(out: Path, workers: list[str], coordinator: str, vhost: str, prefix: str,
                   endpoint: str, owner: int | None = None, coordinator_owner: int | None = None,
                   queue_type: QueueType = QueueType.CLASSIC) -> dict[str, Credentials]:
    """Credentials of every principal (existing ones kept) and the definitions, under `out`."""
    names = [check_name("worker", name) for name in workers]
    check_name("coordinator", coordinator)
    if len(set(names + [coordinator, ADMIN])) != len(names) + 2:
        raise ValueError(f"worker and coordinator names must be distinct and not {ADMIN!r}")
    roles = [(name, WORKER) for name in names] + [(coordinator, COORDINATOR)]
    kept = {name: replace(_credentials(out / name / f"{name}.json", name, role, vhost, prefix, endpoint,
                                       coordinator), queue_type=queue_type)
            for name, role in roles}
    for name, role in roles:
        uid = coordinator_owner if role == COORDINATOR and coordinator_owner is not None else owner
        _save(out / name, f"{name}.json", kept[name].to_json(), uid)
    admin = _credentials(out / BROKER_DIR / f"{ADMIN}.json", ADMIN, COORDINATOR, vhost, prefix, endpoint,
                         coordinator)
    document = definitions(list(kept.values()), names, Topology(prefix, queue_type), vhost)
    # A monitoring login for the management UI on :15672 (read-only views, no vhost rights).
    document["users"].append({"name": ADMIN, "password_hash": password_hash(admin.password),
                              "hashing_algorithm": "rabbit_password_hashing_sha256",
                              "tags": ["monitoring"]})
    broker = out / BROKER_DIR
    _save(broker, f"{ADMIN}.json", admin.to_json(), None)
    _save(broker, DEFINITIONS_FILE, json.dumps(document, indent=2) + "\n", None, public=True)
    access = {key: value for key, value in document.items() if key not in ("queues", "bindings")}
    _save(broker, ACCESS_FILE, json.dumps(access, indent=2) + "\n", None, public=True)
    return kept


def ensure_cookie(out: Path) -> Path:
    """The cluster's Erlang cookie under `out`/broker, made once and kept: a node whose cookie
    differs cannot rejoin. Root's, 0600; the broker's entry point installs it for its user."""
    path = out / BROKER_DIR / COOKIE_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{COOKIE_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        os.replace(tmp, path)
    return path


def _credentials(path: Path, name: str, role: str, vhost: str, prefix: str, endpoint: str,
                 coordinator: str) -> Credentials:
    """The file's credentials when it is for this name, role, vhost and prefix; else fresh ones."""
    if path.exists():
        try:
            old = load_credentials(path)
        except ValueError:
            old = None
        if old is not None and (old.user, old.role, old.vhost, old.prefix) == (name, role, vhost, prefix):
            return replace(old, url=login_url(endpoint, name, old.password, vhost), coordinator=coordinator)
    password = secrets.token_urlsafe(24)
    return Credentials(name, password, role, vhost, prefix, login_url(endpoint, name, password, vhost),
                       coordinator)


def _save(directory: Path, name: str, text: str, owner: int | None, public: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"  # never a half-written file for a container starting now
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644 if public else 0o600)
    os.chmod(directory, 0o755 if public else 0o700)
    if owner is not None:
        os.chown(tmp, owner, owner)
        os.chown(directory, owner, owner)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fedmq.broker.provision_volumes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", required=True, help="comma-separated worker names")
    parser.add_argument("--coordinator", default="coordinator")
    parser.add_argument("--vhost", default="fedmq")
    parser.add_argument("--prefix", default="fedmq")
    parser.add_argument("--endpoint", default="amqp://rabbitmq:5672")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--owner", type=int, help="uid that owns the credentials files")
    parser.add_argument("--coordinator-owner", type=int, help="uid for the coordinator's file "
                        "(the coordinator may run as the host user, to write a bind-mounted runs/)")
    parser.add_argument("--queue-type", type=QueueType, choices=list(QueueType), default=QueueType.CLASSIC,
                        help="classic, or quorum for a cluster (written into the credentials files)")
    parser.add_argument("--erlang-cookie", action="store_true", help="also write broker/erlang.cookie "
                        "(kept once written), the secret a cluster's nodes share")
    args = parser.parse_args(argv)
    workers = [name.strip() for name in args.workers.split(",") if name.strip()]
    kept = provision_dirs(args.out, workers, args.coordinator, args.vhost, args.prefix,
                          args.endpoint, args.owner, args.coordinator_owner, args.queue_type)
    if args.erlang_cookie:
        ensure_cookie(args.out)
    print(f"provisioned {', '.join(kept)} on vhost {args.vhost!r} into {args.out}")


if __name__ == "__main__":
    main()
