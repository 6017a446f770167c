"""FedAvg (McMahan et al., AISTATS 2017): ``algorithm.py`` the algorithm, ``config.py`` its settings.

Importing this package imports nothing else: a config loads its ``config.py`` without torch.
"""
