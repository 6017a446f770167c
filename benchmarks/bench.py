"""Benchmark the executors (serial, vmap, auto, ray) against centralized training and a naive FL loop.

A thin wrapper of :func:`edgelearn.commands.bench.main.main` (the same as ``edgelearn bench``): prints rich
tables and, with ``--json``, writes every record. See ``edgelearn/commands/bench/`` (its ``__init__.py``) for
the workloads and what is timed.

    PYTHONPATH=src python benchmarks/bench.py --quick --json runs/bench/quick.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgelearn.commands.bench.main import main
from edgelearn.commands.bench.plan import BENCH_THREADS, DEVICES
from edgelearn.errors import exit_on_user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings: --quick, --json FILE and --threads."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few-minute subset (CI smoke run)")
    p.add_argument("--json", type=Path, default=None, help="write every record (and a summary) here")
    p.add_argument("--threads", type=int, default=BENCH_THREADS, help="torch threads per measurement process")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where every workload runs")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    exit_on_user_error(lambda: main(args.quick, args.json, threads=args.threads, device=args.device))
