"""What ``edgelearn bench`` measures: the settings of the issue-5 workloads, the workload and study
descriptions (:class:`BenchPlan`) and the default plan (full or ``--quick``), as plain data."""

from __future__ import annotations

import copy
import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgelearn.errors import ConfigError

# Settings (each one is part of the workload definitions of issue 5 or explained where it is set)
DEVICES = ("cpu", "cuda", "auto")
"""``--device`` choices: the config's ``device`` values."""
SEED = 0
"""Run seed of every workload: data split, initial model, batch orders."""
BENCH_THREADS = 1
"""torch intra-op threads per process. One, because on this shared 2-core machine two threads made a serial
MLP round ~10x slower (0.09 s -> 0.37 s at 100 devices, 1.3 s -> 14.7 s at 1,000; the threads spin against
other work), and Ray workers run one thread per CPU anyway. Override with ``--threads``."""
W_DEVICES = 100
W_ROUNDS = 20
W_LR = 0.05
W_BATCH = 16
W_ALPHA = 0.5
MLP_HIDDEN = (128,)
"""The MLP 64-128-10 of workload W (input 1x8x8 = 64 features, 10 classes)."""
SAMPLES_PER_DEVICE = 14
"""Training samples per device in the synthetic workloads: W has 1,438 digits samples over 100 devices."""
W1000_DEVICES = 1000
SYNTHETIC_TEST = 2000
"""Synthetic test samples (accuracy only; evaluation is outside ``loop_s``)."""
SYNTHETIC_SHAPE = (1, 8, 8)
"""Digits' image shape, so the synthetic workloads train the very same MLP as W."""
SCALING_DEVICES = (10, 100, 1000, 10_000)
SCALING_TIMED_ROUNDS = 2
"""Scaling runs time two rounds: the first (cold caches, e.g. Ray's object store) and a steady one."""
CNN_ROUNDS = 2
"""Fashion-MNIST rounds: one local epoch of 100 devices is the whole 60,000-image training set, ~15-20 s per
round on one core here, so two rounds keep the CNN section to a few minutes."""
CENTRAL_SWEEP_BATCHES = (16, 32, 64, 128, 256, 512, 1024)
"""Batch sizes of the best-centralized-throughput sweep (issue 5: 16 .. 1024)."""
SWEEP_SAMPLES = {"mlp": 32_768, "cnn_small": 4096}
"""Samples per timed sweep repeat: >= 0.1 s at the fastest batch size here, a few seconds at batch 16."""
SWEEP_REPEATS = 3
"""Timed repeats per sweep batch size; the fastest counts (a busy machine only slows runs down)."""
JOB_TIMEOUT_S = 480.0
"""Most seconds one measurement process may run (full benchmark); a run past it is reported as a timeout."""
MAX_ROUND_S = 120.0
"""Scaling: a size whose round is projected (linearly from the previous size) to exceed this is skipped."""
PAIRED_PREFIX = "paired-"
"""Workload-name prefix of the paired records: executors timed round by round against the naive loop in one
process (see :func:`~edgelearn.commands.bench.references.measure_paired`)."""
PAIRED_EXECUTORS = ("vmap", "auto")
"""Executors W1000 pairs with the naive loop: the in-process ones that can be fastest (serial is ~10x slower
than vmap here, and Ray executors run in other processes, so pairing them would not share the load)."""
THREADS_PREFIX = "threads-"
"""Workload-name prefix of the thread-study records (``threads-<workload>-idle`` / ``-busy``)."""
THREAD_SETTINGS: tuple[int | str, ...] = ("auto", 1, 2)
"""engine.torch_threads values compared on W: the default, and the two explicit counts of a 2-core machine."""
THREAD_STEADY_FROM = 3
"""First steady round: round 1 builds modules and plans, round 2 can still grow the allocator's pools."""
QUICK_W1000_ROUNDS = 3
QUICK_THREAD_ROUNDS = 6
"""Quick mode: rounds of each thread-study run (steady median over rounds 3..6)."""
QUICK_PAIRED_EXECUTORS = ("vmap",)
QUICK_CNN_STEPS = 2
"""Quick mode: two local steps per device instead of an epoch, one round (a smoke run of the CNN path)."""
QUICK_SWEEP_REPEATS = 1
QUICK_CNN_SWEEP = (16, 1024)
"""Quick mode times the CNN's centralized throughput at the sweep's two ends only."""
QUICK_SWEEP_SAMPLES = {"mlp": 16_384, "cnn_small": 2048}
QUICK_SERIAL_MAX_DEVICES = 1000
"""Quick mode skips the serial executor above 1,000 devices (a 10,000-device serial round takes ~15 s)."""
QUICK_JOB_TIMEOUT_S = 120.0
QUICK_MAX_ROUND_S = 30.0
IN_PROCESS = ("serial", "vmap", "auto")
RAY_LABELS = ("ray-vmap", "ray-serial")


@dataclass(frozen=True)
class FLWorkload:
    """A FedAvg workload timed on several executors, with its centralized and naive-loop references.

    ``family`` names the model and input shape; workloads of one family share a centralized batch sweep.
    ``paired`` executors are also timed round by round against the naive loop in one process (needs
    ``naive``), a ratio that other processes' load on a shared machine cannot skew.
    """

    name: str
    config: Mapping[str, Any]
    executors: tuple[str, ...]
    family: str
    centralized: bool = True
    naive: bool = False
    paired: tuple[str, ...] = ()
    sweep: tuple[int, ...] = ()
    sweep_samples: int = 0
    sweep_repeats: int = SWEEP_REPEATS
    note: str = ""


@dataclass(frozen=True)
class ScalingStudy:
    """Rounds of one workload over growing device counts, each size in a fresh process (Ray: one cluster)."""

    name: str
    config: Mapping[str, Any]
    devices: tuple[int, ...]
    executors: tuple[str, ...]
    samples_per_device: int = SAMPLES_PER_DEVICE
    max_devices: Mapping[str, int] = field(default_factory=dict)
    max_round_s: float = MAX_ROUND_S


@dataclass(frozen=True)
class ThreadStudy:
    """One workload timed at each ``engine.torch_threads`` setting, idle and beside a busy neighbour."""

    name: str
    config: Mapping[str, Any]
    executor: str = "vmap"
    settings: tuple[int | str, ...] = THREAD_SETTINGS
    busy: tuple[bool, ...] = (False, True)


@dataclass(frozen=True)
class BenchPlan:
    """Everything one benchmark run measures, and how (threads, per-process time limit, isolation)."""

    workloads: tuple[FLWorkload, ...]
    scaling: tuple[ScalingStudy, ...] = ()
    threads: int = BENCH_THREADS
    job_timeout_s: float = JOB_TIMEOUT_S
    isolate: bool = True
    notes: tuple[dict[str, Any], ...] = ()
    thread_study: ThreadStudy | None = None
    device: str = "cpu"
    """Where the workloads run (``device`` of their configs); recorded with every result."""


def ray_available() -> bool:
    """True when the optional Ray package can be imported (``pip install 'edgelearn[ray]'``)."""
    return importlib.util.find_spec("ray") is not None


def fashion_available() -> bool:
    """True when the Fashion-MNIST IDX files sit in the default folder (Debian's dataset-fashion-mnist)."""
    from edgelearn.data.idx import FASHION_MNIST_DEFAULT_DIR

    return FASHION_MNIST_DEFAULT_DIR.is_dir() and any(FASHION_MNIST_DEFAULT_DIR.iterdir())


def fedavg_config(
    *,
    dataset: str,
    devices: int,
    rounds: int,
    model: str = "mlp",
    num_train: int | None = None,
    local: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """The ``build_config`` mapping of a FedAvg workload (W's settings unless overridden) on ``device``
    (``cpu``, ``cuda`` or ``auto``); no executor."""
    data: dict[str, Any] = {"dataset": dataset}
    if dataset == "synthetic":
        data.update(
            num_train=int(num_train or SAMPLES_PER_DEVICE * devices),
            num_test=SYNTHETIC_TEST,
            input_shape=list(SYNTHETIC_SHAPE),
        )
    options = {"hidden": list(MLP_HIDDEN)} if model == "mlp" else {}
    return {
        "name": "bench",
        "seed": SEED,
        "device": device,
        "data": data,
        "partition": {"method": "dirichlet", "alpha": W_ALPHA},
        "topology": {"devices": int(devices)},
        "model": {"name": model, "options": options},
        "algorithm": {
            "name": "fedavg",
            "rounds": int(rounds),
            "local": dict(local or {"lr": W_LR, "batch_size": W_BATCH, "epochs": 1}),
        },
        "output": {"plots": False, "progress": False},
    }


def default_plan(quick: bool = False, threads: int = BENCH_THREADS, device: str = "cpu") -> BenchPlan:
    """The issue-5 benchmark; ``quick`` keeps every section but shrinks it to a few minutes (CI smoke).

    Quick mode runs no Ray executor (Ray has its own tests; its cluster and actors alone take ~20 s to
    start here), 3 W1000 rounds, one CNN round of 2 local steps, and serial scaling up to 1,000 devices.
    ``device`` (``cpu``, ``cuda``, ``auto``) places every workload, reference and loop; on a GPU the Ray
    executors (CPU workers here) and the torch thread study (CPU threads) are left out, with a note.
    """
    if device not in DEVICES:
        raise ConfigError(
            f"--device is {device!r}; it must be one of {', '.join(DEVICES)}", hint="--device cpu"
        )
    from edgelearn.engine.device import resolve_device  # torch: only when a plan is built

    on_gpu = resolve_device(device).type == "cuda"
    workload = functools.partial(fedavg_config, device=device)
    notes: list[dict[str, Any]] = []
    ray: tuple[str, ...] = ()
    if quick:
        notes.append({"section": "ray", "note": "quick mode: Ray executors not run"})
    elif on_gpu:
        notes.append({"section": "ray", "note": f"device {device}: Ray executors (CPU workers) not run"})
    elif ray_available():
        ray = RAY_LABELS
    else:
        notes.append({"section": "ray", "note": "Ray is not installed: Ray executors skipped"})
    sweep_samples = QUICK_SWEEP_SAMPLES if quick else SWEEP_SAMPLES
    repeats = QUICK_SWEEP_REPEATS if quick else SWEEP_REPEATS
    mlp = "mlp-1x8x8"
    workloads = [
        FLWorkload(
            name="W-digits-mlp",
            config=workload(dataset="digits", devices=W_DEVICES, rounds=W_ROUNDS),
            executors=(*IN_PROCESS, *ray),
            family=mlp,
            naive=True,
            paired=QUICK_PAIRED_EXECUTORS if quick else PAIRED_EXECUTORS,
            sweep=CENTRAL_SWEEP_BATCHES,
            sweep_samples=sweep_samples["mlp"],
            sweep_repeats=repeats,
        ),
        FLWorkload(
            name="W1000-synthetic-mlp",
            config=workload(
                dataset="synthetic", devices=W1000_DEVICES, rounds=QUICK_W1000_ROUNDS if quick else W_ROUNDS
            ),
            executors=("serial", "vmap") if quick else (*IN_PROCESS, *ray),
            family=mlp,
            naive=True,
            paired=QUICK_PAIRED_EXECUTORS if quick else PAIRED_EXECUTORS,
            note="W scaled to 1,000 devices: synthetic 1x8x8 data, ~14 samples per device as in W",
        ),
    ]
    if fashion_available():
        local: dict[str, Any] = {"lr": W_LR, "batch_size": W_BATCH}
        local.update({"steps": QUICK_CNN_STEPS} if quick else {"epochs": 1})
        workloads.append(
            FLWorkload(
                name="fashion-cnn_small",
                config=workload(
                    dataset="fashion_mnist",
                    devices=W_DEVICES,
                    rounds=1 if quick else CNN_ROUNDS,
                    model="cnn_small",
                    local=local,
                ),
                executors=("serial", "vmap") if quick else (*IN_PROCESS, *ray),
                family="cnn_small-1x28x28",
                sweep=QUICK_CNN_SWEEP if quick else CENTRAL_SWEEP_BATCHES,
                sweep_samples=sweep_samples["cnn_small"],
                sweep_repeats=repeats,
            )
        )
    else:
        notes.append({"section": "fashion-cnn_small", "note": "Fashion-MNIST files absent: CNN skipped"})
    scaling = ScalingStudy(
        name="scaling-mlp-synthetic",
        config=workload(dataset="synthetic", devices=SCALING_DEVICES[0], rounds=SCALING_TIMED_ROUNDS),
        devices=SCALING_DEVICES,
        executors=("vmap", "serial") if quick else (*IN_PROCESS, *ray),
        max_devices={"serial": QUICK_SERIAL_MAX_DEVICES} if quick else {},
        max_round_s=QUICK_MAX_ROUND_S if quick else MAX_ROUND_S,
    )
    thread_study = ThreadStudy(
        name=f"{THREADS_PREFIX}W-digits-mlp",
        config=workload(
            dataset="digits", devices=W_DEVICES, rounds=QUICK_THREAD_ROUNDS if quick else W_ROUNDS
        ),
    )
    if on_gpu:
        notes.append({"section": "threads", "note": f"device {device}: the CPU thread study not run"})
    return BenchPlan(
        workloads=tuple(workloads),
        scaling=(scaling,),
        threads=int(threads),
        job_timeout_s=QUICK_JOB_TIMEOUT_S if quick else JOB_TIMEOUT_S,
        notes=tuple(notes),
        thread_study=None if on_gpu else thread_study,
        device=device,
    )


def merge_config(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two config mappings (``extra`` wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def scaling_config(base: Mapping[str, Any], devices: int, samples_per_device: int) -> dict[str, Any]:
    """The scaling workload at ``devices`` devices (synthetic data grows with them)."""
    return merge_config(
        base,
        {
            "topology": {"devices": int(devices)},
            "data": {"num_train": int(samples_per_device * devices)},
            "algorithm": {"rounds": SCALING_TIMED_ROUNDS},
        },
    )


def too_slow(last: tuple[int, float] | None, devices: int, max_round_s: float) -> str | None:
    """Why a scaling size is skipped: its round, projected linearly from the last size's, exceeds the cap."""
    if last is None:
        return None
    projected = last[1] * devices / last[0]
    if projected <= max_round_s:
        return None
    return f"projected round {projected:.0f} s exceeds the {max_round_s:.0f} s cap"
