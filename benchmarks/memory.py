"""Coordinator memory: peak RSS growth over a round with 16 workers and a 64 MB model.

Target: growth <= 2x the model's size beyond the global model, i.e. memory that follows the
model, not the number of workers: the running sum, and the parts of the one reply being folded
into it (linear strategies fold an update straight from its received parts: protocol.stream).
Growth is counted from a coordinator that holds its global model (the minimum any coordinator
needs); the table shows the figure with the global model counted too. The workers run in one
separate process (16 connections, one thread each) so that only the coordinator's memory is
measured here. Measured twice: replies held in memory while they arrive (the default: growth is
the sum, one whole reply and pika's buffers), and spilled to disk (--spill-dir: the sum and one
piece), with the seconds per round of each.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from benchmarks.table import Row
from benchmarks.workers import delete_topology
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.settings import TrainSettings
from fedmq.worker.settings import release_large_buffers

WORKERS = 16
ROUNDS = 2
TASK = "benchmarks.bigmodel"


def run(url: str) -> list[Row]:
    rows = []
    for spill in (False, True):
        before_kb, peak_kb, model_bytes, round_s = _in_fresh_process(url, spill)
        growth = (peak_kb - before_kb) * 1024 / model_bytes
        how = "replies spilled to disk (--spill-dir)" if spill else "replies held in memory"
        note = (f"{WORKERS} workers, {model_bytes / 2**20:.0f} MiB model, +{(peak_kb - before_kb) / 1024:.0f} MiB, "
                f"{round_s:.2f} s per round")
        # The global model itself (1x) is what any coordinator holds; the target is about the rest.
        rows.append(Row(f"coordinator peak RSS growth / model beyond the global model, {how}", growth - 1, "x",
                        "<= 2", note))
    return rows


def _in_fresh_process(url: str, spill: bool) -> tuple[int, int, int, float]:
    """Measured in a fresh process: what earlier benchmarks left allocated must not count."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", url, *(["--spill"] if spill else [])],
                          capture_output=True, text=True, check=True, timeout=600)
    before_kb, peak_kb, model_bytes, round_s = json.loads(done.stdout.strip().splitlines()[-1])
    return before_kb, peak_kb, model_bytes, round_s


def _measure(url: str, spill: bool) -> tuple[int, int, int, float]:
    """(RSS before the run in KiB, peak RSS during it in KiB, model bytes, seconds per round)."""
    release_large_buffers()  # as `fedmq train` does at start
    topology = Topology(f"bench-{uuid.uuid4().hex[:8]}")
    names = tuple(f"w{i}" for i in range(WORKERS))
    hosts = subprocess.Popen([sys.executable, "-m", "benchmarks.worker_host", "--broker", url,
                              "--prefix", topology.prefix, "--task", TASK, *names])
    try:
        with tempfile.TemporaryDirectory(prefix="fedmq-memory-") as scratch:
            metrics = Path(scratch) / "rounds.jsonl"
            settings = TrainSettings(TASK, names, rounds=ROUNDS, job="bench-memory", wait_for_workers_s=120,
                                     metrics_out=metrics)
            broker_settings = BrokerSettings(url, topology, spill_dir=Path(scratch) if spill else None)
            with RabbitBroker(broker_settings) as broker:
                job = TrainingJob(broker, settings)
                model_bytes = sum(t.numel() * t.element_size() for t in job.task.build_model().state_dict().values())
                _reset_peak()
                before = _status_kb("VmRSS")
                job.run()
                peak = _status_kb("VmHWM")
            round_s = statistics.median(json.loads(line)["wall_s"] for line in metrics.read_text().splitlines())
    finally:
        hosts.terminate()
        hosts.wait(timeout=60)
        delete_topology(url, topology, names)
    return before, peak, model_bytes, round_s


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM restarts from the current RSS


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], spill="--spill" in sys.argv[2:])))
