"""Whole-run commands, the layer above the runner: the bodies of ``edgelearn plan``, ``pretrain-autoencoder``,
``demo``, ``sweep`` and ``bench``.

Each builds run contexts or whole runs through :mod:`edgelearn.runner` and may import anything below it;
nothing below imports this package (``tests/test_layers.py``). The CLI imports each command's module only
when that command runs, so ``edgelearn --help`` and a plain run import none of them. This file imports
nothing: importing one command never loads the others.
"""
