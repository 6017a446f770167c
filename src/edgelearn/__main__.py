"""``python -m edgelearn`` runs the CLI."""

from edgelearn.cli import entry

entry()
