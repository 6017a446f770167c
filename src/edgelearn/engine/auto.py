"""The auto executor: picks serial or vmap per workload, by a fixed rule or a quick measured probe.

Default mode ``"rule"`` is deterministic, so a config and seed reproduce bit for bit: cohorts with fewer than
``MIN_PROBED_CLIENTS`` clients holding data, or models vmap cannot train exactly (dropout, tied weights; see
:func:`edgelearn.engine.vmap.unsupported_reason`), go to serial; otherwise vmap on CUDA, and on CPU vmap only
for models of at most ``RULE_CPU_MAX_PARAMS`` parameters. BatchNorm models follow the same rule: vmap trains
them per client with masked statistics (:mod:`edgelearn.engine.vmap_norm`). The threshold comes from our
measurements on a 2-core CPU (100-500 clients, 10 local SGD steps at batch 32, and ``benchmarks/bench.py``):
vmap won 4.5-10x for MLPs of 10k-25k parameters and lost (0.6x) for a 100k-parameter MLP, whose per-client
work already saturates the cores.

Mode ``"probe"`` measures instead (never assumes): for each (architecture, cohort-size bucket, device) the
first cohort seen is probed. ``PROBE_CLIENTS`` of its clients (evenly spaced over those with data) each run
``PROBE_STEPS`` real SGD steps with the real loss and batch sizes, once to warm up and then
``PROBE_REPEATS`` times per executor (once if a run already takes ``PROBE_SETTLED_S``); the best time
of each counts. vmap is chosen only if it is at least ``VMAP_MIN_SPEEDUP`` times faster than serial; ties
go to serial, the reference that needs no stacked memory. Cohorts with fewer than ``MIN_PROBED_CLIENTS``
clients holding data, and models vmap cannot train exactly (dropout, tied weights), go to serial without a
probe. The probe is conservative for vmap: its per-step overhead is amortized over more clients
in a full cohort than in the probe.

Inference (``infer``) follows a rule in both modes: vmap on CUDA for cohorts of at least ``MIN_INFER_NODES``
nodes with samples whose model the vmapped eval forward runs exactly
(:func:`edgelearn.engine.vmap_infer.infer_unsupported_reason`), serial otherwise, and always serial on a CPU.
Measured with ``benchmarks/infer.py`` on this 2-core CPU at one thread: no-grad batches of 128 are already
compute-bound per model, and under vmap the convolutions of a chunk become one grouped convolution, which
oneDNN runs slower than the separate ones (100 cnn_small models on 2,000 shared samples: vmap 0.63-0.69x of
serial; 20 resnet8: 0.2-0.75x; an MLP: 1.0x). On CUDA the pick follows training's rule unmeasured (no GPU was
at hand): there per-model kernel launches dominate small models, which one vmapped forward amortizes. It never
probes: an evaluation is short, and a probe would cost about as much as the call it chooses for.

Results do not depend on the pick beyond float rounding: both executors train the same batches with the
same SGD (see :mod:`edgelearn.engine.vmap`). Bit-identical reruns of cohorts that get probed need a pinned
executor (``serial`` or ``vmap``), since a timing can differ between runs; ``choices`` says what was used.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

from edgelearn.engine.cohort import Cohort, CohortResult, LocalSpec
from edgelearn.engine.infer import InferCohort, InferResult, InferSpec
from edgelearn.engine.precision import current_precision
from edgelearn.engine.serial import SerialExecutor
from edgelearn.engine.vmap import VmapExecutor

log = logging.getLogger(__name__)

MIN_PROBED_CLIENTS = 16
"""Cohorts with fewer clients holding data train serially without a probe. Measured here (2 cores, 2 steps of
batch 16): at 2-4 clients serial is as fast or faster for mlp, cnn_small and resnet8, and below 16 clients
vmap saves at most tens of milliseconds a round, too little to let a run's exact bits depend on a timing."""
PROBE_CLIENTS = 32
"""Clients in the probe slice: enough that vmap's per-step overhead is visible and amortized, small enough
that the probe costs a fraction of a round."""
PROBE_STEPS = 2
"""SGD steps each probe client runs (the first step of momentum differs from later ones)."""
PROBE_REPEATS = 2
"""Timed probe runs per executor after one warm-up run; the minimum is kept (robust to a busy machine)."""
PROBE_SETTLED_S = 0.5
"""A timed probe run at least this long is not repeated: timer and scheduler noise are then small
relative to it, and repeating a slow model's probe would cost more than the choice can save."""
RULE_CPU_MAX_PARAMS = 50_000
"""Rule mode on CPU: vmap for models up to this many parameters (see the module docstring)."""
VMAP_MIN_SPEEDUP = 1.1
"""vmap must beat serial by this factor in the probe to be picked: serial is the reference and uses no
stacked per-client memory, so near-ties go to it."""

MIN_INFER_NODES = 16
"""Inference cohorts with fewer nodes holding samples run serially: a handful of models gains little from
being stacked, and the rule keeps small evaluations on the reference path."""


def size_bucket(n: int) -> int:
    """Cohort-size bucket: the next power of two >= n, so cohorts of similar size share one probe."""
    return 1 << max(0, n - 1).bit_length()


def _sync(device: torch.device) -> None:
    """Wait for queued accelerator work, so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AutoExecutor:
    """Delegates each cohort to serial or vmap, whichever a quick probe on that workload measured faster.

    ``choices`` maps ``"<arch_key>|n<=<bucket>|<device>"`` to the pick and its measurements (seconds of the
    probe for each executor, probe size, reason), for benchmarks to report.
    """

    name = "auto"

    def __init__(self, device: torch.device, chunk_size: int | None = None, mode: str = "rule") -> None:
        if mode not in ("rule", "probe"):
            raise ValueError(f"auto executor mode must be 'rule' or 'probe', got {mode!r}")
        self.mode = mode
        self.device = device
        self.serial = SerialExecutor(device)
        self.vmap = VmapExecutor(device, chunk_size=chunk_size)
        self.choices: dict[str, dict[str, Any]] = {}

    def train(self, cohort: Cohort, spec: LocalSpec) -> CohortResult:
        """Train the cohort with the executor chosen for its workload (probing on first sight)."""
        pick = self.choose(cohort, spec)
        return (self.vmap if pick == "vmap" else self.serial).train(cohort, spec)

    def infer(self, cohort: InferCohort, spec: InferSpec) -> InferResult:
        """Infer the node models with the executor the inference rule picks (module docstring)."""
        pick = self.choose_infer(cohort)
        return (self.vmap if pick == "vmap" else self.serial).infer(cohort, spec)

    def choose_infer(self, cohort: InferCohort) -> str:
        """``"serial"`` or ``"vmap"`` for an inference cohort, by the rule; the pick is kept in ``choices``
        under ``"infer|<arch_key>|n<=<bucket>|<device>|<precision>"`` (the policy can rule vmap out)."""
        key = f"infer|{cohort.arch_key}|n<={size_bucket(len(cohort))}|{self.device}|{current_precision()}"
        if key not in self.choices:
            self.choices[key] = self._infer_rule(cohort)
            log.info("auto executor: %s -> %s", key, self.choices[key])
        return str(self.choices[key]["executor"])

    def _infer_rule(self, cohort: InferCohort) -> dict[str, Any]:
        """The inference pick and why (module docstring)."""
        if int((cohort.sizes() > 0).sum()) < MIN_INFER_NODES:
            return {"executor": "serial", "reason": f"fewer than {MIN_INFER_NODES} nodes with samples"}
        unsupported = self.vmap.inference.unsupported_reason(cohort)
        if unsupported is not None:
            return {"executor": "serial", "reason": f"vmap unsupported: {unsupported}"}
        if self.device.type == "cuda":
            return {"executor": "vmap", "reason": "rule: CUDA"}
        return {"executor": "serial", "reason": "rule: CPU (vmapped grouped convolutions are slower there)"}

    def key(self, cohort: Cohort) -> str:
        """The cache key of a cohort's workload: architecture, size bucket and device."""
        return f"{cohort.arch_key}|n<={size_bucket(len(cohort))}|{self.device}"

    def choose(self, cohort: Cohort, spec: LocalSpec) -> str:
        """``"serial"`` or ``"vmap"`` for this cohort, from the cache or a fresh probe."""
        key = self.key(cohort)
        if key not in self.choices:
            self.choices[key] = self._decide(cohort, spec)
            log.info("auto executor: %s -> %s", key, self.choices[key])
        return str(self.choices[key]["executor"])

    def _decide(self, cohort: Cohort, spec: LocalSpec) -> dict[str, Any]:
        """Probe both executors on a slice of the cohort (or skip the probe where the answer is forced)."""
        with_data = np.array([i for i, d in enumerate(cohort.data) if len(d) > 0], dtype=np.int64)
        base: dict[str, Any] = {"serial_s": None, "vmap_s": None, "probe_clients": 0, "probe_steps": 0}
        if len(with_data) < MIN_PROBED_CLIENTS:
            reason = f"fewer than {MIN_PROBED_CLIENTS} clients with data"
            return {"executor": "serial", **base, "reason": reason}
        unsupported = self.vmap.unsupported_reason(cohort)
        if unsupported is not None:
            return {"executor": "serial", **base, "reason": f"vmap unsupported: {unsupported}"}
        if self.mode == "rule":
            return {"executor": self._rule(cohort), **base, "reason": "rule (deterministic)"}
        take = min(len(with_data), PROBE_CLIENTS)
        members = with_data[np.linspace(0, len(with_data) - 1, take).round().astype(np.int64)]
        probe = self._probe_cohort(cohort, members)
        probe_spec = dataclasses.replace(spec, epochs=None, steps=PROBE_STEPS)
        # Probing builds modules and must not shift the caller's torch RNG stream.
        with torch.random.fork_rng(devices=[]):
            serial_s = self._time(self.serial, probe, probe_spec)
            vmap_s = self._time(self.vmap, probe, probe_spec)
        pick = "vmap" if vmap_s * VMAP_MIN_SPEEDUP < serial_s else "serial"
        return {
            "executor": pick,
            "serial_s": serial_s,
            "vmap_s": vmap_s,
            "probe_clients": int(take),
            "probe_steps": PROBE_STEPS,
            "reason": f"measured (vmap must be >= {VMAP_MIN_SPEEDUP}x faster)",
        }

    def _rule(self, cohort: Cohort) -> str:
        """vmap on CUDA; on CPU only for small models (per-client overhead dominates, vmap amortizes it)."""
        if self.device.type == "cuda":
            return "vmap"
        params = sum(int(v.numel()) for v in cohort.starts[0].values() if v.is_floating_point())
        return "vmap" if params <= RULE_CPU_MAX_PARAMS else "serial"

    @staticmethod
    def _probe_cohort(cohort: Cohort, members: np.ndarray) -> Cohort:
        """Clients ``members`` of ``cohort`` as one group, with their data, starts, seeds and batch sizes."""
        return Cohort(
            model_fn=cohort.model_fn,
            arch_key=cohort.arch_key,
            data=[cohort.data[int(i)] for i in members],
            starts=cohort.starts,
            start_of=cohort.start_of[members],
            group_of=np.zeros(len(members), dtype=np.int64),
            num_groups=1,
            weights=np.ones(len(members)),
            seeds=cohort.seeds[members],
            batch_sizes=None if cohort.batch_sizes is None else cohort.batch_sizes[members],
            grad_shift=None if cohort.grad_shift is None else [cohort.grad_shift[int(i)] for i in members],
        )

    def _time(self, executor: SerialExecutor | VmapExecutor, cohort: Cohort, spec: LocalSpec) -> float:
        """Best wall-clock seconds of up to ``PROBE_REPEATS`` runs after one warm-up run."""
        executor.train(cohort, spec)
        best = float("inf")
        for _ in range(PROBE_REPEATS):
            _sync(self.device)
            started = time.perf_counter()
            executor.train(cohort, spec)
            _sync(self.device)
            best = min(best, time.perf_counter() - started)
            if best >= PROBE_SETTLED_S:
                break
        return best
