"""Build everything a config describes, run the rounds, and write the run directory.

The library entry point: ``run(cfg)`` is what ``edgelearn run`` calls, and what tests and notebooks call.
``context`` builds a run (``build_context``), ``loop`` runs it (``run``, ``request_stop``), ``planned``
records and plans a round for the ``plan:`` section (``tree_plan``).
"""

from edgelearn.runner.context import build_context, build_system, build_topology
from edgelearn.runner.loop import _STOP, _StopAfterRound, default_run_dir, request_stop, run
from edgelearn.runner.planned import tree_plan

__all__ = [
    "_STOP",
    "_StopAfterRound",
    "build_context",
    "build_system",
    "build_topology",
    "default_run_dir",
    "request_stop",
    "run",
    "tree_plan",
]
