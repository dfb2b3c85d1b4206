"""`fedmq demo`: a coordinator and N workers on one machine, with no setup.

By default everything runs in this process over the memory broker. With a RabbitMQ URL the
workers are real `fedmq worker` subprocesses and the coordinator talks to them through it.
"""

from __future__ import annotations

from dataclasses import replace

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.settings import BrokerSettings, open_broker
from fedmq.coordinator.async_settings import AsyncSettings
from fedmq.coordinator.cli_async import run_job
from fedmq.coordinator.job import OnRound
from fedmq.coordinator.processes import worker_processes
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import Weights
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task


def run_demo(settings: TrainSettings, broker_settings: BrokerSettings, on_round: OnRound,
             options: AsyncSettings | None = None) -> Weights:
    """A synchronous run, or with `options` an asynchronous one (coordinator.async_job)."""
    if broker_settings.url.startswith("memory:"):
        return _in_process(settings, broker_settings, on_round, options)
    return _over_rabbitmq(settings, broker_settings, on_round, options)


def _in_process(settings: TrainSettings, broker_settings: BrokerSettings, on_round: OnRound,
                options: AsyncSettings | None) -> Weights:
    hub = MemoryHub(broker_settings.topology)
    task = load_task(settings.task)
    # Inline workers: the run is one thread doing the federation's work step by step (worker.pool).
    with LocalWorkers(hub, task, settings.workers, dispatchers=0), MemoryBroker(hub) as broker:
        return run_job(broker, settings, options, on_round, task)


def _over_rabbitmq(settings: TrainSettings, broker_settings: BrokerSettings, on_round: OnRound,
                   options: AsyncSettings | None) -> Weights:
    # Fixed names: a rerun reuses its queues instead of leaving new durable ones behind.
    settings = replace(settings, job="demo", workers=tuple(f"demo-{name}" for name in settings.workers))
    connection = ["--broker", broker_settings.url, "--prefix", broker_settings.topology.prefix,
                  "--log-level", "warning", *_tls_args(broker_settings)]
    with open_broker(broker_settings) as broker, worker_processes(settings.workers, settings.task, *connection):
        return run_job(broker, settings, options, on_round)


def _tls_args(broker_settings: BrokerSettings) -> list[str]:
    """The workers connect as the demo does, TLS files included."""
    files = [("--tls-ca", broker_settings.tls_ca), ("--tls-cert", broker_settings.tls_cert),
             ("--tls-key", broker_settings.tls_key)]
    return [arg for flag, path in files if path is not None for arg in (flag, str(path))]
