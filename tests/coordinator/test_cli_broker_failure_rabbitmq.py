"""`fedmq train` exits 1 (training failed) with the broker's reason when the broker refuses it
after connecting (issue 8, point 22); 2 stays for usage errors and an unreachable broker."""

from __future__ import annotations

import pytest

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.cli import main
from tests.broker.live_worker import declare_raw


def test_a_broker_refusal_mid_run_exits_1_with_the_brokers_reason(
        rabbit_settings: BrokerSettings, capsys: pytest.CaptureFixture[str]) -> None:
    topology = rabbit_settings.topology
    # Given a reply queue of job "j" declared by someone else with other arguments, which
    # RabbitMQ refuses to redeclare (406 PRECONDITION_FAILED) when the run starts its round
    with RabbitBroker(rabbit_settings) as broker:
        broker.declare_worker("w0")
    declare_raw(rabbit_settings.url, topology.reply_queue("j", "w0"), topology.reply_exchange,
                topology.reply_key("j", "w0"), {"x-max-length": 1})
    # When fedmq train runs that job
    code = main(["train", "--task", "toy", "--workers", "w0", "--rounds", "1", "--job", "j",
                 "--broker", rabbit_settings.url, "--prefix", topology.prefix])
    # Then it exits 1, saying training failed and why, in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("fedmq: training failed:") and "406" in err[0], err
