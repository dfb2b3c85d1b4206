"""Round time through a three-node RabbitMQ cluster (quorum queues) against one node.

    python -m benchmarks.cluster [--rounds 12] [--keep-image]

Three deployments of the same compose files, the same image, the same three digits workers in
containers and the same coordinator command, one after another (each torn down before the next):

- single node, classic queues: `docker-compose.yml`;
- single node, quorum queues: the same with FEDMQ_QUEUE_TYPE=quorum (a one-member Raft log:
  the cost of the queue type alone);
- three nodes, quorum queues: `-f compose/cluster.yml` (each message confirmed once a majority,
  two of three nodes, has written it).

A round's time is its `wall_s` (send to aggregated); the median is over rounds 2..R (round 1
warms the workers up). Prints the three medians, the cluster's ratio to each single node, and
the load average before and after: the figures are only comparable on a quiet machine.
Needs a Docker engine with Compose (here: ../shared/docker/up.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.table import Row

ROOT = Path(__file__).resolve().parents[1]
WORKERS = "alice,bob,carol"
TIMEOUT_S = 900


@dataclass(frozen=True, kw_only=True)
class Deployment:
    name: str
    files: tuple[str, ...]
    queue_type: str  # what provision writes into the credentials (the cluster file sets quorum)


DEPLOYMENTS = (
    Deployment(name="1 node, classic", files=("docker-compose.yml",), queue_type="classic"),
    Deployment(name="1 node, quorum", files=("docker-compose.yml",), queue_type="quorum"),
    Deployment(name="3 nodes, quorum", files=("docker-compose.yml", "compose/cluster.yml"), queue_type="quorum"),
)


def _compose() -> list[str]:
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    return ["docker", "compose"] if v2 else ["docker-compose"]


def median_round_s(deployment: Deployment, image: str, rounds: int, runs: Path) -> float:
    """Bring `deployment` up, train `rounds` rounds, tear it down; the median wall_s of rounds 2..R."""
    project = f"fedmqbench{uuid.uuid4().hex[:8]}"
    base = [*_compose(), "-p", project, *(arg for f in deployment.files for arg in ("-f", str(ROOT / f)))]
    env = {**os.environ, "FEDMQ_IMAGE": image, "FEDMQ_RUNS": str(runs), "FEDMQ_UID": str(os.getuid()),
           "FEDMQ_QUEUE_TYPE": deployment.queue_type}
    env.pop("FEDMQ_AMQP_PORT", None)

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*base, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{deployment.name}: compose {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
        return done

    metrics = runs / f"{project}.jsonl"
    try:
        compose("up", "-d", "--no-build", *WORKERS.split(","))
        compose("run", "--rm", "-T", "--no-deps", "coordinator", "fedmq", "train", "--task", "digits",
                "--workers", WORKERS, "--rounds", str(rounds), "--seed", "0",
                "--credentials", "/run/fedmq/coordinator.json", "--metrics-out", f"/data/runs/{metrics.name}")
    finally:
        subprocess.run([*base, "down", "-v", "--remove-orphans"], cwd=ROOT, env=env, capture_output=True,
                       timeout=TIMEOUT_S)
    walls = [json.loads(line)["wall_s"] for line in metrics.read_text().splitlines() if line.strip()]
    return statistics.median(walls[1:])


def run(_broker: str = "", rounds: int = 12, keep_image: bool = False) -> list[Row]:
    """One Row per deployment (median round seconds) and the cluster's ratios; the table prints too."""
    image = f"fedmq:bench-{uuid.uuid4().hex[:8]}"
    build = subprocess.run(["docker", "build", "-t", image, str(ROOT)], capture_output=True, text=True,
                           timeout=TIMEOUT_S)
    if build.returncode != 0:
        raise RuntimeError(f"docker build failed:\n{build.stderr[-3000:]}")
    load_before = os.getloadavg()
    medians: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="fedmq-cluster-bench-") as tmp:
            runs = Path(tmp)
            os.chmod(runs, 0o777)  # the coordinator's uid writes here
            for deployment in DEPLOYMENTS:
                medians[deployment.name] = median_round_s(deployment, image, rounds, runs)
    finally:
        if not keep_image:
            subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, timeout=300)
    load = f"load avg {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    cluster = medians["3 nodes, quorum"]
    rows = [Row(f"cluster: median round, {name}", seconds, "s", "<= 1e9", load)
            for name, seconds in medians.items()]
    rows += [Row(f"cluster: 3 nodes quorum / {name}", cluster / medians[name], "x", "<= 1e9",
                 f"rounds 2..{rounds}")
             for name in ("1 node, classic", "1 node, quorum")]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--keep-image", action="store_true", help="leave the built image behind")
    args = parser.parse_args()
    rows = run(rounds=args.rounds, keep_image=args.keep_image)
    out = Table(title="fedmq round time: RabbitMQ cluster vs one node (digits, 3 workers in containers)")
    for column in ("measurement", "value", "unit", "note"):
        out.add_column(column)
    for row in rows:
        out.add_row(row.benchmark, f"{row.measured:.3f}", row.unit, row.note)
    Console().print(out)


if __name__ == "__main__":
    main()
