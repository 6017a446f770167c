"""The ``edgelearn`` command line: a thin Typer layer over the importable library.

Exit codes: 0 success, 2 bad input (config, data, budget, output path), 130 interrupted (Ctrl-C), 1 anything
else.
"""

from __future__ import annotations

import functools
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec

import typer

from edgelearn.errors import EdgelearnError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
_state = {"debug": False, "interrupt_reported": False}
P = ParamSpec("P")

SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a config key: --set algorithm.rounds=5")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="run directory (default runs/<name>-s<seed>)")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show Python tracebacks on errors")] = False,
) -> None:
    """edgelearn: federated, hierarchical and two-stage edge learning with an energy/delay/bytes ledger."""
    _state["debug"] = debug


def _interrupted(exc: KeyboardInterrupt) -> NoReturn:
    """Report a Ctrl-C that stopped a command (where, and how to continue it when the library said so) and
    exit with 130, the shell's status for SIGINT."""
    print(str(exc) or "interrupted", file=sys.stderr)  # an Interrupted says where and how to continue
    _state["interrupt_reported"] = True
    raise typer.Exit(130)


def _reports_interrupt(command: Callable[P, None]) -> Callable[P, None]:
    """Decorate a command whose library call raises :class:`~edgelearn.errors.Interrupted` on Ctrl-C, so its
    message reaches the user: typer turns a KeyboardInterrupt into a bare exit code 130."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt as exc:
            _interrupted(exc)

    return wrapper


@app.command()
@_reports_interrupt
def run(
    config: Annotated[Path, typer.Argument(help="YAML config file")],
    set_: SetOpt = None,
    out: OutOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override the run seed")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar or tables")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the run in --out from its newest good checkpoint")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace the run already in --out (its files are removed)")
    ] = False,
) -> None:
    """Run one experiment from a YAML config and write its run directory.

    A run directory that already holds a run is refused unless --resume or --overwrite. Ctrl-C stops after
    the current round with a checkpoint (exit 130); --resume continues it.
    """
    from edgelearn.run_config import load_config
    from edgelearn.runner import run as run_experiment

    overrides = list(set_ or [])
    if seed is not None:
        overrides.append(f"seed={seed}")
    cfg = load_config(config, overrides)
    summary = run_experiment(cfg, out, progress=False if quiet else None, resume=resume, overwrite=overwrite)
    if not quiet:
        _print_summary(summary)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="folder for the demo's run directories")] = Path(
        "runs/demo"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """FedAvg vs HierFAVG on digits (100 devices), FedAgg beside HierFAVG per tier, and a two-stage plan
    executed against its prediction: accuracy, energy, delay and bytes."""
    from edgelearn.commands.demo import run_demo

    run_demo(out, progress=False if quiet else None)


@app.command()
def plan(
    config: Annotated[
        Path,
        typer.Argument(help="a two-stage config, or any algorithm's with a plan: section (configs/plan/)"),
    ],
    set_: SetOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the Plan and the baseline schemes as JSON")
    ] = False,
) -> None:
    """Solve a config's resource plan without training: two-stage's rounds, batches, clocks and powers, or
    any algorithm's clocks and transmit powers for a recorded round (its ``plan:`` section)."""
    import json

    from edgelearn.commands.plan import plan_report
    from edgelearn.run_config import load_config

    report_ = plan_report(load_config(config, list(set_ or [])))
    if as_json:
        print(json.dumps(report_, indent=2))
        return
    from edgelearn.report.progress import get_console
    from edgelearn.report.tables import plans_table, tree_plans_table

    if report_.get("planner") == "tree":
        get_console().print(tree_plans_table(report_))
        return
    table = plans_table(report_, title=f"Two-stage plans on the same budgets ({report_['devices']} devices)")
    console = get_console()
    console.print(table)
    console.print(f"shift: {report_['shift']}")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="a few-minute subset (CI smoke run)")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="write every record as JSON here")] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu, cuda or auto: where every workload runs")
    ] = "cpu",
) -> None:
    """Benchmark the executors (serial, vmap, auto, ray) against centralized training; print a table."""
    from edgelearn.commands.bench.main import main as bench_main

    bench_main(quick, json_path, device=device)


@app.command()
@_reports_interrupt
def sweep(
    suites: Annotated[list[Path], typer.Argument(help="suite files (configs/*/experiments.yaml)")],
    out: Annotated[Path, typer.Option("--out", help="folder for every experiment's runs and results")] = Path(
        "runs/experiments"
    ),
    only: Annotated[
        list[str] | None, typer.Option("--only", help="run only these experiments (repeatable)")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="each experiment's few-minute version")] = False,
    check: Annotated[bool, typer.Option("--check", help="only validate every run's config")] = False,
    jobs: Annotated[
        int,
        typer.Option("--jobs", min=1, help="runs at once, each pinned to cores / jobs cores (seed-major)"),
    ] = 1,
    set_: SetOpt = None,
    case: Annotated[
        list[str] | None, typer.Option("--case", help="run only these cases of the experiments (repeatable)")
    ] = None,
    seed: Annotated[
        list[int] | None,
        typer.Option("--seed", help="run these seeds instead of each experiment's own (repeatable)"),
    ] = None,
) -> None:
    """Run experiment suites (grids of runs over overrides and seeds), then aggregate, tabulate and plot.

    Re-running the same command continues an interrupted sweep: finished runs are kept, killed ones resume.
    With --case or --seed, results.md covers just the runs chosen.
    """
    from edgelearn.commands.sweep.suite import check_suite, run_suite
    from edgelearn.report.progress import get_console

    console = get_console()
    only_, extra, cases, seeds = list(only or []), list(set_ or []), list(case or []), list(seed or [])
    if check:
        for suite in suites:
            n = check_suite(suite, quick=quick, extra=extra, only=only_, cases=cases, seeds=seeds)
            console.print(f"{suite}: {n} runs, every config valid")
        return
    for suite in suites:
        target = out / suite.stem if len(suites) > 1 else out
        results = run_suite(
            suite,
            target,
            only=only_,
            quick=quick,
            log=console.print,
            jobs=jobs,
            extra=extra,
            cases=cases,
            seeds=seeds,
        )
        for name in results:
            table = target / name / "results.md"
            if table.is_file():
                console.print(table.read_text())
        console.print(f"results and plots under {target}")


@app.command("pretrain-autoencoder")
def pretrain_autoencoder(
    config: Annotated[Path, typer.Argument(help="YAML config (its data and algorithm.autoencoder section)")],
    out: Annotated[Path, typer.Option("--out", help="file to write (a .sha256 file is written beside it)")],
    set_: SetOpt = None,
) -> None:
    """Pre-train FedAgg's frozen bridge autoencoder on held-out data and save it with a checksum."""
    from edgelearn.commands.pretrain import pretrain_autoencoder_file
    from edgelearn.report.progress import get_console
    from edgelearn.run_config import load_config

    meta = pretrain_autoencoder_file(load_config(config, list(set_ or [])), out)
    meta.pop("train_indices")  # recorded in the file; `indices_sha256` names them here
    get_console().print(meta)


@app.command("list")
def list_(
    kind: Annotated[
        str | None,
        typer.Argument(
            help="algorithms, models, datasets, partitioners, executors or hardware (default all)"
        ),
    ] = None,
    plugin: Annotated[
        list[str] | None, typer.Option("--plugin", help="also load this plugin module or .py file first")
    ] = None,
) -> None:
    """Show what a config can name, one line each, plugins (config files, entry points) included."""
    from edgelearn.plugins import KINDS, available, load_plugins

    load_plugins(plugin or [])
    for k in [kind] if kind else list(KINDS):
        entries = available(k)  # a ConfigError (exit 2) for an unknown kind
        print(k)  # plain stdout lines: meant for reading and for grep
        for name, line in entries:
            print(f"  {name:<16} {line}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `edgelearn run`")],
) -> None:
    """Print a finished run's summary tables and (re)draw its plots."""
    from edgelearn.report.plots import plot_run
    from edgelearn.report.progress import get_console
    from edgelearn.report.tables import render_report

    plot_run(run_dir)
    render_report(run_dir, get_console())


def _print_summary(summary: dict) -> None:
    from edgelearn.report.progress import get_console
    from edgelearn.report.tables import summary_table

    console = get_console()
    console.print(summary_table(summary))
    console.print(f"run directory: {summary['run_dir']}")


def entry() -> None:
    """The process's entry point (the ``edgelearn`` script, ``python -m edgelearn``): :func:`main`, then the
    objects still alive are frozen out of the garbage collector (``gc.freeze``) before the interpreter exits.

    Its final collections would otherwise walk every object torch and the run created: 0.3-0.5 s of a
    2-second FedAvg run's wall (measured on a 2-core EPYC). Exit handlers and finalizers still run. Only for a
    process about to exit: in-process callers (tests, notebooks) use :func:`main`, which freezes nothing.
    """
    try:
        main()
    finally:
        gc.freeze()


def main() -> None:
    """Run the app, mapping user errors to exit 2, Ctrl-C to 130 and anything else to exit 1."""
    try:
        # typer turns a KeyboardInterrupt inside a command into the returned code 130; other codes come from
        # an explicit typer.Exit
        code = app(standalone_mode=False)
    except EdgelearnError as exc:
        if _state["debug"]:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # outside a command (e.g. while parsing)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors (typer may vendor click) and unexpected failures
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if _state["debug"]:
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for a traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
    if isinstance(code, int) and code:
        if code == 130 and not _state["interrupt_reported"]:
            print("interrupted", file=sys.stderr)
        sys.exit(code)


if __name__ == "__main__":
    entry()
