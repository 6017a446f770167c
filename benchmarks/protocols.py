"""Two standard FL benchmark shapes on Fashion-MNIST, reported the way the field reports them.

* ``flute-lr``: FLUTE's LR-MNIST experiment (microsoft/msrflute, ``experiments/cv_lr_mnist/config.yaml``):
  multinomial logistic regression (edgelearn's ``mlp`` with ``hidden: []``, one 784x10 linear layer; FLUTE's
  FedML model adds a sigmoid before the cross-entropy, ours does not), 1,000 clients, 10 sampled per round,
  100 rounds of FedAvg, client SGD at lr 0.03 and batch 10, one local pass.
* ``pfl-cnn``: pfl-research's CIFAR-10 benchmark (apple/pfl-research,
  ``benchmarks/image_classification/configs/baseline.yaml``): 1,000 clients, a cohort of 50 per round, batch
  10, one local epoch at lr 0.1, FedAvg, a small CNN of two conv layers and a dense head. pfl runs 1,500
  rounds of its ``simple_cnn`` (32/64 3x3 convs, a 128-unit dense layer, ~1.2M parameters at 28x28); this
  runs :data:`PFL_DEFAULT_ROUNDS` rounds of edgelearn's built-in ``cnn_small`` (two 5x5 convs of 10/20
  channels, a 50-unit dense layer, 21,840 parameters), the closest built-in, so it finishes in minutes here.

Both split the whole Fashion-MNIST training set, 60 images per client, the way their sources split theirs.
pfl's ``cifar10_iid`` is IID, so ``pfl-cnn`` uses ``partition.method: iid``. FLUTE's LR-MNIST reads FedML's
MNIST, the FedProx split (Li et al., MLSys 2020): 1,000 users holding only 2 digits each, with power-law
sizes; ``flute-lr`` therefore uses ``partition.method: shards`` with 2 label-sorted shards of 30 images per
client (at most 2 digits each; equal sizes, as edgelearn has no power-law partitioner). ``--partition``
overrides both (e.g. ``iid``). edgelearn's FedAvg replaces the global model by the sample-weighted mean
of the clients' models (a server learning rate of 1); on equal-size clients that is pfl's setting (central lr
1.0, ``weight_by_samples: false``); FLUTE's aggregation-weighting options were not checked against it. Data
are Fashion-MNIST, not MNIST or CIFAR-10 (neither can be fetched here), so accuracies are not comparable with
the published ones.

Each run goes through the real code path (``build_config`` -> ``build_context`` -> ``make_algorithm`` ->
``run_round`` / ``evaluate``, via :func:`edgelearn.commands.bench.measure.build_fedavg`), after an untimed
warm-up, each (protocol, executor) pair in a fresh process so its peak RSS is its own (``--in-process``: all
in this one). Reported: wall time, seconds per round (median of the steady rounds, i.e. all but the first),
client SGD steps per second, peak RSS, final test accuracy, and the centralized reference: plain mini-batch
SGD of one copy of the same model on the same training data at the same batch size and lr, for as many
samples as the FL run trained (:func:`edgelearn.commands.bench.references._central_steps`). The JSON records
the thread count, executor, CPU capability, device, the load average before and after each run, and how many
CPUs other processes kept busy during it (``busy`` when at least :data:`BUSY_OTHER_CPUS`).

    PYTHONPATH=src nice python benchmarks/protocols.py --json docs/results/protocols.json
    PYTHONPATH=src python benchmarks/protocols.py --protocol flute-lr --executor vmap --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgelearn.commands.bench.machine import load_average, machine_facts
from edgelearn.commands.bench.measure import CountingExecutor, build_fedavg, warm_up
from edgelearn.commands.bench.records import MIN_DURATION_S
from edgelearn.commands.bench.references import CENTRAL_WARMUP_STEPS, _central_steps
from edgelearn.commands.bench.rss import peak_rss_mb, reset_peak_rss
from edgelearn.engine import evaluate_state
from edgelearn.engine.device import resolve_device, timed
from edgelearn.errors import exit_on_user_error
from edgelearn.models import describe
from edgelearn.report.io import write_json_atomic

SEED = 0
"""Run seed: data split, client sampling, initial model, batch orders (and the centralized reference's)."""
DATASET = "fashion_mnist"
"""Both shapes run on Fashion-MNIST (MNIST and CIFAR-10 cannot be fetched on this machine)."""
CLIENTS = 1_000
"""Clients in both shapes: the training set split over 1,000 clients (60 Fashion-MNIST images each)."""
PARTITIONS = ("default", "iid", "shards", "dirichlet")
"""``--partition`` choices; ``default`` is each protocol's own (:attr:`Protocol.partition`)."""
SHARDS_PER_CLIENT = 2
"""``shards`` partition: label-sorted shards per client, so each holds at most 2 digits (FedProx's MNIST)."""
PFL_DEFAULT_ROUNDS = 200
"""pfl-cnn rounds by default: pfl runs 1,500; 200 rounds (600,000 samples, 10 epochs of the training set)
take a few minutes on one CPU thread here."""
EXECUTORS = ("auto", "vmap", "serial", "ray")
"""``--executor`` choices; ``ray`` runs Ray workers with the config's default inner executor (serial)."""
RAY_LABEL = "ray-serial"
"""The benchmark label :func:`build_fedavg` knows for ``executor: ray`` with ``engine.ray_inner: serial``."""
QUICK_CLIENTS = 20
"""``--quick``: clients of the smoke-test run."""
QUICK_PER_ROUND = 5
"""``--quick``: clients sampled per round."""
QUICK_ROUNDS = 2
"""``--quick``: rounds (one first round and one steady round)."""
QUICK_MAX_TRAIN = 600
"""``--quick``: training images kept (``data.max_train``; a smaller data folder keeps all of its own)."""
BUSY_OTHER_CPUS = 0.5
"""A run counts as busy when other processes used at least this many CPUs on average while it ran (machine
CPU time from /proc/stat minus this process's): half a core taken away stretches single-thread timings on a
small machine. Ray's workers are other processes, so a Ray run always reads busy."""
BYTES_PER_MB = 2**20


@dataclass(frozen=True)
class Protocol:
    """One benchmark shape: FedAvg settings, model, the published setup it follows and how it differs."""

    name: str
    model: str
    model_options: dict[str, Any]
    per_round: int
    rounds: int
    batch_size: int
    lr: float
    follows: str
    differs: str
    partition: str
    local_epochs: int = 1
    clients: int = CLIENTS


PROTOCOLS: dict[str, Protocol] = {
    "flute-lr": Protocol(
        name="flute-lr",
        model="mlp",
        model_options={"hidden": []},
        per_round=10,
        rounds=100,
        batch_size=10,
        lr=0.03,
        follows="FLUTE LR-MNIST (msrflute experiments/cv_lr_mnist): logistic regression 784->10 on FedML's "
        "MNIST (1,000 users of 2 digits each, power-law sizes), 10 clients per round, 100 rounds, FedAvg "
        "(server SGD lr 1.0), client SGD lr 0.03, batch 10",
        differs="Fashion-MNIST instead of MNIST; the 60,000 training images in 2 label-sorted shards of 30 "
        "per client (at most 2 classes each, equal sizes instead of power-law); one local epoch; "
        "cross-entropy on the logits (FLUTE's FedML model puts a sigmoid before the cross-entropy)",
        partition="shards",
    ),
    "pfl-cnn": Protocol(
        name="pfl-cnn",
        model="cnn_small",
        model_options={},
        per_round=50,
        rounds=PFL_DEFAULT_ROUNDS,
        batch_size=10,
        lr=0.1,
        follows="pfl-research CIFAR-10 (benchmarks/image_classification baseline.yaml, cifar10_iid): "
        "1,000 clients of 50 images, cohort 50, batch 10, one local epoch at lr 0.1, FedAvg (central lr "
        "1.0), simple_cnn (2 conv + dense), 1,500 rounds",
        differs=f"Fashion-MNIST 1x28x28 instead of CIFAR-10 3x32x32 (60 images per client, not 50); "
        f"edgelearn's cnn_small (2 conv 5x5 10/20 ch + dense 50; 21,840 params) instead of simple_cnn "
        f"(2 conv 3x3 32/64 ch + dense 128, dropout; ~1.2M params); {PFL_DEFAULT_ROUNDS} rounds by default, "
        "not 1,500",
        partition="iid",
    ),
}
"""The shapes ``--protocol`` selects by name."""


def protocol_config(
    proto: Protocol,
    *,
    rounds: int,
    device: str,
    data_dir: str | None,
    quick: bool,
    partition: str = "default",
) -> dict[str, Any]:
    """The edgelearn run config of ``proto`` (``--quick``: :data:`QUICK_CLIENTS` clients on a subsample;
    ``partition``: a method overriding the protocol's own)."""
    data: dict[str, Any] = {"dataset": DATASET}
    if data_dir is not None:
        data["data_dir"] = data_dir
    if quick:
        data["max_train"] = QUICK_MAX_TRAIN
    return {
        "name": f"protocol-{proto.name}",
        "seed": SEED,
        "device": device,
        "data": data,
        "partition": {
            "method": proto.partition if partition == "default" else partition,
            "shards_per_device": SHARDS_PER_CLIENT,
        },
        "topology": {"devices": QUICK_CLIENTS if quick else proto.clients},
        "model": {"name": proto.model, "options": dict(proto.model_options)},
        "algorithm": {
            "name": "fedavg",
            "rounds": rounds,
            "clients_per_round": QUICK_PER_ROUND if quick else proto.per_round,
            "local": {"epochs": proto.local_epochs, "batch_size": proto.batch_size, "lr": proto.lr},
        },
        "output": {"plots": False, "progress": False},
    }


def _machine_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (float(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds this process (all its threads) and its waited-for children have used."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuWatch:
    """How many CPUs other processes kept busy, on average, between construction and :meth:`others`."""

    def __init__(self) -> None:
        self.machine = _machine_cpu_s()
        self.own = _own_cpu_s()
        self.started = time.perf_counter()

    def others(self) -> float | None:
        """Average CPUs used by other processes since construction (None off Linux)."""
        machine = _machine_cpu_s()
        if machine is None or self.machine is None:
            return None
        elapsed = max(time.perf_counter() - self.started, MIN_DURATION_S)
        others = max(0.0, (machine - self.machine) - (_own_cpu_s() - self.own)) / elapsed
        # /proc/stat counts in clock ticks (10 ms): over a short run the quotient can overshoot the CPUs
        return min(others, float(os.cpu_count() or 1))


def _label(executor: str) -> str:
    """The :func:`build_fedavg` label of an ``--executor`` choice."""
    return RAY_LABEL if executor == "ray" else executor


def measure_central(ctx: Any, samples: int) -> dict[str, Any]:
    """Plain mini-batch SGD of one model (the run's model, batch size and lr) on the run's whole training
    set for ``samples`` samples, after :data:`CENTRAL_WARMUP_STEPS` untimed steps; its rate and accuracy."""
    local = ctx.cfg.algorithm.local
    batch, lr = int(local.batch_size), float(local.lr)
    x = torch.as_tensor(ctx.bundle.train.x, device=ctx.device)
    y = torch.as_tensor(ctx.bundle.train.y, device=ctx.device)
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    model = ctx.model_fn().to(ctx.device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    warm = ctx.model_fn().to(ctx.device)
    _central_steps(
        warm, torch.optim.SGD(warm.parameters(), lr=lr), x, y, batch, CENTRAL_WARMUP_STEPS * batch, gen
    )
    trained: list[int] = []
    seconds = timed(
        lambda: trained.append(_central_steps(model, opt, x, y, batch, samples, gen)), device=ctx.device
    )
    seconds, seen = max(seconds, MIN_DURATION_S), trained[0]
    acc, loss = evaluate_state(model, None, ctx.test_x, ctx.test_y, ctx.cfg.eval.batch_size)
    return {
        "samples": seen,
        "steps": math.ceil(seen / batch),
        "seconds": seconds,
        "samples_per_s": seen / seconds,
        "batch_size": batch,
        "lr": lr,
        "final_accuracy": float(acc),
        "final_loss": float(loss),
        "note": "one model, plain PyTorch SGD loop over shuffled passes of the same training set, as many "
        "samples as the FL run trained",
    }


def run_protocol(
    proto: Protocol, config: dict[str, Any], executor: str, threads: int, quick: bool
) -> tuple[dict[str, Any], Any]:
    """One FedAvg run of ``proto`` (its run ``config``) on ``executor``, timed round by round; its record
    and run context."""
    load_before = load_average()
    watch = CpuWatch()
    reset_ok = reset_peak_rss()
    started = time.perf_counter()
    ctx, algo, counter = build_fedavg(config, _label(executor), threads)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    setup_s = time.perf_counter() - started
    warmup_s = warm_up(ctx, algo, counter.inner)
    round_s: list[float] = []
    round_steps: list[int] = []
    round_samples: list[int] = []
    for r in range(1, algo.rounds + 1):
        steps, samples = counter.steps, counter.samples
        round_s.append(timed(algo.run_round, r, device=ctx.device))
        round_steps.append(counter.steps - steps)
        round_samples.append(counter.samples - samples)
    ev = algo.evaluate()
    wall_s = time.perf_counter() - started
    fl_peak = peak_rss_mb()
    others = watch.others()
    first = 1 if len(round_s) > 1 else 0  # the steady rounds: all but the first (one-time costs)
    steady_s = max(sum(round_s[first:]), MIN_DURATION_S)
    loop_s = max(sum(round_s), MIN_DURATION_S)
    bundle = ctx.bundle
    info = describe(
        proto.model, tuple(bundle.train.x.shape[1:]), int(bundle.num_classes), **proto.model_options
    )
    record: dict[str, Any] = {
        "protocol": proto.name,
        "follows": proto.follows,
        "differs": proto.differs,
        "executor": executor,
        **_executor_facts(counter),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "device": str(ctx.device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "data": DATASET,
        "train_samples": len(bundle.train.y),
        "test_samples": len(ctx.test_y),
        "partition": config["partition"]["method"],
        "clients": int(ctx.topology.num_devices),
        "clients_per_round": int(config["algorithm"]["clients_per_round"]),
        "rounds": algo.rounds,
        "batch_size": proto.batch_size,
        "local_epochs": proto.local_epochs,
        "lr": proto.lr,
        "model": proto.model,
        "model_options": proto.model_options,
        "model_params": info.params,
        "seed": SEED,
        "quick": quick,
        "wall_s": wall_s,
        "setup_s": setup_s,
        "warmup_s": warmup_s,
        "first_round_s": round_s[0],
        "s_per_round": statistics.median(round_s[first:]),
        "steady_note": "s_per_round is the median steady round, the rates are over the steady rounds (all "
        "but the first, which pays one-time costs); *_all_rounds rates include the first",
        "loop_s": loop_s,
        "client_steps": counter.steps,
        "client_steps_per_s": sum(round_steps[first:]) / steady_s,
        "client_steps_per_s_all_rounds": counter.steps / loop_s,
        "client_updates": counter.updates,
        "samples": counter.samples,
        "samples_per_s": sum(round_samples[first:]) / steady_s,
        "samples_per_s_all_rounds": counter.samples / loop_s,
        "peak_rss_mb": fl_peak,
        "peak_rss_scope": "this run" if reset_ok else "process lifetime (peak RSS could not be reset)",
        "cuda_peak_mb": torch.cuda.max_memory_allocated(ctx.device) / BYTES_PER_MB
        if ctx.device.type == "cuda"
        else None,
        "final_accuracy": float(ev["accuracy"]),
        "final_loss": float(ev["loss"]),
        "loadavg_before": load_before,
        "loadavg_after": load_average(),
        "other_processes_cpus": others,
        "busy": None if others is None else others >= BUSY_OTHER_CPUS,
        "busy_rule": f"other processes used >= {BUSY_OTHER_CPUS} CPUs on average during the FL run "
        f"(of {os.cpu_count()})",
    }
    if executor == "ray":  # its workers are other processes: their memory and CPU are not this one's
        record["peak_rss_scope"] += "; the driver only (Ray's worker processes are not counted)"
    release = getattr(counter.inner, "shutdown", None)
    if callable(release):
        release()
    return record, ctx


def _executor_facts(counter: CountingExecutor) -> dict[str, Any]:
    """What the executor was and chose (auto's per-cohort picks)."""
    facts: dict[str, Any] = {"executor_name": str(counter.inner.name)}
    choices = getattr(counter.inner, "choices", None)
    if choices:
        facts["auto_picks"] = sorted({str(c["executor"]) for c in choices.values()})
    return facts


def _attach_central(record: dict[str, Any], central: dict[str, Any]) -> None:
    """Put the protocol's centralized reference in ``record`` with FL's share of its throughput."""
    record["central"] = central
    record["fl_over_central_samples_per_s"] = record["samples_per_s"] / central["samples_per_s"]


def run_in_process(args: argparse.Namespace, names: Sequence[str]) -> list[dict[str, Any]]:
    """Every protocol on every executor of ``args`` in this process; the centralized reference of each
    protocol once, after its first run (``--no-central``: none; the parent process supplies it)."""
    records = []
    for name in names:
        proto = PROTOCOLS[name]
        rounds = args.rounds if args.rounds is not None else QUICK_ROUNDS if args.quick else proto.rounds
        config = protocol_config(
            proto,
            rounds=rounds,
            device=args.device,
            data_dir=args.data_dir,
            quick=args.quick,
            partition=args.partition,
        )
        reference: dict[str, Any] | None = None
        for executor in args.executor:
            rec, ctx = run_protocol(proto, config, executor, args.threads, args.quick)
            if not args.no_central and reference is None:
                reference = measure_central(ctx, rec["samples"])
            if reference is not None:
                _attach_central(rec, reference)
            records.append(rec)
            print(f"{name} on {executor}: done in {rec['wall_s']:.1f} s", file=sys.stderr, flush=True)
            del ctx
    return records


def run_isolated(args: argparse.Namespace, names: Sequence[str]) -> list[dict[str, Any]]:
    """Each (protocol, executor) pair in a fresh process, so its peak RSS is its own and no pair inherits
    another's heap or warm caches; the first pair of a protocol also measures its centralized reference."""
    import subprocess
    import tempfile

    import edgelearn

    src = str(Path(edgelearn.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    common = ["--threads", str(args.threads), "--device", args.device, "--partition", args.partition]
    common += ["--in-process"]
    common += ["--rounds", str(args.rounds)] if args.rounds is not None else []
    common += ["--quick"] if args.quick else []
    common += ["--data-dir", args.data_dir] if args.data_dir is not None else []
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            reference: dict[str, Any] | None = None
            for executor in args.executor:
                out = Path(tmp) / f"{name}-{executor}.json"
                cmd = [sys.executable, __file__, "--protocol", name, "--executor", executor, *common]
                cmd += ["--json", str(out)] + (["--no-central"] if reference is not None else [])
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
                (rec,) = json.loads(out.read_text(encoding="utf-8"))["records"]
                if reference is None:
                    reference = rec["central"]
                else:
                    _attach_central(rec, reference)
                rec["process"] = "fresh process for this pair"
                records.append(rec)
    return records


TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("protocol", "{protocol}"),
    ("executor", "{executor_label}"),
    ("partition", "{partition}"),
    ("device", "{device}"),
    ("threads", "{threads}"),
    ("clients/round", "{clients_per_round}/{clients:,}"),
    ("rounds", "{rounds}"),
    ("wall s", "{wall_s:.1f}"),
    ("s/round", "{s_per_round:.4f}"),
    ("client-steps/s", "{client_steps_per_s:,.0f}"),
    ("peak RSS MB", "{peak_rss_mb:.0f}"),
    ("test acc", "{final_accuracy:.4f}"),
    ("FL samples/s", "{samples_per_s:,.0f}"),
    ("central samples/s", "{central_rate}"),
    ("central test acc", "{central_acc}"),
    ("load 1/5/15 before", "{load}"),
    ("others' CPUs", "{others}"),
)
"""The table columns (printed and Markdown) and how each cell is formatted from a record."""


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row of formatted cells per record, in :data:`TABLE_COLUMNS` order."""
    rows = []
    for r in result["records"]:
        central, load, others = r.get("central"), r["loadavg_before"], r["other_processes_cpus"]
        cells = {
            **r,
            "executor_label": r["executor"]
            + (f" ({'/'.join(r['auto_picks'])})" if r.get("auto_picks") else ""),
            "central_rate": "-" if central is None else f"{central['samples_per_s']:,.0f}",
            "central_acc": "-" if central is None else f"{central['final_accuracy']:.4f}",
            "load": "-" if load is None else "/".join(f"{v:.2f}" for v in load),
            "others": "-" if others is None else f"{others:.2f}" + (" (busy)" if r["busy"] else ""),
        }
        rows.append([fmt.format(**cells) for _, fmt in TABLE_COLUMNS])
    return rows


def markdown_table(result: dict[str, Any]) -> str:
    """The records as a Markdown table (what docs/protocols.md shows; ``--render FILE`` prints it)."""
    head = ["| " + " | ".join(name for name, _ in TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    return "\n".join(head + ["| " + " | ".join(row) + " |" for row in table_rows(result)])


def print_table(result: dict[str, Any]) -> None:
    """The records as a rich table (plain text when not on a terminal)."""
    from rich.console import Console
    from rich.table import Table

    env = result["environment"]
    title = (
        f"FL protocol shapes on Fashion-MNIST ({env['cpu_count']} CPUs, capability {env['cpu_capability']})"
    )
    table = Table(title=title)
    for name, _ in TABLE_COLUMNS:
        table.add_column(name, justify="left" if name in ("protocol", "executor", "device") else "right")
    for row in table_rows(result):
        table.add_row(*row)
    Console(width=220).print(table)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (argparse reports bad flags)."""

    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
        return value

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=[*PROTOCOLS, "all"], default="all")
    parser.add_argument("--executor", choices=EXECUTORS, nargs="+", default=["auto"], help="one or more")
    parser.add_argument("--threads", type=positive, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--rounds", type=positive, default=None, help="rounds of every protocol run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    parser.add_argument(
        "--partition", choices=PARTITIONS, default="default", help="default: each protocol's own split"
    )
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST idx folder (default: the system's)")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every pair in this process (default: a fresh process per protocol and executor pair)",
    )
    parser.add_argument("--no-central", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--render", type=Path, default=None, help="print this JSON result as a Markdown table and exit"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the selected protocols, print the table, write ``--json``; returns the result."""
    args = parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text(encoding="utf-8"))
        print(markdown_table(result))
        return result
    names = list(PROTOCOLS) if args.protocol == "all" else [args.protocol]
    resolve_device(args.device)  # a missing GPU exits 2 here, before any child process starts
    if args.in_process or len(names) * len(args.executor) == 1:
        records = run_in_process(args, names)
    else:
        records = run_isolated(args, names)
    result = {"environment": machine_facts(args.device), "records": records}
    print_table(result)
    if args.json is not None:
        write_json_atomic(args.json, result)  # folders created; never a half-written file
    return result


if __name__ == "__main__":
    exit_on_user_error(main)
