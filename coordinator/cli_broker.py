"""The command line's security pieces: `fedmq broker provision`, and the TLS and credentials
options that `worker`, `train` and `demo` share.

`--credentials FILE` (written by `fedmq broker provision`) supplies the broker URL and the
topology prefix, unless --broker / --prefix say otherwise. A coordinator started with it
verifies every reply's AMQP user_id, since its workers have credentials too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from broker.provision import COORDINATOR, WORKER, Credentials, load_credentials, provision, write
from broker.settings import BrokerSettings
from broker.topology import QUEUE_TYPES, Topology

DEFAULT_PREFIX = "fedmq"


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--credentials", type=Path, help="a credentials file from `fedmq broker "
                        "provision`: its URL and prefix are used unless --broker / --prefix are given")
    parser.add_argument("--tls-ca", type=Path, help="amqps://: CA certificate (PEM) to verify the broker by")
    parser.add_argument("--tls-cert", type=Path, help="amqps://: client certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="amqps://: the client certificate's private key (PEM)")
    parser.add_argument("--queue-type", choices=QUEUE_TYPES, default="classic", help="classic, or quorum "
                        "for a RabbitMQ cluster; must match how the queues were first declared")
    parser.add_argument("--chunk-timeout", type=float, default=120.0, help="seconds after which a "
                        "chunked message missing pieces is dead-lettered (default 120)")


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    """BrokerSettings from --broker/$FEDMQ_BROKER/--credentials, --prefix and the TLS options."""
    credentials = credentials_of(args)
    url = BrokerSettings.url_from(args.broker or (credentials.url if credentials else None),
                                  default=args.default_broker)
    prefix = args.prefix or (credentials.prefix if credentials else DEFAULT_PREFIX)
    return BrokerSettings(url=url, topology=Topology(prefix, args.queue_type), chunk_size=args.chunk_size,
                          chunk_timeout_s=args.chunk_timeout,
                          tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key)


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
    p.add_argument("--queue-type", choices=QUEUE_TYPES, default="classic",
                   help="classic, or quorum for a RabbitMQ cluster")
    p.add_argument("--endpoint", default="amqp://127.0.0.1:5672",
                   help="where principals connect, written into their files (amqps://host:5671 for TLS)")
    p.add_argument("--out", type=Path, required=True, help="directory for definitions.json and NAME.json files")
    p.add_argument("--apply", metavar="URL", help="POST the definitions to a running broker's "
                   "management API: http(s)://admin:password@host:15672")
    p.set_defaults(run=_provision, log_level="warning")


def _provision(args: argparse.Namespace) -> int:
    workers = [name.strip() for name in args.workers.split(",") if name.strip()]
    if not workers:
        raise ValueError("name at least one worker (--workers alice,bob)")
    provisioned = provision(workers, args.coordinator, args.vhost, args.prefix, args.endpoint, args.queue_type)
    for path in write(args.out, provisioned):
        print(f"wrote {path}")
    if args.apply:
        from broker.admin import apply_definitions

        apply_definitions(args.apply, provisioned.definitions)
        print(f"applied to the broker: vhost {args.vhost!r}, {len(provisioned.credentials)} users")
    return 0
