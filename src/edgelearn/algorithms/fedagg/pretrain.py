"""The frozen bridge autoencoder a FedAgg run uses: loaded from a checksummed file whose metadata and training
positions are checked against the run, or pre-trained at init on training images no device holds (the clean
bridge: evaluation data never shapes a bridge sample)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edgelearn.algorithms.base import RunContext
from edgelearn.algorithms.fedagg.bridge import (
    check_disjoint,
    device_train_index,
    pretrain_on_heldout,
)
from edgelearn.algorithms.fedagg.config import AutoencoderConfig
from edgelearn.errors import ConfigError
from edgelearn.models.autoencoder import (
    ARCHITECTURE,
    MAX_PARAMS,
    Autoencoder,
    build_autoencoder,
    load_autoencoder,
    num_params,
)

if TYPE_CHECKING:
    from edgelearn.algorithms.base import RunContext

AUTOENCODER_SEED_PURPOSE = "fedagg_autoencoder"
"""Seed stream of the autoencoder's initialization and pre-training shuffles."""
SEED_BOUND = 2**31
"""Integer seeds handed to torch/numpy stay below this."""


def load_or_pretrain(
    ctx: RunContext, ac: AutoencoderConfig, shape: tuple[int, ...]
) -> tuple[Autoencoder, dict[str, Any]]:
    """The frozen autoencoder (loaded, checksum-verified, from ``ac.path``, or pre-trained) and the
    ``bridge`` entries of summary.json that say where it came from."""
    if ac.path is not None:
        state, meta = load_autoencoder(ac.path)
        check_autoencoder_meta(meta, ac, shape)
        check_autoencoder_data(meta, ac, ctx)
        model = build_autoencoder(shape, state, embed_channels=ac.embed_channels, device=ctx.device)
    else:
        model, meta = pretrain_autoencoder(ctx, ac)
    source = {
        "autoencoder_source": str(meta["source"]),
        "autoencoder_file": ac.path,
        "autoencoder_samples": len(meta["train_indices"]),
        "autoencoder_indices_sha256": str(meta["indices_sha256"]),
        "autoencoder_mse": meta.get("mse"),
    }
    if num_params(model) > MAX_PARAMS:
        raise ConfigError(
            f"the autoencoder has {num_params(model)} parameters, above the paper's {MAX_PARAMS}",
            hint="lower autoencoder.embed_channels",
        )
    return model, source


def check_autoencoder_meta(meta: Mapping[str, Any], ac: AutoencoderConfig, shape: tuple[int, ...]) -> None:
    """ConfigError naming both values and the key when a loaded autoencoder file's metadata disagrees with
    the config (architecture, ``algorithm.autoencoder.embed_channels``) or the data's input shape; a run
    must never use a file other than the one its config describes. Keys a file lacks are checked by
    loading its tensors into the configured layout (a mismatch raises there)."""
    where = f"autoencoder file {ac.path} (algorithm.autoencoder.path)"
    arch = meta.get("architecture")
    if arch is not None and arch != ARCHITECTURE:
        raise ConfigError(
            f"{where} holds architecture {arch!r}; this version builds {ARCHITECTURE!r}",
            hint="pre-train a new file with `edgelearn pretrain-autoencoder`",
        )
    embed = meta.get("embed_channels")
    if embed is not None and int(embed) != ac.embed_channels:
        raise ConfigError(
            f"{where} has embed_channels={int(embed)} but algorithm.autoencoder.embed_channels="
            f"{ac.embed_channels}",
            hint=f"set algorithm.autoencoder.embed_channels: {int(embed)}, or pre-train a file with "
            f"{ac.embed_channels}",
        )
    saved = tuple(int(s) for s in meta.get("input_shape", ()))
    if saved != shape:
        raise ConfigError(
            f"{where} was trained for input shape {saved}, but the data (data.dataset, data.input_shape) "
            f"has {shape}",
            hint="pre-train an autoencoder on this dataset (edgelearn pretrain-autoencoder)",
        )


def check_autoencoder_data(meta: Mapping[str, Any], ac: AutoencoderConfig, ctx: RunContext) -> None:
    """A loaded file must have been pre-trained on training samples no device of this run holds: refuse
    files pre-trained on the test split, files that do not record their samples' positions (written before
    the positions were recorded), files of another dataset, and files whose samples some device holds."""
    where = f"autoencoder file {ac.path} (algorithm.autoencoder.path)"
    redo = "pre-train a file for this config with `edgelearn pretrain-autoencoder`"
    if meta.get("source") == "test" or meta.get("split", "train") != "train":
        raise ConfigError(
            f"{where} was pre-trained on the test split: evaluation data would shape every bridge sample",
            hint=redo,
        )
    positions = meta.get("train_indices")
    if not isinstance(positions, list) or "indices_sha256" not in meta:
        raise ConfigError(
            f"{where} does not record which training samples it was pre-trained on, so the run cannot "
            "prove they are no device's",
            hint=redo,
        )
    if meta.get("dataset") != ctx.bundle.name:
        raise ConfigError(
            f"{where} was pre-trained on dataset {meta.get('dataset')!r}, this run uses {ctx.bundle.name!r}",
            hint=redo,
        )
    check_disjoint(
        np.asarray(positions, dtype=np.int64), device_train_index(ctx.bundle, ctx.parts), where=where
    )


def pretrain_autoencoder(ctx: RunContext, ac: AutoencoderConfig) -> tuple[Autoencoder, dict[str, Any]]:
    """Pre-train the bridge autoencoder on the context's held-out images (seeded by the run seed): what a run
    with ``autoencoder.path: null`` does at init, and what ``edgelearn pretrain-autoencoder`` saves."""
    return pretrain_on_heldout(
        ctx.bundle,
        ctx.parts,
        source=ac.source,
        max_samples=ac.max_samples,
        epochs=ac.epochs,
        lr=ac.lr,
        batch_size=ac.batch_size,
        embed_channels=ac.embed_channels,
        seed=ctx.seeds.int_seed(AUTOENCODER_SEED_PURPOSE) % SEED_BOUND,
        device=ctx.device,
    )
