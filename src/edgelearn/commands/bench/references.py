"""What FedAvg's executors are compared with: centralized SGD of one model on all the training data (at
the run's batch size, then a batch-size sweep) and the naive FL loop (a deep copy of the global model per
device), alone and paired round by round with executors in one process."""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from edgelearn.commands.bench.measure import WARMUP_CLIENTS, CountingExecutor, build_fedavg, warm_up
from edgelearn.commands.bench.plan import PAIRED_PREFIX, SEED, THREAD_STEADY_FROM
from edgelearn.commands.bench.records import MIN_DURATION_S, record
from edgelearn.commands.bench.rss import peak_rss_mb
from edgelearn.engine.device import timed

CENTRAL_WARMUP_STEPS = 5
STEADY_FROM = THREAD_STEADY_FROM
"""First steady round of a paired run, as in the thread study (round 1 builds the executor's modules and
plans, round 2 may still grow the allocator's pools)."""
EXECUTOR_SLOT = "executor:"
"""Prefix of an executor's slot in a paired round's order (the loops' slots are their names)."""


def _train_data(config: Mapping[str, Any], threads: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The workload's run context (serial executor: nothing else starts) and its full training set."""
    ctx, _algo, _counter = build_fedavg(config, "serial", threads)
    x = torch.as_tensor(ctx.bundle.train.x, device=ctx.device)
    y = torch.as_tensor(ctx.bundle.train.y, device=ctx.device)
    return ctx, x, y


def _central_steps(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    total: int,
    gen: torch.Generator,
) -> int:
    """Plain mini-batch SGD over shuffled passes of (x, y) until ``total`` samples; samples trained."""
    import torch.nn.functional as F

    seen = 0
    model.train()
    while seen < total:
        order = torch.randperm(len(y), generator=gen).to(y.device)
        for i in range(0, len(y), batch):
            take = order[i : min(i + batch, i + total - seen)]
            loss = F.cross_entropy(model(x[take]), y[take])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(take)
            if seen >= total:
                break
    return seen


def measure_centralized(
    workload: str,
    config: Mapping[str, Any],
    threads: int,
    sweep: Sequence[int],
    sweep_samples: int,
    repeats: int,
) -> Iterator[dict[str, Any]]:
    """Centralized SGD of one model on all training data: the run's samples at its batch size, then a sweep.

    The reference trains exactly the samples FedAvg trains (rounds x one epoch of every device = rounds
    epochs of the training set) at the same batch size and learning rate; the sweep times ``sweep_samples``
    samples per batch size (best of ``repeats``) for the best throughput at any batch size.
    """
    from edgelearn.engine import evaluate_state

    started = time.perf_counter()
    ctx, x, y = _train_data(config, threads)
    local = ctx.cfg.algorithm.local
    batch, lr = int(local.batch_size), float(local.lr)
    if local.epochs is not None:
        total = ctx.cfg.algorithm.rounds * local.epochs * len(y)
    else:
        sizes = np.array([len(d) for d in ctx.client_data])
        total = ctx.cfg.algorithm.rounds * int(np.minimum(sizes, batch).sum()) * int(local.steps)
    gen = torch.Generator().manual_seed(SEED)

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(SEED)
        model = ctx.model_fn().to(ctx.device)
        return model, torch.optim.SGD(model.parameters(), lr=lr)

    warm, warm_opt = fresh()
    _central_steps(warm, warm_opt, x, y, batch, CENTRAL_WARMUP_STEPS * batch, gen)
    model, opt = fresh()
    t = time.perf_counter()
    seen = _central_steps(model, opt, x, y, batch, total, gen)
    loop_s = time.perf_counter() - t
    acc, _loss = evaluate_state(model, None, ctx.test_x, ctx.test_y, ctx.cfg.eval.batch_size)
    yield record(
        workload,
        "centralized",
        wall_s=time.perf_counter() - started,
        loop_s=loop_s,
        samples=seen,
        updates=None,
        peak_rss_mb=peak_rss_mb(),
        final_accuracy=acc,
        batch_size=batch,
        threads=threads,
        note="one model, plain PyTorch loop, same samples and batch size as the FedAvg run",
    )
    for size in sweep:
        best = math.inf
        for _ in range(max(1, repeats)):
            model, opt = fresh()
            _central_steps(model, opt, x, y, size, CENTRAL_WARMUP_STEPS * size, gen)
            t = time.perf_counter()
            done = _central_steps(model, opt, x, y, size, sweep_samples, gen)
            best = min(best, time.perf_counter() - t)
        yield record(
            f"centralized-sweep-{workload}",
            f"centralized-b{size}",
            wall_s=best,
            loop_s=best,
            samples=done,
            updates=None,
            peak_rss_mb=peak_rss_mb(),
            final_accuracy=None,
            batch_size=size,
            repeats=repeats,
            threads=threads,
        )


class NaiveLoop:
    """The naive FL loop: per round, deep-copy the global model for each device, train it, average all.

    Same data, batch size, learning rate and rounds as FedAvg; the trained copies are kept until the round's
    average, as simple simulators do. Batch orders come from one ``torch.randperm`` stream seeded with
    :data:`SEED`. ``lean=True`` is the loop a careful user writes by hand instead (``benchmarks/
    plain_fedavg.py``): one worker module loaded with the global weights per device and a running weighted
    sum, no copies kept.
    """

    def __init__(self, ctx: Any, *, lean: bool = False) -> None:
        self.lean = lean
        local = ctx.cfg.algorithm.local
        self.ctx = ctx
        self.rounds, self.batch, self.lr = (
            int(ctx.cfg.algorithm.rounds),
            int(local.batch_size),
            float(local.lr),
        )
        self.gen = torch.Generator().manual_seed(SEED)
        torch.manual_seed(SEED)
        self.model = ctx.model_fn().to(ctx.device)
        self.worker = copy.deepcopy(self.model) if lean else None
        """The lean loop's one module, loaded with the global weights for each device."""
        self.devices = [d for d in ctx.client_data if len(d) > 0]

    def round(self, clients: Sequence[Any] | None = None) -> int:
        """One round over ``clients`` (default: every device with data); returns the samples trained."""
        if self.lean:
            return self._lean_round(self.devices if clients is None else clients)
        states, weights, seen = [], [], 0
        for data in self.devices if clients is None else clients:
            model = copy.deepcopy(self.model)
            seen += self._local_epoch(model, data)
            states.append(model.state_dict())
            weights.append(float(len(data)))
        total = sum(weights)
        averaged = {k: sum(w * s[k] for s, w in zip(states, weights)) / total for k in states[0]}
        self.model.load_state_dict(averaged)
        return seen

    def _local_epoch(self, model: torch.nn.Module, data: Any) -> int:
        """One shuffled epoch of plain SGD of ``model`` on ``data`` (a fresh optimizer); samples trained."""
        import torch.nn.functional as F

        opt = torch.optim.SGD(model.parameters(), lr=self.lr)
        order = torch.randperm(len(data), generator=self.gen).to(data.y.device)
        seen = 0
        for i in range(0, len(data), self.batch):
            idx = order[i : i + self.batch]
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
        return seen

    def _lean_round(self, clients: Sequence[Any]) -> int:
        """:meth:`round` as ``benchmarks/plain_fedavg.py`` writes it: one worker module, a running sum."""
        worker = self.worker
        assert worker is not None  # built with lean=True
        start = {k: v.clone() for k, v in self.model.state_dict().items()}
        total = {k: torch.zeros_like(v) for k, v in start.items()}
        seen, weight = 0, 0.0
        for data in clients:
            worker.load_state_dict(start)
            seen += self._local_epoch(worker, data)
            for k, v in worker.state_dict().items():
                total[k] += v * len(data)
            weight += float(len(data))
        self.model.load_state_dict({k: v / weight for k, v in total.items()})
        return seen

    def warm_up(self) -> float:
        """One untimed round of the first ``WARMUP_CLIENTS`` devices, its model discarded; seconds taken."""
        snapshot = copy.deepcopy(self.model.state_dict())
        started = time.perf_counter()
        self.round(self.devices[:WARMUP_CLIENTS])
        self.model.load_state_dict(snapshot)
        return time.perf_counter() - started

    def accuracy(self) -> float:
        """Test accuracy of the global model."""
        from edgelearn.engine import evaluate_state

        ctx = self.ctx
        acc, _loss = evaluate_state(self.model, None, ctx.test_x, ctx.test_y, ctx.cfg.eval.batch_size)
        return float(acc)


def measure_naive(workload: str, config: Mapping[str, Any], threads: int) -> Iterator[dict[str, Any]]:
    """Time :class:`NaiveLoop` over the workload's rounds."""
    started = time.perf_counter()
    ctx, _x, _y = _train_data(config, threads)
    naive = NaiveLoop(ctx)
    rounds, devices = naive.rounds, naive.devices
    warmup_s = naive.warm_up()
    round_s = [timed(naive.round, device=ctx.device) for _ in range(rounds)]
    seen = rounds * sum(len(d) for d in devices)  # every device trains one epoch per round
    acc = naive.accuracy()
    yield record(
        workload,
        "naive-loop",
        wall_s=time.perf_counter() - started,
        loop_s=sum(round_s),
        samples=seen,
        updates=rounds * len(devices),
        peak_rss_mb=peak_rss_mb(),
        final_accuracy=acc,
        rounds=rounds,
        devices=len(devices),
        warmup_s=warmup_s,
        first_round_s=round_s[0],
        round_s_median=statistics.median(round_s),
        threads=threads,
        note="plain sequential PyTorch loop: copy.deepcopy of the global model per device, then average",
    )


def measure_paired(
    workload: str, config: Mapping[str, Any], labels: Sequence[str], threads: int
) -> Iterator[dict[str, Any]]:
    """Time the naive loop, the lean loop and each executor round by round in this one process, alternating
    who goes first.

    Every round of every executor runs right next to a naive and a lean round (:class:`NaiveLoop`), so all
    see the same load from other processes on a shared machine; ``speedup_vs_naive`` is the naive loop's
    time over the executor's, summed over the rounds, ``speedup_vs_naive_median_round`` the median of the
    per-round ratios, and ``speedup_vs_naive_steady`` that median from round :data:`STEADY_FROM` on (the
    steady round); ``speedup_vs_lean*`` the same against the lean loop. Peak RSS is the whole process's (both
    loops and every paired executor).
    """
    started = time.perf_counter()
    ctx0 = _train_data(config, threads)[0]
    loops = {"naive": NaiveLoop(ctx0), "lean": NaiveLoop(ctx0, lean=True)}
    runs: dict[str, tuple[Any, Any, CountingExecutor]] = {}
    for label in labels:
        ctx, algo, counter = build_fedavg(config, label, threads)
        warm_up(ctx, algo, counter.inner)
        runs[label] = (ctx, algo, counter)
    for loop in loops.values():
        loop.warm_up()
    rounds = loops["naive"].rounds
    loop_s: dict[str, list[float]] = {name: [] for name in loops}
    exec_s: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(1, rounds + 1):
        slots = [*loops, *(f"{EXECUTOR_SLOT}{label}" for label in labels)]
        for slot in slots if r % 2 else slots[::-1]:
            if slot in loops:
                loop_s[slot].append(timed(loops[slot].round, device=ctx0.device))
                continue
            label = slot.removeprefix(EXECUTOR_SLOT)
            exec_s[label].append(timed(runs[label][1].run_round, r, device=ctx0.device))
    for label, (ctx, algo, counter) in runs.items():
        times = exec_s[label]
        ratios: dict[str, float] = {}
        for name, base in loop_s.items():
            per_round = [n / max(e, MIN_DURATION_S) for n, e in zip(base, times)]
            ratios[f"speedup_vs_{name}"] = sum(base) / max(sum(times), MIN_DURATION_S)
            ratios[f"speedup_vs_{name}_median_round"] = statistics.median(per_round)
            steady = per_round[STEADY_FROM - 1 :] or per_round
            ratios[f"speedup_vs_{name}_steady"] = statistics.median(steady)
            ratios[f"{name}_round_s_median"] = statistics.median(base)
        naive = loops["naive"]
        yield record(
            f"{PAIRED_PREFIX}{workload}",
            label,
            wall_s=time.perf_counter() - started,
            loop_s=sum(times),
            samples=counter.samples,
            updates=counter.updates,
            peak_rss_mb=peak_rss_mb(),
            final_accuracy=float(algo.evaluate()["accuracy"]),
            rounds=rounds,
            devices=int(ctx.topology.num_devices),
            naive_loop_s=sum(loop_s["naive"]),
            lean_loop_s=sum(loop_s["lean"]),
            naive_final_accuracy=naive.accuracy(),
            lean_final_accuracy=loops["lean"].accuracy(),
            round_s_median=statistics.median(times),
            steady_round_s_median=statistics.median(times[STEADY_FROM - 1 :] or times),
            **ratios,
            threads=threads,
            peak_rss_scope="both loops and every paired executor in one process",
            note="timed round by round against the naive and lean loops in the same process (same machine "
            "load)",
        )
