"""Run the benchmarks and print one table: `python -m benchmarks [NAME ...]` (default: all)."""

from __future__ import annotations

import argparse
import importlib

from rich.console import Console

from benchmarks.table import Row, table

NAMES = ["codec", "transport", "rounds", "memory", "remote_ops", "robust", "async", "egress", "profile_round", "broker_floor", "vs_flower", "cpu_floor",
         "dp", "secagg"]  # robust: ~30 min, async: ~1 h; dp trains 12 runs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(NAMES)} (default: all)")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    unknown = set(args.names) - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}; choose from {', '.join(NAMES)}")
    console = Console()
    rows: list[Row] = []
    for name in args.names or NAMES:
        with console.status(f"running {name} benchmark"):
            module = importlib.import_module(f"benchmarks.{name}")
            rows += module.run() if name == "codec" else module.run(args.broker)
    console.print(table(rows))


if __name__ == "__main__":
    main()
