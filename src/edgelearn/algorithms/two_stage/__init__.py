"""Two-stage edge learning with joint resource management (Lyu et al., arXiv 2404.00836): ``algorithm.py``
plans with :mod:`edgelearn.planning` and executes the plan, ``config.py`` holds its settings.

Importing this package imports nothing else: a config loads its ``config.py`` without torch.
"""
