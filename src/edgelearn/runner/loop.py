"""Run the rounds and write the run directory: ``run(cfg)``, what ``edgelearn run`` calls (checkpoints,
resume, Ctrl-C after a round, metrics, summary, plots)."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgelearn.algorithms.base import RunContext
from edgelearn.algorithms.registry import make_algorithm
from edgelearn.checkpoint import (
    checkpoints,
    load_latest,
    remove_checkpoints,
    save_checkpoint,
    write_atomic,
)
from edgelearn.config import read_yaml
from edgelearn.data import partition_stats
from edgelearn.data.dataset import split_summary
from edgelearn.errors import ConfigError, DivergenceError, Interrupted, OutputError
from edgelearn.report.io import (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    append_jsonl,
    ensure_writable_dir,
    locked_dir,
    plain_json,
    read_metrics,
    remove_stale_temps,
    rounds_to,
    target_key,
    write_json_atomic,
)
from edgelearn.report.progress import progress_bar
from edgelearn.run_config import RunConfig, build_config, dump_config

if TYPE_CHECKING:
    pass

from edgelearn.runner.context import build_context, release
from edgelearn.runner.midrun import attach_plan, resume_plan, start_plan
from edgelearn.runner.planned import choose_rounds, plan_summary, tree_plan

log = logging.getLogger(__name__)
# Only for the kill-and-resume test: slows each round so a SIGKILL lands mid-run. Never set by users.
_TEST_ROUND_SLEEP = float(os.environ.get("EDGELEARN_TEST_ROUND_SLEEP", "0") or 0)


class _StopRequest:
    """Whether the run in this process should stop at the end of its current round (set by Ctrl-C)."""

    requested = False


_STOP = _StopRequest()


def request_stop() -> None:
    """Ask the run in progress in this process to stop once its current round is done: it writes a checkpoint
    of that round and raises :class:`~edgelearn.errors.Interrupted`, so ``--resume`` continues exactly. What
    the first Ctrl-C does; a sweep's worker processes call it from their SIGINT handler. Signal-safe (sets a
    flag)."""
    _STOP.requested = True


class _StopAfterRound:
    """While the rounds run, the first Ctrl-C (SIGINT) only asks the run to stop after the current round
    (:func:`request_stop`): interrupting mid-round would leave the models half-updated, with nothing
    consistent to checkpoint. A second Ctrl-C interrupts at once (the newest checkpoint stays).

    Installed only in the main thread and only over Python's default SIGINT handler, so an application's (or
    a sweep worker's) own handler is left alone.
    """

    def __init__(self) -> None:
        self._previous: Any = None

    def __enter__(self) -> _StopAfterRound:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if _STOP.requested:
            raise KeyboardInterrupt
        _STOP.requested = True
        # os.write, not print: a signal handler may run in the middle of another write to stderr
        os.write(2, b"\ninterrupted: stopping after the current round (Ctrl-C again to stop at once)\n")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def default_run_dir(cfg: RunConfig) -> Path:
    """``runs/<name>-s<seed>`` under the current directory."""
    return Path("runs") / f"{cfg.name}-s{cfg.seed}"


def _ledger_figures(totals: dict[str, Any]) -> dict[str, Any]:
    return {
        "energy_j": float(totals["energy_j"]),
        "delay_s": float(totals["delay_s"]),
        "bytes_up": int(totals["bytes_up"]),
        "bytes_down": int(totals["bytes_down"]),
    }


def _check_resumable(cfg: RunConfig, out: Path) -> None:
    """A resumed run must use the config it started with (output settings aside)."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(
            f"cannot resume: {saved_path} does not exist",
            hint="resume a run directory written by `edgelearn run`",
        )
    try:
        saved = build_config(read_yaml(saved_path), source=str(saved_path))
    except ConfigError as exc:  # e.g. written before a default or a section's schema changed
        raise ConfigError(
            f"cannot resume {out}: the config it was started with is no longer valid: {exc.message}",
            hint="start a new run directory: this one was started under an older config schema or default",
        ) from None
    mine, theirs = cfg.model_dump(exclude={"output"}), saved.model_dump(exclude={"output"})
    if mine != theirs:
        diffs = _differing_keys(theirs, mine)
        shown = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, a, b in diffs[:MAX_SHOWN_DIFFS])
        more = f" (and {len(diffs) - MAX_SHOWN_DIFFS} more)" if len(diffs) > MAX_SHOWN_DIFFS else ""
        key, then = diffs[0][0], json.dumps(diffs[0][1])  # JSON values are YAML values too
        raise ConfigError(
            f"cannot resume {out}: the config differs from the one it was started with: {shown}{more}",
            hint=f"resume with the same config and overrides (e.g. --set {key}={then}; a default that "
            "changed since the run started counts too), or start a new run directory",
        )


MAX_SHOWN_DIFFS = 5
"""Differing config keys a refused resume names (the rest are counted)."""


def _differing_keys(then: Any, now: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two config dumps, with both values (leaves only)."""
    if isinstance(then, dict) and isinstance(now, dict):
        found: list[tuple[str, Any, Any]] = []
        for key in sorted(set(then) | set(now), key=str):
            found += _differing_keys(then.get(key), now.get(key), f"{prefix}{key}.")
        return found
    return [] if then == now else [(prefix.rstrip("."), then, now)]


def _truncate_metrics(path: Path, last_round: int) -> None:
    """Keep the metrics records of rounds up to ``last_round`` (the checkpoint a resume starts from) and drop
    later ones, which the resumed run writes again.

    A line that is not a JSON object with an integer ``round`` (the partial last line a kill may leave, or a
    corrupt one anywhere) is skipped with a warning naming it; every valid record around it is kept, so one
    bad line never costs the rounds after it.
    """
    if not path.exists():
        return
    kept, bad = [], []
    text = path.read_bytes().decode("utf-8", errors="replace")  # a kill may cut a multi-byte character
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        round_ = record.get("round") if isinstance(record, dict) else None
        if not isinstance(round_, int) or isinstance(round_, bool):
            bad.append(lineno)
        elif round_ <= last_round:
            kept.append(line)
    if bad:
        log.warning(
            "%s: skipped %d corrupt or partial line(s) (line %s) while resuming from round %d; the records "
            "they held are lost, the valid records around them are kept",
            path,
            len(bad),
            ", ".join(map(str, bad)),
            last_round,
        )
    write_atomic(path, "".join(f"{line}\n" for line in kept).encode())


def _holds_run(out: Path) -> list[str]:
    """The files in ``out`` that show a run was written there (metrics, summary, checkpoints): empty when
    nothing would be lost by writing a new run (a lone config.yaml is a run that never finished a round)."""
    found = [name for name in (METRICS_FILE, SUMMARY_FILE) if (out / name).is_file()]
    if checkpoints(out / "checkpoints"):
        found.append("checkpoints/")
    return found


def _clear_run(out: Path) -> None:
    """Remove an old run's files from ``out`` (config, metrics, summary, plots, checkpoints), nothing else:
    ``out`` may be a folder that also holds the user's own files."""
    from edgelearn.report.plots import ENERGY_PLOT, ROUND_PLOT, TIME_PLOT

    for name in (SUMMARY_FILE, METRICS_FILE, CONFIG_FILE, ROUND_PLOT, ENERGY_PLOT, TIME_PLOT):
        (out / name).unlink(missing_ok=True)
    remove_checkpoints(out / "checkpoints")


def _interrupted(out: Path, rounds: Any, after: int | None = None) -> Interrupted:
    """The :class:`Interrupted` of the run in ``out`` (``rounds`` in all, when known): where it stopped
    (``after`` a completed, checkpointed round, or elsewhere) and how to continue it."""
    of = f" of {rounds}" if isinstance(rounds, int) else ""
    ckpt_dir = out / "checkpoints"
    if after is not None:
        where = f"after round {after}{of}; its checkpoint is in {ckpt_dir}"
    elif saved := checkpoints(ckpt_dir):
        where = f"mid-round; its newest checkpoint is round {saved[-1][0]}{of}, in {ckpt_dir}"
    else:
        where = "before its first checkpoint; --resume starts it again from round 1"
    return Interrupted(
        f"run {out} interrupted {where}",
        hint=f"run the same command with --resume (the same config, --set options and --out {out})",
    )


def run(
    cfg: RunConfig,
    out_dir: str | Path | None = None,
    *,
    progress: bool | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run one experiment end to end and return its summary (also written to ``summary.json``).

    With ``resume``, continue from the newest good checkpoint in the run directory; the finished run's
    ``metrics.jsonl`` and ``summary.json`` equal an uninterrupted run's (except wall-clock fields). A
    directory that already holds a run is refused (OutputError) unless ``resume`` or ``overwrite`` (which
    first removes the old run's files). The directory is locked while the run writes it: a second process
    fails at once. Ctrl-C stops the run after its current round, with a checkpoint of it, and raises
    :class:`~edgelearn.errors.Interrupted` (a KeyboardInterrupt) saying where and how to resume.
    """
    started = time.perf_counter()
    if resume and overwrite:
        raise ConfigError(
            "--resume and --overwrite were both given",
            hint="pass --resume to continue the run in --out, or --overwrite to replace it, not both",
        )
    out = ensure_writable_dir(out_dir or cfg.output.dir or default_run_dir(cfg), "run directory (--out)")
    try:
        with locked_dir(out):
            return _run_locked(cfg, out, started, progress=progress, resume=resume, overwrite=overwrite)
    except Interrupted:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C mid-round, or one before the rounds started
        raise _interrupted(out, getattr(cfg.algorithm, "rounds", None)) from None
    finally:
        _STOP.requested = False


def _run_locked(
    cfg: RunConfig, out: Path, started: float, *, progress: bool | None, resume: bool, overwrite: bool
) -> dict[str, Any]:
    """:func:`run` once the run directory ``out`` is locked: clean it, start or resume, run the rounds."""
    ckpt_dir = out / "checkpoints"
    stale = [*remove_stale_temps(out), *remove_stale_temps(ckpt_dir)]  # the lock proves no writer is live
    if stale:
        log.info("removed %d temp file(s) a killed process left in %s", len(stale), out)
    if not resume:
        found = _holds_run(out)
        if found and not overwrite:
            raise OutputError(
                f"run directory {out} already holds a run ({', '.join(found)})",
                hint="pass --overwrite to replace it, --resume to continue it, or choose another --out",
            )
    cfg, outer = choose_rounds(cfg)  # plan.target_accuracy: pilots pick the rounds (and settings) first
    loaded = None
    if resume:
        _check_resumable(cfg, out)
        loaded = load_latest(ckpt_dir)
        if loaded is None:
            log.warning("no usable checkpoint in %s: starting from round 1", ckpt_dir)
    if loaded is None:
        _clear_run(out)  # a new run (or a resume without a usable checkpoint) starts from a clean folder
        (out / CONFIG_FILE).write_text(dump_config(cfg), encoding="utf-8")

    ctx = build_context(cfg)
    try:
        return _run(cfg, ctx, out, loaded, started, progress, outer)
    finally:
        release(ctx)


def _run(
    cfg: RunConfig,
    ctx: RunContext,
    out: Path,
    loaded: tuple[int, dict[str, Any]] | None,
    started: float,
    progress: bool | None,
    outer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The round loop of :func:`run` (checkpoints, metrics, summary, plots); ``outer`` is the record of the
    plan's choice of rounds and settings, when it made one."""
    ckpt_dir = out / "checkpoints"
    metrics_path = out / "metrics.jsonl"
    plan = tree_plan(cfg) if cfg.plan is not None else None
    if plan is not None:  # the planned association (before the run, or mid-run) and operating point(s)
        start_plan(plan, ctx.system)
    algo = make_algorithm(ctx)
    if plan is not None:
        attach_plan(plan, algo, ctx.system)
    algo.init()
    rounds = algo.rounds
    first, last, best, wall_before = 1, {}, 0.0, 0.0
    if loaded is not None:
        done, payload = loaded
        algo.load_state_dict(payload["algorithm"])
        ctx.system.load_state_dict(payload["system"])
        first, last, best, wall_before = done + 1, payload["last"], payload["best"], payload["wall_s"]
        _truncate_metrics(metrics_path, done)
        if plan is not None:  # the restored tree resets the bandwidth shares: the plan's point again
            resume_plan(plan, ctx.system, first)

    def wall() -> float:
        return wall_before + time.perf_counter() - started

    def checkpoint(r: int) -> None:
        payload = {
            "algorithm": algo.state_dict(),
            "system": ctx.system.state_dict(),
            "last": last,
            "best": best,
            "wall_s": wall(),
        }
        save_checkpoint(ckpt_dir, r, payload, keep=cfg.output.checkpoint_keep)

    show = cfg.output.progress if progress is None else progress
    every_ckpt = cfg.output.checkpoint_every
    with (
        _StopAfterRound(),
        progress_bar(rounds, f"{cfg.algorithm.name} on {cfg.data.dataset}", enabled=show) as bar,
    ):
        bar.advance(first - 1)
        for r in range(first, rounds + 1):
            stats = algo.run_round(r)
            if _TEST_ROUND_SLEEP:
                time.sleep(_TEST_ROUND_SLEEP)
            fields: dict[str, Any] = {}
            if r % cfg.eval.every == 0 or r == rounds:
                ev = algo.evaluate()
                if not np.isfinite(ev["loss"]):
                    raise DivergenceError(
                        f"training diverged in round {r}: the delivered (cloud) model's test loss is "
                        f"{ev['loss']}",
                        hint="lower the learning rate; the last good checkpoint is kept (--resume)",
                    )
                best = max(best, ev["accuracy"])
                last = plain_json(
                    {
                        "round": r,
                        **ev,
                        **_ledger_figures(ctx.system.ledger.totals()),
                        "wall_s": wall(),
                        **stats,
                    }
                )
                append_jsonl(metrics_path, last)
                fields = {"acc": f"{ev['accuracy']:.3f}", "energy": f"{last['energy_j']:.3g} J"}
            stop = _STOP.requested  # read once: a Ctrl-C from here on stops after the next round
            if stop or r == rounds or (every_ckpt and r % every_ckpt == 0):
                checkpoint(r)
            bar.advance(1, **fields)
            if stop:  # Ctrl-C during this round: it is complete and checkpointed, stop here
                raise _interrupted(out, rounds, after=r)

    totals = ctx.system.ledger.totals()
    summary: dict[str, Any] = {
        "algorithm": cfg.algorithm.name,
        "dataset": cfg.data.dataset,
        "seed": cfg.seed,
        "rounds": rounds,
        "final_accuracy": last.get("accuracy"),
        "final_loss": last.get("loss"),
        **({"accuracy_by_tier": last["accuracy_by_tier"]} if "accuracy_by_tier" in last else {}),
        "best_accuracy": best,
        **_rounds_to_targets(cfg.eval.targets, out),
        **_ledger_figures(totals),
        "wall_s": wall(),
        "by_tier": totals["by_tier"],
        "by_kind": {"compute_j": float(totals["compute_j"]), "transmit_j": float(totals["transmit_j"])},
        "by_phase": totals.get("by_phase", {}),
        "flops": float(totals["flops"]),
        "model": {
            "name": cfg.model.name,
            "params": ctx.info.params,
            "param_bytes": ctx.info.param_bytes,
            "flops_train_per_sample": ctx.info.flops_train,
        },
        "topology": {"devices": ctx.topology.num_devices, "edges": len(ctx.topology.edges)},
        "hardware": {
            tier: {"profile": section.profile, "kind": section.kind}
            for tier, section in cfg.hardware  # the numbers are in config.yaml
        },
        "partition": partition_stats(ctx.parts, ctx.bundle.train.y, ctx.bundle.num_classes),
        "data_split": split_summary(ctx.bundle),
        "executor": ctx.executor.name,
        "torch_threads": ctx.torch_threads,
        "device": str(ctx.device),
        "data_source": ctx.bundle.source,
        **algo.summary_extras(),
        **({"plan": plan_summary(plan, ctx.system, rounds, outer)} if plan is not None else {}),
    }
    summary = plain_json(summary)
    write_json_atomic(out / "summary.json", summary)
    if cfg.output.plots:
        from edgelearn.report.plots import plot_run

        summary["plots"] = [str(p) for p in plot_run(out)]
    summary["run_dir"] = str(out)
    return summary


def _rounds_to_targets(targets: Sequence[float], out: Path) -> dict[str, Any]:
    """``{"rounds_to_target": {"70%": round or None}}`` from the whole metrics file (resumed runs too)."""
    if not targets:
        return {}
    records = read_metrics(out)
    return {"rounds_to_target": {target_key(t): rounds_to(records, t) for t in targets}}
