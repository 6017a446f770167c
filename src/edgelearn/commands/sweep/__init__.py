"""``edgelearn sweep``: experiment suites, grids of runs over config overrides and seeds, aggregated and
plotted in one command.

``edgelearn sweep SUITE`` runs every cell and seed into ``OUT/<experiment>/<cell>-s<seed>/`` (a finished run,
one with summary.json, is skipped and a killed one resumed, so re-running the command continues a sweep),
then writes ``results.json`` (one row per run plus mean / sd / n per cell), ``results.md`` and the plots the
experiment asks for.

Modules: ``spec`` (the suite file format, loading, cells), ``execute`` (runs: in this process or on ``jobs``
pinned worker processes), ``results`` (metrics, aggregation, ``results.md``), ``suite`` (``run_suite``,
``check_suite``: the command's body). The figures are drawn by ``edgelearn.report.sweep_plots``. This file
imports nothing, so a worker process that unpickles ``execute``'s entry point loads only what it needs.
"""
