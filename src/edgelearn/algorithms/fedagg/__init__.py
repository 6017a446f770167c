"""FedAgg, agglomerative federated learning (Wu et al., INFOCOM 2024).

``algorithm.py`` the algorithm (init, rounds, evaluation, checkpoints); ``bsbodp.py`` the bridge-sample based
online distillation step; ``subtree.py`` the per-node views of the tree; ``failover.py`` migrations, edge
failover and device faults; ``bridge.py`` the frozen autoencoder and its bridge samples; ``config.py`` the
settings.

Importing this package imports nothing else: a config loads its ``config.py`` without torch.
"""
