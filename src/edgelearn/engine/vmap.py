"""The vmap executor: chunks of same-architecture clients trained in lockstep with ``torch.func``.

Per-client parameters, gradients and momentum buffers are stacked on dim 0; one ``vmap`` forward gives every
client's loss and one ``torch.autograd.grad`` of their sum gives every client's gradient (clients share no
parameter, so each gradient is its own loss's). Differentiating outside ``vmap`` rather than with
``vmap(grad(...))`` keeps torch's compile stack unloaded: ``torch.func.grad`` imports ``torch._dynamo``
(a second of start-up) on first use. Under a low-precision policy (``engine.precision``) the step is
``vmap(grad_and_value(...))``, since autocast does not reach a plain vmapped forward.

Ragged data is padded: step ``t`` gathers each client's batch ``t`` from one concatenated data tensor, padded
to that step's largest batch with the client's sample 0 under a 0/1 mask, so the loss is a masked mean.
Clients are sorted by their number of steps, so the clients that still have a step ``t`` are a prefix of the
chunk and only that prefix is computed and updated: a finished client's weights, momentum and weight decay are
never touched. Per step the Python work is a fixed number of tensor operations, whatever the number of
clients.

BatchNorm trains per client (:mod:`edgelearn.engine.vmap_norm`): its batch statistics are masked means and
variances over the client's real samples of the step, and its running statistics (stacked on dim 0 like the
parameters) come back from the vmapped forward as outputs, updated as torch's train-mode forward does, and
are written into the stacked state after the step.

Results equal :class:`~edgelearn.engine.serial.SerialExecutor`'s within float tolerance. Models the
lockstep path cannot reproduce exactly (dropout, whose random masks differ; InstanceNorm with running
statistics; a BatchNorm subclass with its own forward; tied parameters) fall back to the serial executor for
that cohort, logged once per architecture at INFO.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from edgelearn.engine.allocator import tune_host_allocator
from edgelearn.engine.batches import Schedules
from edgelearn.engine.cohort import Cohort, CohortResult, LocalSpec, LossFn, check_grad_shift
from edgelearn.engine.footprint import activation_bytes_per_sample, has_tied_parameters
from edgelearn.engine.infer import InferCohort, InferResult, InferSpec
from edgelearn.engine.precision import autocast, current_precision
from edgelearn.engine.serial import SerialExecutor
from edgelearn.engine.state import StateDict, WeightedMean
from edgelearn.engine.vmap_infer import VmapInference
from edgelearn.engine.vmap_norm import MaskedNorms, overridden_batchnorm
from edgelearn.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CPU_MEMORY_BUDGET_BYTES = 256 << 20
"""Working memory one chunk may use on a CPU (or any non-CUDA) device: 256 MiB. Bigger chunks gain nothing
on a CPU: measured here (2 cores, MLP 64-128-10, 10,000 clients, batch 16) chunks of 125 to 1,000 clients ran
a round in the same time and 4,000 took 1.5x longer (out of cache) with 2x the memory. ``engine.vmap_chunk``
overrides the estimate."""
CUDA_FREE_MEMORY_FRACTION = 0.5
"""Share of a CUDA device's currently free memory one chunk may use; the rest is left for the client data,
the evaluation model and allocator fragmentation."""
PARAM_COPIES = 5
"""Stacked per-client state copies alive during a step: weights, gradients, momentum, the proximal anchor
(or the update's temporaries) and the float64 copy aggregation makes (one more with ``Cohort.grad_shift``)."""
ACTIVATION_COPIES = 3
"""Per-sample activation memory multiplier: saved forward activations, their gradients and the batching
temporaries."""
INDEX_BYTES_PER_SLOT = 9
"""Bytes of the precomputed gather plan per (step, client, batch slot): an int64 index and a bool mask."""


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be trained in lockstep with results equal to serial, or None when it can."""
    for name, sub in module.named_modules():
        where = name or type(module).__name__
        if overridden_batchnorm(sub):
            return f"{where} is {type(sub).__name__}: a BatchNorm with its own forward"
        if isinstance(sub, nn.modules.instancenorm._InstanceNorm) and sub.track_running_stats:
            return f"{where} is {type(sub).__name__} with running statistics (updated in place)"
        if isinstance(sub, nn.modules.dropout._DropoutNd) and sub.p > 0:
            return f"{where} is {type(sub).__name__}: its random masks would differ from the serial run"
    if has_tied_parameters(module):
        return "the model has tied (shared) parameters"
    return None


def memory_budget(device: torch.device) -> int:
    """Bytes one chunk may use on ``device``: a share of free CUDA memory, else a fixed CPU budget."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_MEMORY_FRACTION)
    return CPU_MEMORY_BUDGET_BYTES


@dataclass
class _Plan:
    """A chunk's gather plan: per step, which rows of the concatenated data each active client uses."""

    index: torch.Tensor  # (steps, clients, width) int64 rows of the concatenated data; padding = sample 0
    mask: torch.Tensor  # (steps, clients, width) bool, True for real samples
    active: list[int]  # clients with a step t (a prefix of the chunk, which is sorted by steps)
    width: list[int]  # largest batch of step t
    smallest: list[int]  # smallest real batch of step t (BatchNorm's one-value-per-channel check)


def _plan(schedules: Schedules, members: np.ndarray, sizes: np.ndarray, device: torch.device) -> _Plan:
    """Build the padded gather plan of a chunk whose members are sorted by number of steps, descending.

    Vectorized over the chunk's batches and samples (no per-client Python): ``sizes`` are the members'
    numbers of samples, which place each member's rows in the concatenated data.
    """
    count = len(members)
    steps = schedules.steps[members]
    horizon = int(steps.max()) if count else 0
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if count else np.zeros(0, int)
    # One row per (member, step) batch of the chunk, member by member.
    member_of = np.repeat(np.arange(count), steps)
    step_of = np.arange(member_of.shape[0]) - np.repeat(np.cumsum(steps) - steps, steps)
    batch = np.repeat(schedules.first_batch[members], steps) + step_of
    blen = schedules.batch_len[batch]
    lens = np.zeros((horizon, count), dtype=np.int64)
    lens[step_of, member_of] = blen
    width = int(lens.max()) if lens.size else 0
    index = np.broadcast_to(offsets[None, :, None], (horizon, count, width)).copy()
    # One entry per sample of every batch: its slot in the batch and its row in the member's data.
    entry = np.repeat(np.arange(blen.shape[0]), blen)
    slot = np.arange(entry.shape[0]) - np.repeat(np.cumsum(blen) - blen, blen)
    rows = schedules.order[schedules.batch_start[batch][entry] + slot]
    index[step_of[entry], member_of[entry], slot] += rows
    lens_t = torch.as_tensor(lens, device=device)
    mask = torch.arange(width, device=device) < lens_t[..., None]
    return _Plan(
        index=torch.as_tensor(index, device=device),
        mask=mask,
        active=[int(a) for a in (steps[None, :] > np.arange(horizon)[:, None]).sum(axis=1)],
        width=[int(w) for w in lens.max(axis=1)] if count else [],
        smallest=[int(w) for w in np.where(lens > 0, lens, width).min(axis=1)] if count else [],
    )


StepFn = Callable[
    [dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor],
    tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]],
]


def make_step(module: nn.Module, loss: LossFn, norms: MaskedNorms | None = None) -> StepFn:
    """Per-client gradients and losses of the masked mean loss over (trainable, fixed, batch, mask), all
    stacked on dim 0: a ``vmap``-ed forward, then one ``torch.autograd.grad`` of the summed losses.

    The third output holds the new values of the buffers the forward updates (BatchNorm's running statistics,
    through ``norms``, the module's :class:`MaskedNorms`), stacked like ``fixed``; empty without ``norms``.
    """

    def objective(
        trainable: dict[str, torch.Tensor],
        fixed: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        def apply(x: torch.Tensor) -> torch.Tensor:
            return functional_call(module, (trainable, fixed), (x,))

        masked = norms.active(mask) if norms is not None else contextlib.nullcontext({})
        with autocast(mask.device), masked as buffers:
            per_sample = loss(apply, batch)
        if per_sample.shape != mask.shape:
            raise ConfigError(
                f"LocalSpec.loss returned shape {tuple(per_sample.shape)} for a batch of "
                f"{mask.shape[0]} samples",
                hint="return PER-SAMPLE losses of shape (batch,), "
                "e.g. F.cross_entropy(..., reduction='none')",
            )
        kept = torch.where(mask, per_sample, torch.zeros_like(per_sample))
        return kept.sum() / mask.sum().clamp_min(1), buffers

    if current_precision() != "float32":
        # Autocast reaches a vmapped forward only under a grad transform (plain vmap of batched weights stays
        # float32), so low-precision policies keep vmap(grad(...)); they are for long runs anyway.
        transformed = vmap(grad_and_value(objective, has_aux=True))

        def low_precision_step(
            trainable: dict[str, torch.Tensor],
            fixed: dict[str, torch.Tensor],
            batch: dict[str, torch.Tensor],
            mask: torch.Tensor,
        ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
            grads, (losses, buffers) = transformed(trainable, fixed, batch, mask)
            return grads, losses, buffers

        return low_precision_step
    batched = vmap(objective)

    def step(
        trainable: dict[str, torch.Tensor],
        fixed: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        mask: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        leaves = {k: v.detach().requires_grad_() for k, v in trainable.items()}
        with torch.enable_grad():
            losses, buffers = batched(leaves, fixed, batch, mask)
            grads = torch.autograd.grad(losses.sum(), list(leaves.values()), allow_unused=True)
        filled = {
            k: g if g is not None else torch.zeros_like(leaves[k]) for k, g in zip(leaves, grads, strict=True)
        }
        return filled, losses.detach(), {k: v.detach() for k, v in buffers.items()}

    return step


class VmapExecutor:
    """Trains a cohort chunk by chunk, each chunk's clients in lockstep under ``torch.func.vmap``.

    ``chunk_size`` bounds the clients trained at once (config ``engine.vmap_chunk``); None picks the largest
    chunk whose estimated footprint, ``PARAM_COPIES`` x state bytes + ``ACTIVATION_COPIES`` x batch x
    activation bytes per sample + the gather plan, per client, fits :func:`memory_budget`.
    """

    name = "vmap"

    def __init__(self, device: torch.device, chunk_size: int | None = None) -> None:
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ConfigError(
                f"engine.vmap_chunk must be a positive integer or null, got {chunk_size!r}",
                hint="set engine.vmap_chunk to e.g. 256, or leave it null to size chunks from memory",
            )
        self.device = device
        self.chunk_size = chunk_size
        if device.type == "cpu":
            tune_host_allocator(CPU_MEMORY_BUDGET_BYTES)
        self.serial = SerialExecutor(device)
        self.inference = VmapInference(device, self.serial.infer, chunk_size)
        self._modules: dict[str, nn.Module] = {}
        self._norms: dict[str, MaskedNorms | None] = {}
        self._reasons: dict[str, str | None] = {}
        self._activation: dict[str, int] = {}
        self._logged: set[str] = set()

    def _module(self, cohort: Cohort) -> nn.Module:
        """The cohort architecture's template module (built without shifting the caller's torch RNG), its
        BatchNorm layers given masked forwards (:class:`MaskedNorms`, kept in ``_norms``)."""
        module = self._modules.get(cohort.arch_key)
        if module is None:
            with torch.random.fork_rng(devices=[]):
                module = cohort.model_fn().to(self.device)
            module.train()
            self._norms[cohort.arch_key] = MaskedNorms.attach(module)
            self._modules[cohort.arch_key] = module
        return module

    def unsupported_reason(self, cohort: Cohort) -> str | None:
        """Why this cohort's model falls back to serial training (cached per architecture), or None."""
        if cohort.arch_key not in self._reasons:
            self._reasons[cohort.arch_key] = unsupported_reason(self._module(cohort))
        return self._reasons[cohort.arch_key]

    def infer(self, cohort: InferCohort, spec: InferSpec) -> InferResult:
        """Every node's outputs, a chunk of nodes per vmapped forward (:mod:`edgelearn.engine.vmap_infer`)."""
        return self.inference.infer(cohort, spec)

    def train(self, cohort: Cohort, spec: LocalSpec) -> CohortResult:
        """Local SGD for every client, chunk by chunk in lockstep; fold final states into group means."""
        n = len(cohort)
        means = [WeightedMean() for _ in range(cohort.num_groups)]
        samples = np.zeros(n, dtype=np.int64)
        steps = np.zeros(n, dtype=np.int64)
        losses = np.full(n, np.nan)
        kept: list[StateDict] | None = [] if cohort.keep_states else None
        if n == 0:
            groups: list[StateDict | None] = [None] * cohort.num_groups
            return CohortResult(groups, kept, samples, steps, losses)
        reason = self.unsupported_reason(cohort)
        if reason is not None:
            if cohort.arch_key not in self._logged:
                self._logged.add(cohort.arch_key)
                log.info("vmap executor: training %s serially because %s", cohort.arch_key, reason)
            return self.serial.train(cohort, spec)
        module = self._module(cohort)
        expected = set(module.state_dict())
        for j, start in enumerate(cohort.starts):
            if set(start) != expected:
                raise ValueError(
                    f"Cohort.starts[{j}] does not match the model's state: missing "
                    f"{sorted(expected - set(start))}, unexpected {sorted(set(start) - expected)}"
                )
        schedules = cohort.schedules(spec)
        steps[:] = schedules.steps
        samples[:] = schedules.samples
        sizes = cohort.sizes()
        order = np.argsort(-steps, kind="stable")
        size = self.chunk_size or self.auto_chunk_size(cohort, schedules)
        norms = self._norms[cohort.arch_key]
        step_fn = make_step(module, spec.loss, norms)
        slots: list[StateDict | None] = [None] * n
        for begin in range(0, n, size):
            members = order[begin : begin + size]
            state, loss_sum = self._train_chunk(
                module, (step_fn, norms), cohort, spec, members, schedules, sizes
            )
            done = steps[members] > 0
            losses[members[done]] = loss_sum[done] / steps[members[done]]
            self._fold(state, cohort, members, means)
            if kept is not None:
                columns = {k: v.unbind(0) for k, v in state.items()}
                for j, i in enumerate(members):
                    slots[int(i)] = {k: col[j].clone() for k, col in columns.items()}
        if kept is not None:
            kept.extend(s for s in slots if s is not None)
        like = cohort.starts[0]
        groups = [m.result(like) if m.total_weight > 0 else None for m in means]
        return CohortResult(
            group_states=groups, client_states=kept, samples=samples, steps=steps, train_loss=losses
        )

    def auto_chunk_size(self, cohort: Cohort, schedules: Schedules | Sequence[list[np.ndarray]]) -> int:
        """Largest number of clients whose estimated lockstep footprint fits :func:`memory_budget`.

        ``schedules``: the cohort's :class:`Schedules`, or each client's list of batches.
        """
        state_bytes = sum(v.numel() * v.element_size() for v in cohort.starts[0].values())
        if cohort.arch_key not in self._activation:
            sample = next((d.x[:1] for d in cohort.data if len(d)), None)
            self._activation[cohort.arch_key] = (
                0
                if sample is None
                else activation_bytes_per_sample(self._module(cohort), sample.to(self.device))
            )
        if isinstance(schedules, Schedules):
            trained = schedules.steps > 0
            horizon = int(schedules.steps.max()) if len(schedules) else 0
            width = int(schedules.batch_len[schedules.first_batch[trained]].max()) if trained.any() else 0
        else:
            horizon = max((len(s) for s in schedules), default=0)
            width = max((len(s[0]) for s in schedules if len(s)), default=0)
        copies = PARAM_COPIES + (cohort.grad_shift is not None)
        per_client = (
            copies * state_bytes
            + ACTIVATION_COPIES * width * self._activation[cohort.arch_key]
            + INDEX_BYTES_PER_SLOT * horizon * width
        )
        return int(max(1, min(len(cohort), memory_budget(self.device) // max(1, per_client))))

    def _stack_starts(self, cohort: Cohort, members: np.ndarray) -> StateDict:
        """Each member's start state stacked on dim 0 (fresh tensors, safe to update in place)."""
        unique, inverse = np.unique(cohort.start_of[members], return_inverse=True)
        pick = torch.as_tensor(inverse, device=self.device)
        keys = list(cohort.starts[int(unique[0])])
        return {
            k: torch.stack([cohort.starts[int(u)][k].to(self.device) for u in unique]).index_select(0, pick)
            for k in keys
        }

    def _stack_shifts(
        self, cohort: Cohort, members: np.ndarray, trainable: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor] | None:
        """The members' gradient shifts stacked on dim 0 like their parameters (zeros where a member's mapping
        does not name a parameter); None without shifts. ``trainable`` holds the stacked parameters."""
        if cohort.grad_shift is None:
            return None
        shifts = [cohort.grad_shift[int(i)] for i in members]
        names = sorted({k for s in shifts for k in s})
        if not names:
            return None
        for i, s in zip(members.tolist(), shifts):
            check_grad_shift(s, {k: v[0] for k, v in trainable.items()}, i)
        out = {}
        for k in names:
            zero = torch.zeros_like(trainable[k][0])
            out[k] = torch.stack(
                [s[k].to(device=self.device, dtype=zero.dtype) if k in s else zero for s in shifts]
            )
        return out

    def _concat_data(self, cohort: Cohort, members: np.ndarray) -> dict[str, torch.Tensor]:
        """The members' x, y and extra tensors concatenated along the sample axis."""
        index = members.tolist()
        clients = [cohort.data[i] for i in index]
        first = clients[0]
        keys = first.extra.keys()
        for i, d in zip(index, clients):
            if d.extra.keys() != keys:
                raise DataError(
                    f"cohort clients carry different extra tensors: client {index[0]} has "
                    f"{sorted(keys)}, client {i} has {sorted(d.extra)}",
                    hint="give every client of a cohort the same extra per-sample tensors",
                )
        columns = {"x": [d.x for d in clients], "y": [d.y for d in clients]}
        for k in first.extra:
            if k in columns:
                raise DataError(
                    f"client extra tensor name {k!r} clashes with x/y", hint="rename the extra tensor"
                )
            columns[k] = [d.extra[k] for d in clients]
        out: dict[str, torch.Tensor] = {}
        for k, parts in columns.items():
            try:
                # Moving a tensor already on the device is a no-op; skipping the calls saves ~1 us per client.
                on_device = all(p.device == self.device for p in parts)
                out[k] = torch.cat(parts if on_device else [p.to(self.device) for p in parts])
            except RuntimeError as exc:
                raise DataError(
                    f"cohort clients' {k!r} tensors differ in per-sample shape or dtype: {exc}",
                    hint="every client of a cohort must share the per-sample shape of x, y and extras",
                ) from exc
        return out

    def _train_chunk(
        self,
        module: nn.Module,
        stepper: tuple[StepFn, MaskedNorms | None],
        cohort: Cohort,
        spec: LocalSpec,
        members: np.ndarray,
        schedules: Schedules,
        sizes: np.ndarray,
    ) -> tuple[StateDict, np.ndarray]:
        """Lockstep SGD of one chunk (members sorted by steps, descending); final stacked state, loss sums.

        ``stepper``: the step function and the module's masked BatchNorm forwards (None without BatchNorm),
        told each step's smallest real batch. Buffers the step updates are written into the stacked state.
        """
        step_fn, norms = stepper
        state = self._stack_starts(cohort, members)
        grad_names = {n for n, p in module.named_parameters() if p.requires_grad}
        trainable = {k: v for k, v in state.items() if k in grad_names}
        fixed = {k: v for k, v in state.items() if k not in grad_names}
        anchor = {k: v.clone() for k, v in trainable.items()} if spec.prox_mu > 0 else None
        shift = self._stack_shifts(cohort, members, trainable)
        data = self._concat_data(cohort, members)
        plan = _plan(schedules, members, sizes[members], self.device)
        momentum: dict[str, torch.Tensor] = {}
        loss_sum = torch.zeros(len(members), device=self.device)
        for t, (active, width) in enumerate(zip(plan.active, plan.width)):
            rows = plan.index[t, :active, :width].reshape(-1)
            batch = {k: v.index_select(0, rows).view(active, width, *v.shape[1:]) for k, v in data.items()}
            params = {k: v[:active] for k, v in trainable.items()}
            if norms is not None:
                norms.smallest_batch = plan.smallest[t]
            grads, loss, buffers = step_fn(
                params, {k: v[:active] for k, v in fixed.items()}, batch, plan.mask[t, :active, :width]
            )
            loss_sum[:active] += loss.detach()
            for k, v in buffers.items():
                fixed[k][:active].copy_(v)
            for k, p in params.items():
                d_p = grads[k]
                if anchor is not None:
                    d_p = d_p + spec.prox_mu * (p - anchor[k][:active])
                if shift is not None and k in shift:  # as serial: after the proximal term, before decay
                    d_p = d_p + shift[k][:active]
                if spec.weight_decay != 0:
                    d_p = d_p.add(p, alpha=spec.weight_decay)
                if spec.momentum != 0:
                    if t == 0:
                        momentum[k] = d_p.clone()
                    else:
                        d_p = momentum[k][:active].mul_(spec.momentum).add_(d_p)
                p.add_(d_p, alpha=-spec.lr)
        return state, loss_sum.cpu().numpy().astype(np.float64)

    def _fold(self, state: StateDict, cohort: Cohort, members: np.ndarray, means: list[WeightedMean]) -> None:
        """Add the chunk's final states to their groups' running weighted means.

        Each group's chunk mean is one weighted reduction at the model's dtype (a BLAS dot product, no float64
        copy of the stacked states), folded in with the group's chunk weight; the running means across
        chunks stay float64 in :class:`WeightedMean`. Integer buffers keep their maximum, as there.
        """
        groups = cohort.group_of[members]
        for g in np.unique(groups):
            rows = np.nonzero(groups == g)[0]
            weights = np.asarray(cohort.weights[members[rows]], dtype=np.float64)
            total = float(weights.sum())
            share = weights / total if total > 0 else np.zeros_like(weights)
            sub: Mapping[str, torch.Tensor] = state
            if len(rows) != len(members):
                pick = torch.as_tensor(rows, device=self.device)
                sub = {k: v.index_select(0, pick) for k, v in state.items()}
            mean = {
                k: torch.tensordot(torch.as_tensor(share, dtype=v.dtype, device=v.device), v, dims=1)
                if v.is_floating_point()
                else v.amax(dim=0)
                for k, v in sub.items()
            }
            means[int(g)].add(mean, total)
