"""Time evaluating many node models through ``executor.infer``, serial vs vmap (a print, not a timed test).

The tier algorithms evaluate every sampled device model on one fixed test subset (``mean_accuracy``); FedAgg's
devices teach their edges the same way, each on its own bridge samples. This script builds ``--nodes`` models
of ``--model`` (each its own seeded initialization) and infers them on ``--samples`` random inputs of
``--shape``, shared by all nodes (evaluation) or, with ``--ragged``, each node its own inputs of
``--samples`` +- 50% (teachers), with the serial and the vmap executor: one warm-up call each, then the best
of ``--repeats`` timed calls. It prints seconds per call, the speed-up, whether the predicted classes agree
and the largest logit difference, plus what the timing depends on (threads, CPU capability, the machine's
load).

    PYTHONPATH=src python benchmarks/infer.py --model cnn_small --nodes 100 --samples 2000 --threads 1
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np
import torch

from edgelearn.commands.bench.plan import DEVICES
from edgelearn.engine.device import resolve_device, timed
from edgelearn.engine.infer import InferCohort, InferResult, InferSpec, logits, predictions
from edgelearn.engine.serial import SerialExecutor
from edgelearn.engine.vmap import VmapExecutor
from edgelearn.errors import exit_on_user_error
from edgelearn.models import build_model, num_params

SEED = 0
"""Seed of the models' initializations and of the random inputs."""
NUM_CLASSES = 10
"""Classes of the models' heads (digits, MNIST)."""
RAGGED_SPREAD = 0.5
"""With ``--ragged`` node i gets ``samples * (1 +- spread)`` inputs, spread evenly over the nodes."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn_small", help="model zoo name (cnn_small: FedAgg's device model)")
    p.add_argument("--norm", default=None, help="norm option of resnet*/cnn_medium/cnn_large: batch, group")
    p.add_argument(
        "--shape",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=(1, 28, 28),
        help="input shape C,H,W (MNIST: 1,28,28)",
    )
    p.add_argument("--nodes", type=int, default=100, help="node models inferred in one call")
    p.add_argument("--samples", type=int, default=2000, help="inputs per node (the shared test subset)")
    p.add_argument("--ragged", action="store_true", help="each node its own inputs of varying count")
    p.add_argument("--batch", type=int, default=None, help="samples per forward (default: eval default)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where the executors infer")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per executor (the best counts)")
    return p.parse_args(argv)


def make_cohort(args: argparse.Namespace) -> InferCohort:
    """``--nodes`` seeded models of ``--model`` and their inputs (module docstring)."""
    options = {"norm": args.norm} if args.norm else {}

    def model_fn() -> torch.nn.Module:
        return build_model(args.model, args.shape, NUM_CLASSES, **options)

    states = []
    for i in range(args.nodes):
        torch.manual_seed(SEED + i)
        states.append({k: v.detach().clone() for k, v in model_fn().state_dict().items()})
    gen = torch.Generator().manual_seed(SEED)
    if args.ragged:
        counts = np.round(args.samples * (1 + RAGGED_SPREAD * np.linspace(-1, 1, args.nodes))).astype(int)
        inputs: torch.Tensor | list[torch.Tensor] = [
            torch.randn((int(c), *args.shape), generator=gen) for c in counts
        ]
    else:
        inputs = torch.randn((args.samples, *args.shape), generator=gen)
    key = f"{args.model}:{args.shape}:{sorted(options.items())}"
    return InferCohort(model_fn=model_fn, arch_key=key, states=states, inputs=inputs)


def best_time(
    call: Callable[[], InferResult], repeats: int, device: torch.device
) -> tuple[float, InferResult]:
    """One warm-up call, then the best wall-clock seconds of ``repeats`` calls (synchronized on a GPU) and
    the last result."""
    results = [call()]
    best = min(timed(lambda: results.append(call()), device=device) for _ in range(repeats))
    return best, results[-1]


def main(argv: list[str] | None = None) -> None:
    """Time both executors on one cohort and print the comparison."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cohort = make_cohort(args)
    serial, vmap = SerialExecutor(device), VmapExecutor(device)
    params = num_params(
        build_model(args.model, args.shape, NUM_CLASSES, **({"norm": args.norm} if args.norm else {}))
    )
    load = os.getloadavg()
    print(
        f"{args.nodes} x {args.model} ({params:,} params), {'ragged ' if args.ragged else ''}"
        f"{args.samples} samples of {args.shape}, batch {args.batch or 'default'}, {args.threads} thread(s), "
        f"device {device}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"load average {load[0]:.2f} on {os.cpu_count()} CPUs"
    )
    for name, fn in (("predictions", predictions), ("logits", logits)):
        spec = InferSpec(batch_size=args.batch, output=fn)
        t_serial, ref = best_time(lambda spec=spec: serial.infer(cohort, spec), args.repeats, device)
        t_vmap, got = best_time(lambda spec=spec: vmap.infer(cohort, spec), args.repeats, device)
        pairs = list(zip(ref.output(), got.output()))
        if fn is predictions:
            agree = float(np.mean([(a == b).float().mean().item() for a, b in pairs]))
            detail = f"predictions agree on {agree:.4%} of samples"
        else:
            detail = f"max |logit difference| {max((a - b).abs().max().item() for a, b in pairs):.2e}"
        print(
            f"  {name:<11} serial {t_serial:7.3f} s  vmap {t_vmap:7.3f} s  speed-up {t_serial / t_vmap:5.2f}x"
            f"  ({detail})"
        )
    print(f"  load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    exit_on_user_error(main)
