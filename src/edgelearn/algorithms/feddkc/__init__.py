"""FedDKC, knowledge refinement for split KD (Wu et al., 2022): ``algorithm.py`` and ``config.py``.

Importing this package imports nothing else: a config loads its ``config.py`` without torch.
"""
