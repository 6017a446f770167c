"""Time one tier's cohort of students, serial vs vmap: is its training bound by overhead or by compute?

FedAgg's edge students (the edge model, e.g. resnet8, on each edge's bridge samples at batch 8) train one
after another. If their batch-8 steps were bound by Python overhead, vectorizing the cohort with
``torch.func.vmap`` would pay; if they are bound by arithmetic, it cannot. This script trains ``--clients``
models of ``--model`` on ``--samples`` random images each (input shape ``--shape``) with both executors, after
one warm-up run each, and prints milliseconds per client step and GFLOP/s (the zoo's FLOP count).

    PYTHONPATH=src python benchmarks/tier_cohort.py --model resnet8 --clients 10 --samples 160 --threads 1 \
        --json runs/bench/tier_cohort_resnet8.json

``--norm batch`` times a BatchNorm cohort (trained per client with masked statistics under vmap).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelearn.commands.bench.plan import DEVICES
from edgelearn.engine.cohort import ClientData, Cohort, LocalSpec
from edgelearn.engine.device import resolve_device, timed
from edgelearn.engine.serial import SerialExecutor
from edgelearn.engine.vmap import VmapExecutor
from edgelearn.errors import exit_on_user_error
from edgelearn.models import build_model, model_info

SEED = 0
"""Seed of the models' initialization and of the random images."""
NUM_CLASSES = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet8", help="model zoo name (resnet8, cnn_small, resnet14, ...)")
    p.add_argument("--width", type=float, default=None, help="ResNet width multiplier (model option)")
    p.add_argument(
        "--norm", default=None, help="norm option (resnet*, cnn_medium, cnn_large): batch, group, none"
    )
    p.add_argument(
        "--shape",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=(1, 28, 28),
        help="input shape C,H,W (Fashion-MNIST: 1,28,28)",
    )
    p.add_argument("--clients", type=int, default=10, help="models in the cohort (FedAgg: edges)")
    p.add_argument("--samples", type=int, default=160, help="samples per client (steps = samples / batch)")
    p.add_argument("--batch", type=int, default=8, help="SGD batch (the paper's 8)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where the executors train")
    p.add_argument("--json", type=Path, default=None, help="write the records here")
    return p.parse_args(argv)


def cohort(args: argparse.Namespace) -> Cohort:
    """``--clients`` same-architecture models from one start, each with its own random images."""
    shape = args.shape
    options: dict[str, Any] = {} if args.width is None else {"width": args.width}
    if args.norm is not None:
        options["norm"] = args.norm
    torch.manual_seed(SEED)
    start = {
        k: v.clone() for k, v in build_model(args.model, shape, NUM_CLASSES, **options).state_dict().items()
    }
    gen = torch.Generator().manual_seed(SEED)
    data = [
        ClientData(
            torch.randn(args.samples, *shape, generator=gen),
            torch.randint(0, NUM_CLASSES, (args.samples,), generator=gen),
        )
        for _ in range(args.clients)
    ]
    n = args.clients
    return Cohort(
        model_fn=lambda: build_model(args.model, shape, NUM_CLASSES, **options),
        arch_key=f"{args.model}-{shape}",
        data=data,
        starts=[start] * n,
        start_of=np.arange(n),
        group_of=np.zeros(n, dtype=np.int64),
        num_groups=1,
        weights=np.ones(n),
        seeds=np.arange(n),
        keep_states=True,
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Time both executors on the same cohort; print a table and return (and optionally write) the records."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work = cohort(args)
    info = model_info(work.model_fn(), args.shape)
    spec = LocalSpec(lr=1e-3, batch_size=args.batch, epochs=1, momentum=0.9)
    steps = args.clients * -(-args.samples // args.batch)
    device = resolve_device(args.device)
    records = []
    for executor in (SerialExecutor(device), VmapExecutor(device, chunk_size=args.clients)):
        executor.train(work, spec)  # warm-up: allocator, kernels, vmap tracing
        wall = timed(executor.train, work, spec, device=device)
        flops = args.clients * args.samples * info.flops_train
        records.append(
            {
                "executor": executor.name,
                "model": args.model,
                "norm": args.norm,
                "clients": args.clients,
                "samples": args.samples,
                "batch": args.batch,
                "threads": args.threads,
                "device": str(device),
                "wall_s": wall,
                "ms_per_client_step": 1000 * wall / steps,
                "gflops_per_s": flops / wall / 1e9,
            }
        )
    print(f"{'executor':<8} {'wall s':>8} {'ms/client step':>15} {'GFLOP/s':>8}")
    for r in records:
        ms, gflops = r["ms_per_client_step"], r["gflops_per_s"]
        print(f"{r['executor']:<8} {r['wall_s']:>8.2f} {ms:>15.2f} {gflops:>8.1f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        host = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
        }
        args.json.write_text(json.dumps({"records": records, "host": host}, indent=2))
    return records


if __name__ == "__main__":
    exit_on_user_error(main)
