"""``edgelearn pretrain-autoencoder``: pre-train FedAgg's frozen bridge autoencoder into a checksummed file.

A command, not part of the algorithm: it builds a whole run context (:func:`edgelearn.runner.build_context`)
to get the very data, split and seed a FedAgg run would pre-train on, then saves what
:func:`edgelearn.algorithms.fedagg.pretrain_autoencoder` trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelearn.algorithms.fedagg.config import AutoencoderConfig, FedAggConfig
from edgelearn.algorithms.fedagg.pretrain import pretrain_autoencoder
from edgelearn.errors import ConfigError
from edgelearn.models.autoencoder import save_autoencoder
from edgelearn.report.io import ensure_writable_file
from edgelearn.run_config import RunConfig
from edgelearn.runner import build_context


def pretrain_autoencoder_file(cfg: RunConfig, path: str | Path) -> dict[str, Any]:
    """What ``edgelearn pretrain-autoencoder`` runs: pre-train on the config's held-out data (the same data,
    split and seed a FedAgg run with ``autoencoder.path: null`` would use) and save it with its SHA-256.

    The ``algorithm.autoencoder`` section is used when the config's algorithm is FedAgg, else its defaults.
    Returns the saved metadata plus ``path`` and ``sha256``.
    """
    ensure_writable_file(path, "autoencoder file (--out)")  # before the training, not after it
    ac = cfg.algorithm.autoencoder if isinstance(cfg.algorithm, FedAggConfig) else AutoencoderConfig()
    ctx = build_context(cfg)
    if len(ctx.bundle.input_shape) != 3:
        raise ConfigError(
            f"dataset {ctx.bundle.name!r} has input shape {tuple(ctx.bundle.input_shape)}, not an image",
            hint="the FedAgg autoencoder needs image data (C, H, W)",
        )
    model, meta = pretrain_autoencoder(ctx, ac)
    digest = save_autoencoder(path, model.state_dict(), meta)
    return {**meta, "path": str(path), "sha256": digest}
