"""`fedmq broker provision` without a broker: definitions, permission regexes, credentials files."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
from pathlib import Path

import pytest

from fedmq.broker.admin import apply_definitions
from fedmq.broker.provision import load_credentials, password_hash, permissions, provision
from fedmq.broker.topology import Topology
from fedmq.coordinator.cli import main
from fedmq.protocol.errors import BrokerError

T = Topology("fl")
NAMES = ["fl.tasks", "fl.replies", "fl.dlx", "fl.dead-letters", "fl.tasks.alice", "fl.tasks.bob",
         "fl.replies.job.alice", "fl.replies.job.bob", "fl.tasksXalice", "other.tasks.alice"]


def _allowed(regex: str) -> set[str]:
    # RabbitMQ's regexes are PCRE; these use nothing Python's re reads differently.
    return {name for name in NAMES if re.search(regex, name)}


def test_a_worker_reads_only_its_queue_writes_only_replies_configures_nothing() -> None:
    # Given alice's provisioned credentials
    alice = provision(["alice", "bob"], "coord", "v", "fl").credentials[0]
    # When her permission regexes are matched against fedmq's names
    granted = permissions(alice, T)
    # Then she may read her task queue and publish to the reply exchange, nothing more: not to the
    # dead-letter exchange, where she could push others' letters out of the bounded queue
    assert _allowed(granted["read"]) == {"fl.tasks.alice"}
    assert _allowed(granted["write"]) == {"fl.replies"}
    assert _allowed(granted["configure"]) == set()


def test_the_coordinator_publishes_tasks_and_reads_and_configures_only_reply_queues() -> None:
    coordinator = provision(["alice"], "coord", "v", "fl").credentials[-1]
    granted = permissions(coordinator, T)
    assert _allowed(granted["configure"]) == {"fl.replies.job.alice", "fl.replies.job.bob"}
    assert _allowed(granted["write"]) == {"fl.tasks", "fl.dlx", "fl.replies.job.alice", "fl.replies.job.bob"}
    assert _allowed(granted["read"]) == {"fl.replies", "fl.replies.job.alice", "fl.replies.job.bob"}


def test_definitions_hold_salted_hashes_of_the_passwords_never_the_passwords() -> None:
    # Given a provisioned federation
    provisioned = provision(["alice", "bob"], "coord", "fedmq", "fl")
    text = json.dumps(provisioned.definitions)
    users = {user["name"]: user for user in provisioned.definitions["users"]}
    # Then each user's hash is RabbitMQ's sha256 of salt + the password in its credentials file
    for credentials in provisioned.credentials:
        assert credentials.password not in text
        raw = base64.b64decode(users[credentials.user]["password_hash"])
        assert raw[4:] == hashlib.sha256(raw[:4] + credentials.password.encode()).digest()
    # And guest is given nothing
    assert "guest" not in {p["user"] for p in provisioned.definitions["permissions"]}


def test_definitions_declare_the_topology_every_worker_needs() -> None:
    definitions = provision(["alice", "bob"], "coord", "fedmq", "fl").definitions
    assert {e["name"]: e["type"] for e in definitions["exchanges"]} == {
        "fl.tasks": "direct", "fl.replies": "direct", "fl.dlx": "fanout", "fl.presence": "fanout"}
    queues = {q["name"]: q["arguments"] for q in definitions["queues"]}
    bounded = {"x-max-length": 100_000, "x-max-length-bytes": 1 << 30, "x-overflow": "drop-head"}
    assert queues == {"fl.dead-letters": bounded, "fl.tasks.alice": {"x-dead-letter-exchange": "fl.dlx"},
                      "fl.tasks.bob": {"x-dead-letter-exchange": "fl.dlx"}}
    assert {(b["source"], b["destination"], b["routing_key"]) for b in definitions["bindings"]} == {
        ("fl.dlx", "fl.dead-letters", ""), ("fl.tasks", "fl.tasks.alice", "alice"), ("fl.tasks", "fl.tasks.bob", "bob")}


def test_the_cli_writes_owner_only_credentials_and_broker_readable_definitions(tmp_path: Path) -> None:
    # When the CLI provisions two workers for an amqps endpoint
    code = main(["broker", "provision", "--workers", "alice,bob", "--vhost", "fed/eu",
                 "--endpoint", "amqps://broker.example:5671", "--out", str(tmp_path / "out")])
    # Then it writes three credentials files readable by their owner only, and the definitions
    # (salted hashes only) readable by the broker's user, in a directory it may enter
    assert code == 0
    files = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert files == ["alice.json", "bob.json", "coordinator.json", "definitions.json"]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "out").iterdir()}
    assert modes == {"alice.json": 0o600, "bob.json": 0o600, "coordinator.json": 0o600, "definitions.json": 0o644}
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) & 0o005 == 0o005
    alice = load_credentials(tmp_path / "out" / "alice.json")
    assert (alice.role, alice.vhost, alice.prefix, alice.coordinator) == ("worker", "fed/eu", "fedmq", "coordinator")
    assert alice.url == f"amqps://alice:{alice.password}@broker.example:5671/fed%2Feu"


@pytest.mark.parametrize("workers, coordinator, message", [
    (["alice", "alice"], "coordinator", "distinct"),
    (["alice"], "alice", "distinct"),
    (["al ice"], "coordinator", "worker name"),
])
def test_bad_names_are_refused(workers: list[str], coordinator: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        provision(workers, coordinator, "v", "fl")


def test_apply_wants_the_management_api_url() -> None:
    with pytest.raises(BrokerError, match="management API"):
        apply_definitions("amqp://guest:guest@127.0.0.1:5672/", {})


def test_a_password_hash_depends_on_its_salt() -> None:
    assert password_hash("pw", b"\0\0\0\1") != password_hash("pw", b"\0\0\0\2")
