"""Provisioning for the cluster compose file (broker.provision_volumes), no Docker needed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from fedmq.broker.addresses import broker_addresses
from fedmq.broker.provision import load_credentials
from fedmq.broker.provision_volumes import main

CLUSTER = "amqp://rabbit-1:5672,rabbit-2:5672,rabbit-3:5672"


def _provision(out: Path) -> None:
    main(["--workers", "alice,bob", "--out", str(out), "--endpoint", CLUSTER,
          "--queue-type", "quorum", "--erlang-cookie"])


def test_a_cluster_is_provisioned_with_quorum_queues_all_nodes_and_a_private_cookie(tmp_path: Path) -> None:
    # When the compose cluster's provision step runs
    _provision(tmp_path)
    broker = tmp_path / "broker"
    # Then every provisioned queue is a quorum queue
    full = json.loads((broker / "definitions.json").read_text())
    assert full["queues"] and all(q["arguments"]["x-queue-type"] == "quorum" for q in full["queues"])
    # And the file each node loads at boot holds the logins and exchanges but no queue, so no
    # queue is created before every node has joined (it would have a replica on one node only)
    access = json.loads((broker / "access.json").read_text())
    assert "queues" not in access and "bindings" not in access
    assert {u["name"] for u in access["users"]} == {u["name"] for u in full["users"]}
    assert access["exchanges"] == full["exchanges"]
    # And alice's credentials name all three nodes and quorum queues
    alice = load_credentials(tmp_path / "alice" / "alice.json")
    assert [a.rpartition("@")[2] for a in broker_addresses(alice.url)] == [
        "rabbit-1:5672/fedmq", "rabbit-2:5672/fedmq", "rabbit-3:5672/fedmq"]
    assert alice.queue_type.value == "quorum"
    # And the Erlang cookie is readable by its owner alone
    cookie = broker / "erlang.cookie"
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o600 and len(cookie.read_text()) == 64


def test_provisioning_again_keeps_the_cookie_and_the_passwords(tmp_path: Path) -> None:
    # Given a provisioned cluster
    _provision(tmp_path)
    cookie = (tmp_path / "broker" / "erlang.cookie").read_text()
    password = load_credentials(tmp_path / "alice" / "alice.json").password
    # When provision runs again, as at every `docker compose up`
    _provision(tmp_path)
    # Then the nodes' cookie and alice's password are unchanged (a changed cookie locks a node out)
    assert (tmp_path / "broker" / "erlang.cookie").read_text() == cookie
    assert load_credentials(tmp_path / "alice" / "alice.json").password == password
