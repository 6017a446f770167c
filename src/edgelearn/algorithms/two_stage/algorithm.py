"""Two-stage edge learning with joint resource management (Lyu et al., arXiv 2404.00836).

The edge server pre-trains on its stored general data (M rounds of centralised SGD with batch D~ at clock
f~), then the devices fine-tune by federated edge learning (N rounds; each device takes one gradient on a
batch of B_k samples at clock f_k and uploads it at power p_k; the server averages weighted by batch size).
``edgelearn.planning`` chooses all of these under energy and delay budgets; this module executes the Plan for
real and charges every computation and upload to the ledger with the planned clocks and powers, so the
measured energy and delay can be set beside the prediction.

Faults (``faults`` config): a device that is unavailable in a fine-tuning round sits it out (no compute, no
upload; the server averages the gradients that arrived, weighted by batch size); a lost upload costs its full
energy and time and delivers nothing, unless ``retransmissions`` > 0 lets the device re-send it (each try
drawn afresh, each charged). The plan assumed none of this, so after every round the executor compares what
the ledger has spent plus what the remaining rounds are planned to cost with the budgets, and reports
(a warning, ``budget_left_*`` in the metrics, ``budget`` in summary.json) the first round from which the
plan's budget can no longer be met. Deadline stragglers do not apply: the plan sets every device's clock so
that all finish by the planned round time.

Ledger rounds: every pre-training step is recorded as system round 0 (the server alone works; no channel is
used), fine-tuning round n as system round n, so per-round channel gains (fading) are the ones planned for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from edgelearn.algorithms.base import Algorithm
from edgelearn.data import DatasetBundle
from edgelearn.data.shift import make_shift, wasserstein1
from edgelearn.engine import ClientData, Cohort, LocalSpec, StateDict
from edgelearn.engine.threads import Workload
from edgelearn.errors import ConfigError, EdgelearnError
from edgelearn.models import ModelInfo
from edgelearn.planning.bound import Bound, BoundConstants
from edgelearn.planning.plan import FEASIBILITY_RTOL
from edgelearn.planning.predictor import CalibratedBound, Calibration
from edgelearn.report.io import write_json_atomic
from edgelearn.seeding import Seeds
from edgelearn.system import Topology
from edgelearn.system.screen import RoundScreen

if TYPE_CHECKING:  # the run config is assembled above the algorithms
    from edgelearn.run_config import RunConfig

logger = logging.getLogger(__name__)

CONSTANTS_CACHE_VERSION = 3
"""Bumped whenever the estimators change, so stale cached constants are never reused."""


DVFS_KEY_FIELDS = ("f_max_hz", "kappa", "cycles_per_flop", "p_max_w")
"""A DVFS tier's numbers as the calibration cache keyed them before hardware had kinds and profiles."""


def hardware_cache_key(cfg: RunConfig) -> dict[str, Any]:
    """The hardware part of the calibration cache key: a DVFS tier by its four numbers alone (the key the
    cache used before profiles existed, so caches of two-stage runs stay valid), another tier by its whole
    resolved section."""
    key: dict[str, Any] = {}
    for tier, section in cfg.hardware:
        dump = section.model_dump(mode="json")
        key[tier] = {k: dump[k] for k in DVFS_KEY_FIELDS} if section.kind == "dvfs" else dump
    return key


class TwoStage(Algorithm):
    """Execute a two-stage Plan: M server SGD steps on general data, then N FEEL rounds on task data."""

    name = "two_stage"
    checkpoint_attrs = ("state", "over_budget_round")

    @classmethod
    def prepare_data(
        cls, cfg: RunConfig, bundle: DatasetBundle, seeds: Seeds
    ) -> tuple[DatasetBundle, dict[str, Any]]:
        """Carve the server's general set and the shifted task sets; estimate their Wasserstein-1 distance."""
        sh = cfg.algorithm.shift
        shifted = make_shift(
            bundle, sh.kind, sh.level, seeds.rng("shift"), general_fraction=sh.general_fraction
        )
        task = DatasetBundle(
            name=bundle.name,
            train=shifted.task_train,
            test=shifted.task_test,
            num_classes=bundle.num_classes,
            input_shape=bundle.input_shape,
            classes=bundle.classes,
            source=f"{bundle.source}; task side: {sh.kind} shift at level {sh.level}",
            mean=bundle.mean,
            std=bundle.std,
        )
        w1 = wasserstein1(shifted.general, shifted.task_train, seeds.rng("shift", 1), samples=sh.w1_samples)
        return task, {"general": shifted.general, "w1": w1}

    @classmethod
    def thread_workloads(
        cls, cfg: RunConfig, info: ModelInfo, input_shape: Sequence[int], num_classes: int, topology: Topology
    ) -> list[Workload]:
        """The largest steps the plan may take: the server's pre-training at ``max_batch_pre``, the devices'
        fine-tuning at ``max_batch_ft`` (the plan's batches are not known before planning)."""
        tc, flops, params = cfg.algorithm, info.flops_train, info.params
        return [
            Workload("server pre-training", flops, tc.max_batch_pre, 1, params),
            Workload("device fine-tuning", flops, tc.max_batch_ft, topology.num_devices, params),
        ]

    # ------------------------------------------------------------------------------------------------
    def init(self) -> None:
        """Estimate the bound constants, build the planning problem from the system model, and plan."""
        self.setup()
        self.plan = self.make_plan(self.cfg.scheme)
        for cap in self.round_caps({self.cfg.scheme: self.plan}):
            logger.warning("%s", cap["message"])
        if not self.plan.feasible:
            raise ConfigError(
                f"scheme {self.cfg.scheme!r} has no feasible plan on these budgets: {self.plan.status}",
                hint="raise budget.energy_j / budget.delay_s, or pick another algorithm.scheme",
            )
        self.over_budget_round: int | None = None
        costs = self.plan.predict(self.problem)
        self._round_costs = (  # planned (energy, delay) of each fine-tuning round, for the budget check
            np.broadcast_to(costs.round_energy_ft_j, (self.plan.N,)),
            np.broadcast_to(costs.round_delay_ft_s, (self.plan.N,)),
        )

    def make_plan(self, scheme: str) -> Any:
        """Solve the planning problem for ``scheme`` ("optimized" or a baseline); needs :meth:`setup`."""
        if scheme == "optimized":
            return self._solve_optimized(self.bound)
        return self._baselines([scheme])[scheme]

    def make_plans(self) -> dict[str, Any]:
        """Every scheme's plan, keyed as :data:`SCHEME_NAMES`: the baselines are solved once and also serve
        the joint design as its candidates (it returns the best of them where its search stopped short)."""
        from edgelearn.planning.baselines import BASELINE_SCHEMES

        baselines = self._baselines(BASELINE_SCHEMES)
        return {"optimized": self._solve_optimized(self.bound, candidates=baselines), **baselines}

    def _baselines(self, schemes: Sequence[str]) -> dict[str, Any]:
        """The baseline schemes' plans under the run's bound, method and round caps."""
        from edgelearn.planning import SearchOptions, solve_baselines

        cfg = self.cfg
        options = SearchOptions(max_ft_rounds=cfg.max_ft_rounds, max_pre_rounds=cfg.max_pre_rounds)
        return solve_baselines(
            self.problem, bound=self.bound, method=cfg.method, options=options, schemes=schemes
        )

    def _solve_optimized(self, bound: Any, candidates: Mapping[str, Any] | None = None) -> Any:
        """The joint design's Plan under ``bound`` (``candidates``: the baselines' plans under the same
        bound, when already solved)."""
        from edgelearn.planning import SearchOptions, solve

        cfg = self.cfg
        options = SearchOptions(
            max_ft_rounds=cfg.max_ft_rounds,
            max_pre_rounds=cfg.max_pre_rounds,
            min_ft_rounds=cfg.joint_min_ft_rounds,
        )
        return solve(self.problem, bound=bound, method=cfg.method, options=options, candidates=candidates)

    def setup(self) -> None:
        """Everything before planning: server, general data, initial model, bound constants, the problem."""
        from edgelearn.planning import TwoStageProblem

        ctx = self.ctx
        if ctx.cfg.channel.include_downlink:
            raise ConfigError(
                "two_stage neglects the model broadcast, as its planning model does",
                hint="set channel.include_downlink: false",
            )
        topo = ctx.topology
        self.devices = np.array(topo.devices, dtype=np.int64)
        parents = {topo.parent(int(d)) for d in self.devices}
        if len(parents) != 1:
            raise ConfigError(
                "two_stage needs one edge server with all devices under it (found devices under "
                f"{len(parents)} different parents)",
                hint="use topology.devices: K (devices under one server) or topology.edges: 1",
            )
        self.server = parents.pop()
        # the planner chooses CPU clocks (the DVFS model of Lyu et al.): the server and devices need one
        ctx.system.require_dvfs([self.server, *self.devices.tolist()], "the two-stage planner's clock choice")
        general = ctx.extras["general"]
        self.general = ClientData(
            torch.as_tensor(general.x, device=ctx.device), torch.as_tensor(general.y, device=ctx.device)
        )
        self.state: StateDict = ctx.init_state()
        model = ctx.model_fn().to(ctx.device)
        model.load_state_dict(self.state)
        task_x = torch.cat([d.x for d in ctx.client_data])
        task_y = torch.cat([d.y for d in ctx.client_data])
        self.task_sample = self._subsample(task_x, task_y)
        self.constants = self._cached(
            "constants",
            {},
            lambda: self._estimate_constants(model, (task_x, task_y)).to_dict(),
            BoundConstants.from_dict,
        )
        self.problem = self._problem(TwoStageProblem, self.constants)
        self.calibration: Calibration | None = None
        self.bound: str | Bound = self.cfg.bound
        if self.cfg.bound == "P":
            self.calibration = self._calibrate(model, (task_x, task_y))
            self.bound = CalibratedBound(self.calibration)

    def _calibrate(self, model: Any, task: tuple[torch.Tensor, torch.Tensor]) -> Calibration:
        """Form P's table from a pilot over the round ranges these budgets allow (capped by the config)."""
        from edgelearn.planning.calibrate import CALIBRATION_VERSION, Calibrator
        from edgelearn.planning.feasibility import CheapestPoint
        from edgelearn.planning.search import ft_round_limit, pre_round_limit

        pb, cal = self.problem, self.cfg.calibration
        # the most steps at half the pilot's batch (pre_round_limit counts batch-1 steps; a step's cost
        # grows linearly with the batch): plans with smaller batches gain nothing from more steps
        max_pre = pre_round_limit(pb, pb.energy_j, pb.delay_s, self.cfg.max_pre_rounds)
        max_pre = min(max_pre // max(1, cal.batch_pre // 2), cal.max_pre_steps)
        max_ft = ft_round_limit(pb, CheapestPoint(pb), pb.energy_j, pb.delay_s, self.cfg.max_ft_rounds)
        max_ft = min(max_ft, cal.max_ft_steps)
        tc = self.cfg
        settings = {  # the refinement below solves the joint plan, so what it depends on is keyed too
            "version": CALIBRATION_VERSION,
            "max_pre": max_pre,
            "max_ft": max_ft,
            "budget": tc.budget.model_dump(),
            "planner": [tc.local.lr, tc.method, tc.max_ft_rounds, tc.joint_min_ft_rounds],
            "batch_caps": [tc.max_batch_pre, tc.max_batch_ft],
            "system": [hardware_cache_key(self.ctx.cfg), self.ctx.cfg.channel.model_dump(mode="json")],
            **cal.model_dump(),
        }

        def measure() -> dict[str, Any]:
            calibrator = Calibrator(
                model,
                (self.general.x, self.general.y),
                task,
                batch_ft=cal.batch_ft,
                lr_pre=self.cfg.eta_pre,
                lr_ft=self.cfg.local.lr,
                probe_samples=cal.probe_samples,
                metric=cal.metric,
                repeats=cal.repeats,
                seed=self.ctx.seeds.int_seed("calibration"),
            )
            table = calibrator.measure(
                max_pre=max_pre,
                max_ft=max_ft,
                batch_pre=cal.batch_pre,
                pre_points=cal.pre_points,
                ft_points=cal.ft_points,
                sensitivity_steps=cal.sensitivity_steps,
            )
            # The pre-training sensitivity is a chord (module docstring of planning/calibrate.py); where the
            # joint plan pre-trains on a smaller batch than the table's, measure that batch too and keep the
            # steeper slope, until the plan stays where the table was measured or the rounds run out.
            for _ in range(cal.refine_rounds):
                plan = self._solve_optimized(CalibratedBound(table))
                if plan.M == 0 or plan.batch_pre * 2 >= table.batch_pre:
                    break
                slope = calibrator.pre_sensitivity(table, plan.M, plan.batch_pre)
                if slope <= table.sensitivity_pre:
                    break
                table = replace(table, sensitivity_pre=slope)
            return table.to_dict()

        return self._cached("calibration", settings, measure, Calibration.from_dict)

    def _estimate_constants(self, model: Any, task: tuple[torch.Tensor, torch.Tensor]) -> Any:
        """Bound constants at the initial model and along a pilot pre-training on the general data."""
        from edgelearn.planning.constants import estimate_constants, pilot_run, pl_constant

        cfg = self.cfg
        general = (self.general.x, self.general.y)
        if not cfg.pilot_steps:
            return estimate_constants(model, task, general, seed=cfg.constants_seed)
        pilot = pilot_run(
            model,
            general,
            steps=cfg.pilot_steps,
            batch_size=cfg.pilot_batch,
            lr=cfg.eta_pre,
            count=cfg.pilot_checkpoints,
            seed=self.ctx.seeds.int_seed("pilot"),
        )
        constants = estimate_constants(
            model, task, general, checkpoints=pilot.states, seed=cfg.constants_seed
        )
        return replace(constants, mu=pl_constant(pilot.steps, pilot.losses, cfg.eta_pre))

    def _cached(self, kind: str, settings: dict[str, Any], compute: Any, decode: Any) -> Any:
        """``decode(compute())`` (``compute`` returns a JSON-ready dict), or ``decode`` of its earlier result
        from ``constants_cache`` when all it depends on matches.

        The key hashes ``kind``, the config sections the pilot and estimators read (data, split, topology,
        model, shift, seed, step size, estimator settings), ``settings`` and the cache's format version;
        budgets and the scheme are not in it unless ``settings`` names them, so a sweep over them
        estimates once.
        """
        if self.cfg.constants_cache is None:
            return decode(compute())
        run = self.ctx.cfg
        algo = self.cfg
        keyed = {
            "version": CONSTANTS_CACHE_VERSION,
            "kind": kind,
            "seed": run.seed,
            "data": run.data.model_dump(mode="json"),
            "partition": run.partition.model_dump(mode="json"),
            "topology": run.topology.model_dump(mode="json"),
            "model": run.model.model_dump(mode="json"),
            "shift": algo.shift.model_dump(mode="json"),
            "estimator": {
                k: getattr(algo, k)
                for k in ("eta_pre", "constants_seed", "pilot_steps", "pilot_batch", "pilot_checkpoints")
            },
            "settings": settings,
            "torch": torch.__version__,
        }
        digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:24]
        path = Path(self.cfg.constants_cache) / f"{kind}-{digest}.json"
        if path.is_file():
            try:
                return decode(json.loads(path.read_text())[kind])
            except (OSError, ValueError, KeyError, TypeError, EdgelearnError) as exc:
                logger.warning("ignoring unreadable %s cache %s (%s); re-estimating", kind, path, exc)
        value = compute()
        write_json_atomic(path, {"key": keyed, kind: value})
        return decode(value)

    def _problem(self, problem_cls: Any, constants: Any) -> Any:
        """The planner's view of this run: hardware and channels from the system model, data, budgets."""
        ctx, cfg, system = self.ctx, self.cfg, self.ctx.system
        dev, s = self.devices, self.server
        flops = float(ctx.info.flops_train)
        fading = ctx.cfg.channel.fading != "none"
        rounds = np.arange(1, cfg.max_ft_rounds + 1)
        gain = (
            np.stack([system.channel.gain(dev, int(r)) for r in rounds])
            if fading
            else system.channel.gain(dev, 1)
        )
        return problem_cls.from_arrays(
            f_max_server=float(system.f_max_hz[s]),
            kappa_server=float(system.kappa[s]),
            cycles_per_sample_server=flops * float(system.cycles_per_flop[s]),
            general_size=len(self.general),
            eta_pre=cfg.eta_pre,
            f_max=system.f_max_hz[dev],
            kappa=system.kappa[dev],
            cycles_per_sample=flops * system.cycles_per_flop[dev],
            p_max=system.p_max_w[dev],
            bandwidth=system.channel.bandwidth(dev),
            gain=gain,
            data_sizes=np.array([ctx.data_size(int(d)) for d in dev], dtype=np.float64),
            noise_psd=10 ** (ctx.cfg.channel.noise_psd_dbm_per_hz / 10) / 1000,
            payload_bits=8.0 * ctx.info.param_bytes,
            eta_ft=cfg.local.lr,
            energy_j=cfg.budget.energy_j,
            delay_s=cfg.budget.delay_s,
            constants=constants,
            max_batch_pre=cfg.max_batch_pre,
            max_batch_ft=cfg.max_batch_ft,
        )

    def _subsample(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(self.cfg.grad_norm_samples, len(y))
        idx = torch.as_tensor(self.ctx.seeds.rng("grad_norm").choice(len(y), size=n, replace=False))
        return x[idx.to(x.device)], y[idx.to(y.device)]

    @property
    def pretrain_rounds(self) -> int:
        """Runner rounds spent pre-training: M server steps in at most ``pretrain_log_points`` chunks."""
        return -(-self.plan.M // self.pretrain_chunk) if self.plan.M else 0

    @property
    def pretrain_chunk(self) -> int:
        """Server SGD steps per runner round of the pre-training stage."""
        return max(1, -(-self.plan.M // self.cfg.pretrain_log_points))

    @property
    def rounds(self) -> int:
        """Pre-training chunks plus N fine-tuning rounds."""
        return self.pretrain_rounds + int(self.plan.N)

    def run_round(self, round_: int) -> dict[str, Any]:
        """A chunk of pre-training steps (first rounds) or one FEEL round."""
        if round_ <= self.pretrain_rounds:
            return self._pretrain_steps(round_)
        return self._finetune_round(round_ - self.pretrain_rounds - 1)

    def _train(
        self,
        data: list[ClientData],
        batches: np.ndarray,
        lr: float,
        seeds: np.ndarray,
        steps: int = 1,
        weights: np.ndarray | None = None,
    ) -> Any:
        cohort = Cohort(
            model_fn=self.ctx.model_fn,
            arch_key=self.ctx.arch_key,
            data=data,
            starts=[self.state],
            start_of=np.zeros(len(data), dtype=np.int64),
            group_of=np.zeros(len(data), dtype=np.int64),
            num_groups=1,
            # aggregation weighted by batch size (our reading of the paper); a lost gradient has weight 0
            weights=(batches if weights is None else weights).astype(np.float64),
            seeds=seeds,
            batch_sizes=batches,
        )
        spec = LocalSpec(lr=lr, batch_size=int(batches.max()), epochs=None, steps=steps)
        return self.ctx.executor.train(cohort, spec)

    def _pretrain_steps(self, round_: int) -> dict[str, Any]:
        """Server SGD steps ``(round_-1)*chunk+1 .. min(round_*chunk, M)`` on the general data."""
        system, plan = self.ctx.system, self.plan
        steps = min(self.pretrain_chunk, plan.M - (round_ - 1) * self.pretrain_chunk)
        system.begin_round(0)
        seeds = self.ctx.client_seeds("pretrain", round_, [self.server])
        result = self._train([self.general], np.array([plan.batch_pre]), self.cfg.eta_pre, seeds, steps=steps)
        self.check_finite(result, [self.server], round_)
        self.state = result.group_states[0]
        flops = float(result.samples[0]) * self.ctx.info.flops_train
        system.compute(self.server, flops, freq_hz=plan.f_server, phase="pretrain")
        system.end_round()
        return {
            "stage": "pretrain",
            "pretrain_steps": int(result.steps[0]),
            "train_loss": float(result.train_loss[0]),
        }

    def _finetune_round(self, n: int) -> dict[str, Any]:
        """FEEL round n: available devices compute their planned batch and upload; the server averages what
        arrived (weighted by batch size); faults and the budget are accounted as the module doc says."""
        ctx, system = self.ctx, self.ctx.system
        round_ = n + 1
        batches, freqs, powers = self.plan.round_allocation(n)
        batches = np.asarray(batches, dtype=np.int64)
        freqs, powers = np.broadcast_to(freqs, batches.shape), np.broadcast_to(powers, batches.shape)
        system.begin_round(round_)
        # the plan fixes every round of its one server: edge outages do not apply
        screen = RoundScreen.open(system, round_, self.devices, edge_outages=False)
        on, nodes = screen.active_mask, screen.active
        # Which tries get through is drawn first (seeded per round and try, so order never matters); the
        # ledger then sees each device compute, then upload (a re-send starts when the previous try ends).
        attempts = screen.retry_uploads(self.cfg.retransmissions)
        arrived = screen.arrived_mask
        stats: dict[str, Any] = {"stage": "finetune"}
        if len(nodes):
            data = [ctx.client_data[ctx.ordinal(int(d))] for d in nodes]
            seeds = ctx.client_seeds("train", round_, self.devices)[on]
            cohort_batches = batches[on]
            result = self._train(
                data, cohort_batches, self.cfg.local.lr, seeds, weights=cohort_batches * arrived
            )
            self.check_finite(result, nodes, self.plan.M + round_)
            if arrived.any():
                self.state = result.group_states[0]
            system.compute(
                nodes, cohort_batches * float(ctx.info.flops_train), freq_hz=freqs[on], phase="finetune"
            )
            stats["train_loss"] = float(np.average(result.train_loss, weights=cohort_batches))
        for sending in attempts:
            senders = nodes[sending]
            system.transmit(
                senders,
                np.full(len(senders), self.server),
                ctx.info.param_bytes,
                power_w=powers[on][sending],
                phase="upload",
            )
        system.end_round()
        stats.update(screen.close())
        stats.update(self._budget_check(n))
        return stats

    def _budget_check(self, n: int) -> dict[str, float]:
        """Spent so far plus the plan's cost of rounds n+1..N-1 against the budgets; warn once when over."""
        plan, totals = self.plan, self.ctx.system.ledger.totals()
        round_e, round_t = self._round_costs
        left_e = plan.energy_budget_j - float(totals["energy_j"]) - float(round_e[n + 1 :].sum())
        left_t = plan.delay_budget_s - float(totals["delay_s"]) - float(round_t[n + 1 :].sum())
        over = (
            left_e < -FEASIBILITY_RTOL * plan.energy_budget_j
            or left_t < -FEASIBILITY_RTOL * plan.delay_budget_s
        )
        if over and self.over_budget_round is None:
            self.over_budget_round = self.plan.M + n + 1
            logger.warning(
                "two_stage: after fine-tuning round %d the plan can no longer meet its budgets (projected "
                "%.4g J of %.4g J, %.4g s of %.4g s): faults cost more than planned",
                n + 1,
                plan.energy_budget_j - left_e,
                plan.energy_budget_j,
                plan.delay_budget_s - left_t,
                plan.delay_budget_s,
            )
        return {"budget_left_j": left_e, "budget_left_s": left_t}

    def round_caps(self, plans: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The round caps that bind on ``plans`` (scheme -> Plan); see planning.caps.binding_caps."""
        from edgelearn.planning.caps import binding_caps

        return binding_caps(self.problem, plans, self.cfg.max_pre_rounds, self.cfg.max_ft_rounds)

    def estimates(self) -> dict[str, Any]:
        """The shift (its settings and measured W1) and the bound constants the plan was made with."""
        return {
            "shift": {**self.cfg.shift.model_dump(), "w1": float(self.ctx.extras["w1"])},
            "constants": dict(vars(self.constants)),
            **({"calibration": self.calibration.to_dict()} if self.calibration is not None else {}),
        }

    def delivered_state(self) -> StateDict:
        """The current model: pre-trained so far, then fine-tuned."""
        return self.state

    def evaluate(self) -> dict[str, Any]:
        """Task test accuracy and loss, plus the measured squared gradient norm of the task loss (E7)."""
        out = super().evaluate()
        if self.cfg.grad_norm_samples:
            out["grad_norm_sq"] = self._grad_norm_sq()
        return out

    def _grad_norm_sq(self) -> float:
        module = self._eval_module
        assert module is not None  # set by evaluate()
        module.load_state_dict(self.state)
        module.eval()
        x, y = self.task_sample
        params = [p for p in module.parameters() if p.requires_grad]
        grads = torch.autograd.grad(F.cross_entropy(module(x), y), params)
        return float(sum((g.double() ** 2).sum() for g in grads))

    def summary_extras(self) -> dict[str, Any]:
        """The plan, its predicted energy/delay beside the ledger's, the shift and the bound constants."""
        totals = self.ctx.system.ledger.totals()
        plan = self.plan
        return {
            "scheme": self.cfg.scheme,
            "plan": plan.to_json(),
            "predicted": {"energy_j": plan.energy_j, "delay_s": plan.delay_s},
            "measured": {"energy_j": float(totals["energy_j"]), "delay_s": float(totals["delay_s"])},
            "round_caps": self.round_caps({self.cfg.scheme: plan}),
            **self.estimates(),
            "budget": {
                "met": self.over_budget_round is None,
                "over_from_round": self.over_budget_round,
                "energy_budget_j": plan.energy_budget_j,
                "delay_budget_s": plan.delay_budget_s,
            },
            **({"faults": self.ctx.system.faults.totals()} if self.ctx.system.faults.enabled else {}),
        }


SCHEME_NAMES = ("optimized", "finetune_only", "pretrain_only", "fixed_ratio", "no_optimization", "separate")
