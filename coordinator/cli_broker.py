"""The command line's security pieces: `fedmq broker provision`, and the TLS and credentials
options that `worker`, `train` and `demo` share.

`--credentials FILE` (written by `fedmq broker provision`) supplies the broker URL and the
topology prefix, unless --broker / --prefix say otherwise. A coordinator started with it
verifies every reply's AMQP user_id, since its workers have credentials too; a worker started
with it runs tasks and commands only from the provisioned coordinator and --task-senders.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedmq.broker.provision import (
    COORDINATOR,
    DEFINITIONS_FILE,
    WORKER,
    Credentials,
    load_credentials,
    provision,
    write,
)
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.addresses import join_broker_urls
from fedmq.broker.topology import QueueType, Topology

DEFAULT_PREFIX = "fedmq"


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--credentials", type=Path, help="a credentials file from `fedmq broker "
                        "provision`: its URL and prefix are used unless --broker / --prefix are given")
    parser.add_argument("--tls-ca", type=Path, help="amqps://: CA certificate (PEM) to verify the broker by")
    parser.add_argument("--tls-cert", type=Path, help="amqps://: client certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="amqps://: the client certificate's private key (PEM)")
    parser.add_argument("--queue-type", type=QueueType, choices=list(QueueType), help="classic, or quorum "
                        "for a RabbitMQ cluster; must match how the queues were first declared (default: "
                        "the --credentials file's, else classic)")
    parser.add_argument("--chunk-timeout", type=float, default=120.0, help="seconds after which a "
                        "chunked message missing pieces is dead-lettered (default 120)")
    parser.add_argument("--max-deliveries", type=int, default=5, help="a message delivered this many "
                        "times without being acked (its consumer died handling it) is dead-lettered as "
                        "poison on the next delivery (default 5; counted by the broker on quorum queues, "
                        "by the process on classic ones)")


def add_worker_security_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-senders", default="", help="comma-separated AMQP users whose tasks and "
                        "commands this worker runs, besides the coordinator of its --credentials file; "
                        "anything else is dead-lettered unread (default without credentials: anyone)")


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    """BrokerSettings from --broker/$FEDMQ_BROKER/--credentials, --prefix and the TLS options."""
    credentials = credentials_of(args)
    flag = join_broker_urls(args.broker) if args.broker else None  # --broker may be repeated
    url = BrokerSettings.url_from(flag or (credentials.url if credentials else None),
                                  default=args.default_broker)
    prefix = args.prefix or (credentials.prefix if credentials else DEFAULT_PREFIX)
    queue_type = args.queue_type or (credentials.queue_type if credentials else QueueType.CLASSIC)
    return BrokerSettings(url=url, topology=Topology(prefix, queue_type), chunk_size=args.chunk_size,
                          chunk_timeout_s=args.chunk_timeout, max_deliveries=args.max_deliveries,
                          verify_senders=bool(getattr(args, "verify_senders", False))
                          or (credentials is not None and credentials.role == COORDINATOR),
                          task_senders=task_senders(args) if hasattr(args, "task_senders") else None,
                          tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                          spill_dir=getattr(args, "spill_dir", None))


def credentials_of(args: argparse.Namespace, role: str | None = None) -> Credentials | None:
    """The --credentials file's contents (None without one); ValueError if it is not for `role`."""
    if getattr(args, "credentials", None) is None:
        return None
    credentials = load_credentials(args.credentials)
    if role is not None and credentials.role != role:
        raise ValueError(f"{args.credentials} holds {credentials.role} credentials, not {role} ones")
    return credentials


def check_worker_credentials(args: argparse.Namespace) -> None:
    """A worker's user must be its --id: the coordinator matches replies' user_id to worker names."""
    credentials = credentials_of(args, WORKER)
    if credentials is not None and credentials.user != args.id:
        raise ValueError(f"{args.credentials} is for worker {credentials.user!r}, not --id {args.id!r}")


def task_senders(args: argparse.Namespace) -> frozenset[str] | None:
    """Whose tasks a worker runs: the provisioned coordinator and --task-senders; None (anyone)
    without credentials or --task-senders. ValueError when credentials name no coordinator."""
    listed = {name.strip() for name in args.task_senders.split(",") if name.strip()}
    credentials = credentials_of(args, WORKER)
    if credentials is None:
        return frozenset(listed) or None
    if not credentials.coordinator and not listed:
        raise ValueError(f"{args.credentials} names no coordinator (written by an older fedmq): run "
                         f"`fedmq broker provision` again, or pass --task-senders COORDINATOR_USER")
    return frozenset(listed | ({credentials.coordinator} - {""}))


def verify_senders(args: argparse.Namespace) -> bool:
    """Whether the coordinator holds replies to their user_id: asked for, or credentials in use."""
    return bool(args.verify_senders) or credentials_of(args, COORDINATOR) is not None


def add_broker_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    broker = commands.add_parser("broker", help="set up a RabbitMQ for fedmq")
    actions = broker.add_subparsers(required=True, metavar="ACTION")
    p = actions.add_parser("provision", help="write definitions (users, permissions, topology) and "
                           "one credentials file per principal")
    p.add_argument("--workers", required=True, help="comma-separated worker names (= their usernames)")
    p.add_argument("--coordinator", default="coordinator", help="the coordinator's username")
    p.add_argument("--vhost", default="fedmq", help="virtual host (default fedmq)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="prefix of exchange and queue names")
    p.add_argument("--queue-type", type=QueueType, choices=list(QueueType), default=QueueType.CLASSIC,
                   help="classic, or quorum for a RabbitMQ cluster (written into the credentials files)")
    p.add_argument("--endpoint", default="amqp://127.0.0.1:5672",
                   help="where principals connect, written into their files (amqps://host:5671 for TLS; "
                   "a cluster's nodes: amqp://h1:5672,h2:5672,h3:5672)")
    p.add_argument("--out", type=Path, required=True, help="directory for definitions.json (mode 0644: "
                   "it holds only salted hashes, and the broker's user must read it) and one NAME.json "
                   "credentials file per principal (mode 0600: plain passwords)")
    p.add_argument("--apply", metavar="URL", help="POST the definitions to a running broker's "
                   "management API, http(s)://admin:password@host:15672; needs the management plugin "
                   "(rabbitmq-plugins enable rabbitmq_management). Without it, on the broker's machine: "
                   "rabbitmqctl import_definitions OUT/definitions.json")
    p.set_defaults(run=_provision, log_level="warning")


def _provision(args: argparse.Namespace) -> int:
    workers = [name.strip() for name in args.workers.split(",") if name.strip()]
    if not workers:
        raise ValueError("name at least one worker (--workers alice,bob)")
    provisioned = provision(workers, args.coordinator, args.vhost, args.prefix, args.endpoint, args.queue_type)
    for path in write(args.out, provisioned):
        print(f"wrote {path} (mode {path.stat().st_mode & 0o777:04o})")
    if args.apply:
        from fedmq.broker.admin import apply_definitions

        apply_definitions(args.apply, provisioned.definitions)
        print(f"applied to the broker: vhost {args.vhost!r}, {len(provisioned.credentials)} users")
    else:
        print(f"apply with: rabbitmqctl import_definitions {args.out / DEFINITIONS_FILE} (on the broker's "
              f"machine), or --apply URL with the management plugin")
        if not args.out.resolve().stat().st_mode & 0o001:
            print(f"note: other users may not enter {args.out}: copy {DEFINITIONS_FILE} where the "
                  f"broker's user can read it before importing")
    return 0
