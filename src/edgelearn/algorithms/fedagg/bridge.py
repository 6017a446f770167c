"""Bridge samples (Wu et al., INFOCOM 2024, §IV; Algorithm 2's INIT): embeddings computed once on the
devices, sent up the tree with their labels hop by hop, and decoded once into the shared transfer set that
parents and children distil on.

The decoder is frozen, so ``dec(enc(x))`` never changes: :func:`build_bridge_store` encodes every device's
samples and decodes them once at INIT, without gradients, in large batches, and every node then reads its
subtree's rows from the cache (rows are grouped by device ordinal, so a subtree is usually a contiguous
slice and costs no copy). Reusable by any algorithm that ships per-sample payloads up the tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from edgelearn.algorithms.kit.comm import FLOAT_BYTES, LABEL_BYTES
from edgelearn.data import ArrayDataset, DatasetBundle
from edgelearn.data.dataset import index_digest
from edgelearn.engine import ClientData
from edgelearn.errors import DataError
from edgelearn.models.autoencoder import ARCHITECTURE, Autoencoder, pretrain_autoencoder, reconstruction_mse

ENCODE_BATCH_SIZE = 4096
"""Samples per no-grad encoder/decoder pass at INIT."""

BridgeScale = Literal["data", "unit"]
PretrainSource = Literal["holdout", "unassigned_train"]


def sample_bytes(embed_numel: int, label_bytes: int = LABEL_BYTES) -> int:
    """Bytes one sample costs on one hop at INIT: its embedding floats x 4 plus its label."""
    return int(embed_numel) * FLOAT_BYTES + int(label_bytes)


def logit_bytes(num_classes: int, samples: int | np.ndarray) -> int | np.ndarray:
    """Bytes of ``samples`` logit vectors of ``num_classes`` float32 each (one KD transfer)."""
    return FLOAT_BYTES * int(num_classes) * samples


@dataclass
class BridgeStore:
    """Every device's embeddings, bridge samples and labels, rows grouped by device ordinal.

    ``offsets[k]:offsets[k+1]`` are device ordinal k's rows, in the order of its local samples, so row i of a
    device's block is the bridge version of its real sample i.
    """

    embeddings: torch.Tensor
    bridges: torch.Tensor
    labels: torch.Tensor
    offsets: np.ndarray

    def count(self, ordinal: int) -> int:
        """Number of samples of device ordinal ``ordinal``."""
        return int(self.offsets[ordinal + 1] - self.offsets[ordinal])

    def span(self, ordinal: int) -> slice:
        """Rows of one device."""
        return slice(int(self.offsets[ordinal]), int(self.offsets[ordinal + 1]))

    def rows(self, ordinals: Sequence[int]) -> slice | torch.Tensor:
        """Rows of several devices in the given order: a slice when they are contiguous, else an index."""
        spans = [self.span(int(k)) for k in ordinals]
        if not spans:
            return slice(0, 0)
        if all(a.stop == b.start for a, b in zip(spans[:-1], spans[1:])):
            return slice(spans[0].start, spans[-1].stop)
        idx = np.concatenate([np.arange(s.start, s.stop) for s in spans])
        return torch.as_tensor(idx, dtype=torch.long, device=self.labels.device)

    def take(self, ordinals: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(bridge samples, labels) of several devices, concatenated in order (views when contiguous)."""
        r = self.rows(ordinals)
        return self.bridges[r], self.labels[r]


@torch.no_grad()
def build_bridge_store(
    autoencoder: Autoencoder,
    client_data: Sequence[ClientData],
    *,
    scale: BridgeScale = "data",
    batch_size: int = ENCODE_BATCH_SIZE,
) -> BridgeStore:
    """Encode each device's samples and decode them once (frozen autoencoder, eval mode, no gradients).

    ``scale="data"`` maps the decoder's [0, 1] output to the data's range (so bridge and real samples share
    a scale); ``"unit"`` keeps the raw sigmoid output as the official demo does (its real inputs are
    normalised, its bridge samples not).
    """
    if scale not in ("data", "unit"):
        raise DataError(f"bridge scale must be 'data' or 'unit', got {scale!r}")
    autoencoder.eval()
    counts = np.array([len(d) for d in client_data], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if offsets[-1] == 0:
        raise DataError("no device holds any sample: FedAgg has nothing to encode")
    x = torch.cat([d.x for d in client_data if len(d)], dim=0)
    labels = torch.cat([d.y for d in client_data if len(d)], dim=0)
    device = autoencoder.out_low.device
    emb_parts, bridge_parts = [], []
    for i in range(0, x.shape[0], batch_size):
        z = autoencoder.encode(x[i : i + batch_size].to(device))
        u = autoencoder.decode(z)
        emb_parts.append(z)
        bridge_parts.append(autoencoder.to_data_scale(u) if scale == "data" else u)
    return BridgeStore(
        embeddings=torch.cat(emb_parts).to(x.device),
        bridges=torch.cat(bridge_parts).to(x.device),
        labels=labels,
        offsets=offsets,
    )


def device_train_index(bundle: DatasetBundle, parts: Sequence[np.ndarray]) -> np.ndarray:
    """Loaded-split positions of every training sample some device holds (sorted, unique)."""
    assert bundle.train.index is not None  # ArrayDataset always sets it
    held = [np.asarray(p, dtype=np.int64) for p in parts]
    if not held:
        return np.zeros(0, dtype=np.int64)
    return np.unique(bundle.train.index[np.concatenate(held)])


def check_disjoint(pretrain_index: np.ndarray, device_index: np.ndarray, *, where: str) -> None:
    """DataError naming ``where`` when a pre-training sample is also a device's (loaded-split positions)."""
    shared = np.intersect1d(np.asarray(pretrain_index), np.asarray(device_index))
    if shared.size:
        raise DataError(
            f"{where}: {shared.size} of its pre-training samples are also devices' training samples "
            f"(training-split positions {shared[:5].tolist()}...)",
            hint="pre-train on the run's hold-out (autoencoder.source: holdout) or on samples no device "
            "holds (unassigned_train), or pre-train a file for this config with `edgelearn "
            "pretrain-autoencoder`",
        )


def heldout_images(
    bundle: DatasetBundle,
    parts: Sequence[np.ndarray],
    *,
    source: PretrainSource,
    max_samples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (no labels) for pre-training the autoencoder and their training-split positions.

    Never a device's sample and never an evaluation sample: ``"holdout"`` draws from ``bundle.holdout``
    (removed from the training split before partitioning); ``"unassigned_train"`` from the training samples
    no device holds (``bundle.unassigned``, which ``data.max_train`` leaves out, plus any sample the partition
    left unassigned). A seeded subset of at most ``max_samples``; disjointness from the devices is checked.
    """
    pools: list[ArrayDataset] = []
    if source == "holdout":
        hint = (
            "set data.holdout (training samples held out before partitioning), or use source: "
            "unassigned_train with data.max_train below the training split's size"
        )
        if bundle.holdout is not None:
            pools.append(bundle.holdout)
    elif source == "unassigned_train":
        hint = (
            "set data.max_train below the training split's size (the rest stays unassigned), or use "
            "source: holdout"
        )
        if bundle.unassigned is not None:
            pools.append(bundle.unassigned)
        used = np.zeros(len(bundle.train), dtype=bool)
        for p in parts:
            used[np.asarray(p, dtype=np.int64)] = True
        if not used.all():
            pools.append(bundle.train.subset(np.flatnonzero(~used)))
    else:
        raise DataError(
            f"autoencoder.source must be 'holdout' or 'unassigned_train', got {source!r}",
            hint="pre-training on the test split is refused: evaluation data must never shape the bridge",
        )
    size = sum(len(pool) for pool in pools)
    if size < 2:
        raise DataError(f"autoencoder.source={source!r} leaves {size} image(s) for pre-training", hint=hint)
    x = np.concatenate([pool.x for pool in pools]) if len(pools) > 1 else pools[0].x
    index = np.concatenate([np.asarray(pool.index) for pool in pools])
    take = min(int(max_samples), size)
    idx = np.sort(rng.choice(size, size=take, replace=False))
    check_disjoint(index[idx], device_train_index(bundle, parts), where=f"autoencoder.source={source!r}")
    return np.ascontiguousarray(x[idx]), np.sort(index[idx])


def pretrain_on_heldout(
    bundle: DatasetBundle,
    parts: Sequence[np.ndarray],
    *,
    source: PretrainSource,
    max_samples: int,
    epochs: int,
    lr: float,
    batch_size: int,
    embed_channels: int,
    seed: int,
    device: torch.device,
) -> tuple[Autoencoder, dict[str, Any]]:
    """Build and pre-train a frozen autoencoder on held-out images; returns it and the metadata to save.

    Initialization and shuffling are seeded by ``seed``; the caller's torch RNG is left untouched.
    """
    images, index = heldout_images(
        bundle, parts, source=source, max_samples=max_samples, rng=np.random.default_rng(seed)
    )
    data = torch.as_tensor(images, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Autoencoder(bundle.input_shape, embed_channels).to(device)
    pretrain_autoencoder(model, data, epochs, lr, seed, batch_size=batch_size)
    meta = {
        "architecture": ARCHITECTURE,
        "input_shape": [int(s) for s in bundle.input_shape],
        "embed_channels": int(embed_channels),
        "dataset": bundle.name,
        "source": source,
        "split": "train",
        "samples": int(len(images)),
        "indices_sha256": index_digest(index),
        "train_indices": [int(i) for i in index],
        "epochs": int(epochs),
        "lr": float(lr),
        "seed": int(seed),
        "mse": reconstruction_mse(model, data),
    }
    return model, meta
