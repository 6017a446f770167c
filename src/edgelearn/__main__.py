"""``python -m edgelearn`` runs the CLI."""

from edgelearn.cli import main

main()
