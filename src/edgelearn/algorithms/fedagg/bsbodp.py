"""Bridge-sample based online distillation, BSBODP (Wu et al., INFOCOM 2024, Algorithms 1-2): one directional
distillation step over (parent, child) pairs, and the two schedules that order them.

Schedules (one round = one ``FEDAGG_TRAIN(root)``):

* ``parallel`` (Algorithm 2 with children in parallel): levels of parents, deepest first; at each level every
  child of every parent there learns from its parent at once (devices as one executor cohort, edges as
  another), then every parent learns from the union of its children's subtree bridge samples in one pass.
* ``sequential`` (the official demo's ``train_FedAgg``): depth first, child by child: ``DIR(child,
  parent)`` then ``DIR(parent, child)`` over that child's subtree, a non-leaf child finishing its own
  subtree first.

Deviations from the demo, on purpose: every device has its own model (the demo's 225 devices share 15);
teachers infer in eval mode under no_grad (``demo_compat: true`` restores train-mode teachers); bridge samples
are mapped to the data's scale (``bridge_scale: unit`` restores the raw [0, 1] decoder output).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from edgelearn.algorithms.base import local_spec
from edgelearn.algorithms.fedagg.bridge import logit_bytes
from edgelearn.algorithms.fedagg.config import FedAggConfig
from edgelearn.algorithms.fedagg.subtree import SubtreeViews
from edgelearn.algorithms.kit.distill import (
    BRIDGE_KEY,
    TEACHER_KEY,
    LogitCache,
    leaf_loss,
    non_leaf_loss,
    spare_cpu_core,
    teacher_logits,
)
from edgelearn.algorithms.kit.nodes import NodeModels
from edgelearn.engine import ClientData, Cohort, CohortResult
from edgelearn.engine.infer import InferCohort, InferSpec
from edgelearn.engine.infer import logits as logits_of

# Ledger phases of a distillation step.
PHASE_TEACHER = "kd_teacher"
PHASE_LOGITS_DOWN = "kd_logits_down"
PHASE_LOGITS_UP = "kd_logits_up"
PHASE_STUDENT = "kd_student"

DOWN, UP = 0, 1
"""Direction codes in seeds and the call trace: DOWN = child learns from parent, UP = parent from child."""
LEAF_STEP_PASSES = 2
"""A leaf step runs the model on the real and the bridge version of each sample (predicted device work)."""


@dataclass
class _Student:
    """One student of a directional call: its data (with the teacher's logits) and who taught it."""

    node: int
    data: ClientData
    leaf: bool
    teacher: int


class BSBODP(SubtreeViews):
    """The distillation step of :class:`~edgelearn.algorithms.fedagg.algorithm.FedAgg`: teachers' logits
    (cached and prefetched), students trained through the executor in cohorts, FLOPs and logits charged.

    Expects, besides :class:`SubtreeViews`' attributes, ``cfg`` (:class:`FedAggConfig`), ``models``
    (:class:`NodeModels`), ``num_classes``, ``trace``, ``wall``, ``_lost`` and ``check_finite`` (from
    :class:`~edgelearn.algorithms.base.Algorithm`).
    """

    cfg: FedAggConfig
    models: NodeModels
    num_classes: int
    trace: list[tuple[int, int, int]]
    wall: dict[str, float]
    _lost: frozenset[int]

    def _teach(self, teacher: int, ordinals: Sequence[int]) -> torch.Tensor:
        """``teacher``'s logits on the bridges of ``ordinals`` (:meth:`_teach_all` for one teacher)."""
        return self._teach_all([(teacher, ordinals)])[0]

    def _teach_all(self, requests: Sequence[tuple[int, Sequence[int]]]) -> list[torch.Tensor]:
        """Each (teacher, ordinals) request's logits on the bridges of those ordinals, no-grad, eval mode
        (callers charge it); the teachers of one level ask together.

        A non-leaf teacher's logits are reused while its state is unchanged: an edge teaches the cloud at
        the end of a round and its devices at the start of the next with the same model on the same rows,
        and downward logits may have been computed ahead by :meth:`_prefetch_down`. The rest (the cache's
        misses) go to the executor, one ``infer`` call per architecture, so a level's same-architecture
        teachers infer at once (vmapped or spread over Ray workers where the executor does that). Reuse
        returns exactly what a fresh computation would (same rows, same batch size, eval mode), and so does
        the serial executor's ``infer`` what :func:`teacher_logits` did. Prefetches stay in the cache's own
        thread (:func:`teacher_logits` on a module of its own): the executor serves the foreground only.
        """
        started = time.perf_counter()
        if self.cfg.demo_compat:
            out = [self._teach_train_mode(teacher, ordinals) for teacher, ordinals in requests]
        else:
            out = self._infer_teachers(requests)
        self.wall["teacher"] += time.perf_counter() - started
        return out

    def _teach_train_mode(self, teacher: int, ordinals: Sequence[int]) -> torch.Tensor:
        """The official demo's teacher: train mode on the student's batch size; BatchNorm's running
        statistics it updated are kept (a stateful pass per teacher, so never batched)."""
        bridges, _ = self.store.take(ordinals)
        module = self.models.module(teacher)
        logits = teacher_logits(module, bridges, batch_size=self.cfg.local.batch_size, train_mode=True)
        self.models.states[teacher] = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return logits

    def _infer_teachers(self, requests: Sequence[tuple[int, Sequence[int]]]) -> list[torch.Tensor]:
        """Cache hits as they are, the misses grouped by architecture into executor ``infer`` calls; a
        non-leaf teacher's fresh logits are stored (a device always trains before it teaches again)."""
        cache = self._logit_cache()
        out: list[torch.Tensor | None] = []
        rows_of = [self._rows(ordinals) for _, ordinals in requests]
        misses: dict[str, list[int]] = defaultdict(list)  # architecture key -> indices into requests
        for j, (teacher, _) in enumerate(requests):
            hit = cache.lookup(teacher, self.models.states[teacher], rows_of[j])
            if hit is not None:
                self.wall["teacher_background"] += hit[1]
            else:
                misses[self.models.arch_of[teacher]].append(j)
            out.append(None if hit is None else hit[0])
        spec = InferSpec(batch_size=self.cfg.teacher_batch_size, output=logits_of)
        for key, picked in misses.items():
            arch = self.models.archs[key]
            teachers = [requests[j][0] for j in picked]
            states = [self.models.states[t] for t in teachers]
            inputs = [self.store.take(rows_of[j])[0] for j in picked]
            result = self.ctx.executor.infer(InferCohort(arch.model_fn, arch.key, states, inputs), spec)
            for j, teacher, state, z in zip(picked, teachers, states, result.output()):
                out[j] = z
                if not self.is_leaf(teacher):
                    cache.store(teacher, state, rows_of[j], z)
        done = [z for z in out if z is not None]
        if len(done) != len(requests):  # every miss was inferred above
            raise RuntimeError(f"{len(requests) - len(done)} teachers' logits were not computed")
        return done

    def _logit_cache(self) -> LogitCache:
        """This run's :class:`LogitCache` (built on first use; background prefetch only where it can help)."""
        cache: LogitCache | None = getattr(self, "_logits", None)
        if cache is None:
            cfg = self.cfg
            background = (
                cfg.schedule == "parallel" and not cfg.demo_compat and spare_cpu_core(self.ctx.device)
            )
            cache = LogitCache(batch_size=cfg.teacher_batch_size, background=background)
            self._logits = cache
        return cache

    def _prefetch_down(self, current: Sequence[tuple[int, int]]) -> None:
        """Start the downward logits of every level above ``current`` in a background thread.

        In the parallel schedule a parent trains only after it has taught its own children, so the teachers
        of the upper levels still hold their round-start models while the lower levels train: their logits
        (the cloud's on every bridge sample, the largest inference of a round) can be computed beside that
        training. :meth:`_teach` uses them only if the teacher's state and rows are still the same.
        """
        cache = self._logit_cache()
        if not cache.background or not current:
            return
        depth = self.ctx.topology.depth
        top = min(depth(p) for p, _ in current)
        for pairs in self.levels():
            by_parent: dict[int, list[int]] = defaultdict(list)
            for parent, child in pairs:
                if depth(parent) < top:
                    by_parent[parent].append(child)
            for parent, children in by_parent.items():
                rows = self._rows([k for c in children for k in self.ordinals(c)])
                if not rows:
                    continue
                arch = self.models.arch(parent)
                cache.prefetch(
                    parent,
                    self.models.states[parent],
                    rows,
                    arch.key,
                    lambda parent=parent: self.models.module(parent),
                    lambda rows=rows: self.store.take(rows)[0],
                )

    def _leaf_data(self, node: int, logits: torch.Tensor) -> ClientData:
        """A device's real samples with their aligned bridge samples and the teacher's logits on them."""
        k = self.ctx.ordinal(node)
        real = self.ctx.client_data[k]
        return ClientData(
            real.x, real.y, extra={BRIDGE_KEY: self.store.bridges[self.store.span(k)], TEACHER_KEY: logits}
        )

    def _bridge_data(self, ordinals: Sequence[int], logits: torch.Tensor) -> ClientData:
        """Bridge samples of ``ordinals`` with their labels and the teacher's logits (a non-leaf student)."""
        bridges, labels = self.store.take(ordinals)
        return ClientData(bridges, labels, extra={TEACHER_KEY: logits})

    def _train(self, students: Sequence[_Student], round_: int, direction: int) -> dict[int, float]:
        """Train students in cohorts of (architecture, leaf or not) through the executor; charge FLOPs."""
        cfg, ctx = self.cfg, self.ctx
        groups: dict[tuple[str, bool], list[_Student]] = defaultdict(list)
        for s in students:
            groups[(self.models.arch_of[s.node], s.leaf)].append(s)
        losses: dict[int, float] = {}
        for (key, leaf), members in groups.items():
            arch = self.models.archs[key]
            nodes = [s.node for s in members]
            cohort = Cohort(
                model_fn=arch.model_fn,
                arch_key=arch.key,
                data=[s.data for s in members],
                starts=[self.models.states[n] for n in nodes],
                start_of=np.arange(len(nodes)),
                group_of=np.zeros(len(nodes), dtype=np.int64),
                num_groups=1,
                weights=np.ones(len(nodes)),
                seeds=np.array(
                    [
                        ctx.seeds.int_seed("fedagg_batches", round_, s.node, direction, s.teacher)
                        for s in members
                    ],
                    dtype=np.int64,
                ),
                keep_states=True,
                client_ids=np.asarray(nodes, dtype=np.int64),
            )
            loss = (
                leaf_loss(cfg.gamma, cfg.beta_leaf, cfg.T, joint_forward=not cfg.demo_compat)
                if leaf
                else non_leaf_loss(cfg.beta, cfg.T)
            )
            spec = replace(local_spec(cfg.local), loss=loss)
            started = time.perf_counter()
            result: CohortResult = ctx.executor.train(cohort, spec)
            self.wall[f"student_{ctx.topology.tier(nodes[0]).value}"] += time.perf_counter() - started
            self.check_finite(result, nodes, round_)
            assert result.client_states is not None
            for n, state in zip(nodes, result.client_states):
                self.models.states[n] = state
            self._logit_cache().forget(nodes)  # their cached logits belong to the replaced states
            # A leaf step runs the model on the real and the bridge version of each sample.
            passes = LEAF_STEP_PASSES if leaf else 1
            ctx.system.compute(
                nodes, result.samples * float(passes * arch.info.flops_train), phase=PHASE_STUDENT
            )
            losses.update({n: float(v) for n, v in zip(nodes, result.train_loss)})
        return losses

    def _down(self, pairs: Sequence[tuple[int, int]], round_: int) -> dict[int, float]:
        """Downward KD for (parent, child) pairs at once: each parent infers once on all its listed children's
        subtrees (the parents together, :meth:`_teach_all`), sends each child its logits, then all children
        train in parallel cohorts."""
        self._prefetch_down(pairs)
        by_parent: dict[int, list[int]] = defaultdict(list)
        for parent, child in pairs:
            by_parent[parent].append(child)
        students: list[_Student] = []
        src, dst, nbytes, teachers, flops = [], [], [], [], []
        requests = [(p, [k for c in children for k in self.ordinals(c)]) for p, children in by_parent.items()]
        for (parent, children), logits in zip(by_parent.items(), self._teach_all(requests)):
            teachers.append(parent)
            flops.append(self.models.arch(parent).info.flops_forward * logits.shape[0])
            start = 0
            for child in children:
                n = self.count(child)
                part = logits[start : start + n]
                start += n
                self.trace.append((DOWN, child, parent))
                leaf = self.is_leaf(child)
                data = self._leaf_data(child, part) if leaf else self._bridge_data(self.ordinals(child), part)
                students.append(_Student(child, data, leaf, parent))
                src.append(parent)
                dst.append(child)
                nbytes.append(logit_bytes(self.num_classes, n))
        system = self.ctx.system
        system.compute(teachers, flops, phase=PHASE_TEACHER)
        system.transmit(
            np.array(src), np.array(dst), np.array(nbytes, dtype=np.float64), phase=PHASE_LOGITS_DOWN
        )
        return self._train(students, round_, DOWN)

    def _up(self, pairs: Sequence[tuple[int, int]], round_: int) -> dict[int, float]:
        """Upward KD: each child infers on its own subtree (every child of the level together,
        :meth:`_teach_all`) and sends the logits up; each parent then trains once on the union of its listed
        children's bridge samples."""
        by_parent: dict[int, list[int]] = defaultdict(list)
        for parent, child in pairs:
            by_parent[parent].append(child)
        students: list[_Student] = []
        src, dst, nbytes, teachers, flops = [], [], [], [], []
        requests = [(c, self.ordinals(c)) for children in by_parent.values() for c in children]
        taught = iter(self._teach_all(requests))  # every child of the level at once, in request order
        for parent, children in by_parent.items():
            parts, ords = [], []
            for child in children:
                child_ords = self.ordinals(child)
                logits = next(taught)
                self.trace.append((UP, parent, child))
                parts.append(logits)
                ords.extend(child_ords)
                teachers.append(child)
                flops.append(self.models.arch(child).info.flops_forward * logits.shape[0])
                src.append(child)
                dst.append(parent)
                nbytes.append(logit_bytes(self.num_classes, logits.shape[0]))
            teacher = children[0] if len(children) == 1 else self.ctx.topology.num_nodes  # a union
            students.append(_Student(parent, self._bridge_data(ords, torch.cat(parts)), False, teacher))
        system = self.ctx.system
        system.compute(teachers, flops, phase=PHASE_TEACHER)
        system.transmit(
            np.array(src), np.array(dst), np.array(nbytes, dtype=np.float64), phase=PHASE_LOGITS_UP
        )
        return self._train(students, round_, UP)

    def levels(self) -> list[list[tuple[int, int]]]:
        """(parent, child) pairs with data, grouped by the parent's depth, deepest level first."""
        topo = self.ctx.topology
        by_depth: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for n in range(topo.num_nodes):
            if self.is_leaf(n):
                continue
            for c in topo.children(n):
                if self.count(c) > 0:
                    by_depth[topo.depth(n)].append((n, c))
        return [by_depth[d] for d in sorted(by_depth, reverse=True)]

    def _sequential(self, node: int, round_: int, losses: dict[int, list[float]]) -> None:
        """The official demo's depth-first order: each child's subtree, then BSBODP(child, node)."""
        for child in self.ctx.topology.children(node):
            if self.count(child) == 0:
                continue
            if not self.is_leaf(child):
                self._sequential(child, round_, losses)
            for direction in (DOWN, UP):
                for n, v in self._step(direction, [(node, child)], round_).items():
                    losses[n].append(v)

    def _step(self, direction: int, pairs: Sequence[tuple[int, int]], round_: int) -> dict[int, float]:
        """One directional step over ``pairs``; an upward step leaves out the children whose logits are lost
        this round (charged: their inference and the lost upload) and skips parents left with none."""
        if direction == DOWN:
            return self._down(pairs, round_)
        lost = [c for _, c in pairs if c in self._lost]
        if lost:
            self._charge_lost_logits(lost)
        kept = [(p, c) for p, c in pairs if c not in self._lost]
        return self._up(kept, round_) if kept else {}
