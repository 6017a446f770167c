"""FedGKT, group knowledge transfer (He et al., NeurIPS 2020): ``algorithm.py`` and ``config.py``.

Importing this package imports nothing else: a config loads its ``config.py`` without torch.
"""
