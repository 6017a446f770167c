"""FedAgg's frozen bridge-sample autoencoder (Wu et al., INFOCOM 2024), adapted to any image shape.

Architecture of the official demo (github.com/wuzhiyuan2000/FedAgg, ``autoencoder_pretrained.py``; encoder
1.90 Ki / decoder 2.47 Ki parameters on 3x32x32, as in the paper's Table I):

* encoder: conv3x3(C->16)+BN+ReLU+maxpool2 -> conv3x3(16->8)+BN+ReLU+maxpool2 -> conv3x3(8->4)+ReLU
* decoder: conv3x3(4->8)+ReLU -> conv3x3(8->8)+BN+ReLU -> up2 -> conv3x3(8->16)+BN+ReLU -> up2
  -> conv3x3(16->C) -> Sigmoid

Adaptation: the number of 2x poolings is ``min(2, floor(log2(side / 4)))`` for the smaller image side, so the
embedding keeps at least 4 pixels a side: 32x32 -> 4x8x8 (256 floats, as in the demo), 28x28 -> 4x7x7,
8x8 -> 4x4x4. Upsampling restores the exact pre-pool sizes (odd sides work). The sigmoid output lies in
[0, 1]; the buffers ``out_low``/``out_high`` (set by :func:`pretrain_autoencoder` from the per-channel range
of the pre-training data) map it back to the data's scale with :meth:`Autoencoder.to_data_scale`.

Checkpoints are a torch file written with ``torch.save`` plus a ``.sha256`` side file;
:func:`load_autoencoder` verifies the digest before deserializing with ``weights_only=True`` (no arbitrary
pickle code runs).
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgelearn.errors import ConfigError, DataError

ENCODER_CHANNELS: tuple[int, int] = (16, 8)
"""Hidden widths of the encoder's two pooled stages (official demo)."""
EMBED_CHANNELS = 4
"""Channels of the embedding (official demo: 4x8x8 on CIFAR)."""
DECODER_CHANNELS: tuple[int, int] = (8, 16)
"""Widths of the decoder's pre-upsampling and post-upsampling stages (official demo)."""
MAX_POOLS = 2
"""At most two 2x poolings (the demo's 32 -> 8)."""
MIN_EMBED_SIDE = 4
"""A pooling is skipped when it would leave the embedding's smaller side below this."""
MAX_PARAMS = 50_000
"""The paper's bound on the autoencoder's size ("extremely lightweight (<50K parameters)")."""
KERNEL = 3

PRETRAIN_BATCH_SIZE = 64
"""Mini-batch size of the reconstruction pre-training (our choice; the demo ships no pre-training code)."""
CHECKSUM_SUFFIX = ".sha256"
FORMAT_VERSION = 1
ARCHITECTURE = "demo-6conv"
"""Name of :class:`Autoencoder`'s layer layout, saved in a file's metadata (``architecture``) so a run
refuses a file of another layout by name; change it whenever the layers change."""
FLOP_SAMPLES = 2
"""Samples per FLOP measurement batch (BatchNorm in eval mode; any size works)."""


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, KERNEL, padding=KERNEL // 2)


def num_pools(height: int, width: int) -> int:
    """How many 2x poolings the encoder applies to an ``height`` x ``width`` image (see module docstring)."""
    side = min(height, width)
    if side < MIN_EMBED_SIDE:
        return 0
    return min(MAX_POOLS, max(0, int(math.floor(math.log2(side / MIN_EMBED_SIDE)))))


class Autoencoder(nn.Module):
    """The demo's 6-conv autoencoder for (C, H, W) images; ``encode`` -> embedding, ``decode`` -> [0, 1]."""

    def __init__(self, input_shape: Sequence[int], embed_channels: int = EMBED_CHANNELS) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or any(s < 1 for s in shape):
            raise ConfigError(
                f"the FedAgg autoencoder needs an image input_shape (C, H, W), got {tuple(input_shape)}",
                hint="FedAgg bridge samples are images: use an image dataset (digits, mnist, cifar10, ...)",
            )
        if isinstance(embed_channels, bool) or not isinstance(embed_channels, int) or embed_channels < 1:
            raise ConfigError(f"autoencoder embed_channels must be an integer >= 1, got {embed_channels!r}")
        channels, height, width = shape
        self.input_shape = shape
        pools = num_pools(height, width)
        sizes = [(height, width)]
        for _ in range(pools):
            h, w = sizes[-1]
            sizes.append((h // 2, w // 2))
        self.embed_shape: tuple[int, int, int] = (embed_channels, *sizes[-1])
        c1, c2 = ENCODER_CHANNELS
        enc: list[nn.Module] = [_conv(channels, c1), nn.BatchNorm2d(c1), nn.ReLU()]
        enc.append(nn.MaxPool2d(2) if pools >= 1 else nn.Identity())
        enc += [_conv(c1, c2), nn.BatchNorm2d(c2), nn.ReLU()]
        enc.append(nn.MaxPool2d(2) if pools >= 2 else nn.Identity())
        enc += [_conv(c2, embed_channels), nn.ReLU()]
        self.encoder = nn.Sequential(*enc)
        d1, d2 = DECODER_CHANNELS
        # Upsample back through the recorded sizes; with fewer pools the first upsampling is dropped.
        ups: list[nn.Module] = [nn.Identity()] * (MAX_POOLS - pools)
        ups += [nn.Upsample(size=s, mode="bilinear", align_corners=False) for s in reversed(sizes[:-1])]
        self.decoder = nn.Sequential(
            _conv(embed_channels, d1),
            nn.ReLU(),
            _conv(d1, d1),
            nn.BatchNorm2d(d1),
            nn.ReLU(),
            ups[0],
            _conv(d1, d2),
            nn.BatchNorm2d(d2),
            nn.ReLU(),
            ups[1],
            _conv(d2, channels),
            nn.Sigmoid(),
        )
        self.register_buffer("out_low", torch.zeros(channels, 1, 1))
        self.register_buffer("out_high", torch.ones(channels, 1, 1))

    @property
    def embed_numel(self) -> int:
        """Floats per embedding (what a device uploads per sample besides its label)."""
        return math.prod(self.embed_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of a batch of images, shape (B, *embed_shape)."""
        return self.encoder(x)

    def decode(self, embedding: torch.Tensor) -> torch.Tensor:
        """Bridge samples in [0, 1] (the decoder's sigmoid output), shape (B, *input_shape)."""
        return self.decoder(embedding)

    def to_data_scale(self, unit: torch.Tensor) -> torch.Tensor:
        """Map a [0, 1] decoder output to the pre-training data's per-channel range."""
        return self.out_low + (self.out_high - self.out_low) * unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction in [0, 1] (decode after encode)."""
        return self.decode(self.encode(x))


def freeze(model: Autoencoder) -> Autoencoder:
    """Put ``model`` in eval mode (BatchNorm uses running statistics) with no trainable parameter."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def num_params(model: nn.Module) -> int:
    """All parameter elements of ``model`` (trainable or frozen)."""
    return sum(p.numel() for p in model.parameters())


def autoencoder_flops(model: Autoencoder) -> tuple[int, int]:
    """Per-sample forward FLOPs of (encode, decode), counted like ``models.flops`` (matmuls and convs)."""
    work = copy.deepcopy(model).to(torch.device("cpu")).eval()
    x = torch.zeros(FLOP_SAMPLES, *model.input_shape)
    with torch.no_grad():
        with FlopCounterMode(display=False) as enc_counter:
            z = work.encode(x)
        with FlopCounterMode(display=False) as dec_counter:
            work.decode(z)
    return (
        int(enc_counter.get_total_flops()) // FLOP_SAMPLES,
        int(dec_counter.get_total_flops()) // FLOP_SAMPLES,
    )


def pretrain_autoencoder(
    model: Autoencoder,
    data: torch.Tensor,
    epochs: int,
    lr: float,
    seed: int,
    *,
    batch_size: int = PRETRAIN_BATCH_SIZE,
) -> dict[str, torch.Tensor]:
    """Train ``model`` in place to reconstruct ``data`` (MSE, Adam) and return a detached copy of its state.

    The target is ``data`` rescaled per channel to [0, 1] with the data's own min/max (stored in the
    ``out_low``/``out_high`` buffers), matching the decoder's sigmoid. Shuffling is seeded by ``seed``.
    Meant for public or held-out data only, never a device's private samples.
    """
    if data.ndim != 4 or tuple(data.shape[1:]) != model.input_shape:
        raise DataError(
            f"autoencoder pre-training data has shape {tuple(data.shape)}, "
            f"expected (N, *{model.input_shape})",
            hint="pass images of the shape the autoencoder was built for",
        )
    if data.shape[0] < 2:
        raise DataError(
            f"autoencoder pre-training needs at least 2 samples, got {data.shape[0]}",
            hint="hold out more data for pre-training (autoencoder.max_samples) or load a pretrained file",
        )
    if epochs < 1 or not lr > 0:
        raise ConfigError(f"autoencoder pre-training needs epochs >= 1 and lr > 0, got {epochs}, {lr}")
    device = next(model.parameters()).device
    x = data.to(device=device, dtype=torch.float32)
    low = x.amin(dim=(0, 2, 3)).view(-1, 1, 1)
    high = x.amax(dim=(0, 2, 3)).view(-1, 1, 1)
    high = torch.where(high > low, high, low + 1.0)  # a constant channel maps to 0
    model.out_low.copy_(low)
    model.out_high.copy_(high)
    target = (x - low) / (high - low)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    n = x.shape[0]
    size = max(2, min(batch_size, n))  # BatchNorm needs >= 2 samples per batch
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n - size + 1, size):
            idx = perm[i : i + size]
            loss = F.mse_loss(model(x[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    freeze(model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def reconstruction_mse(model: Autoencoder, data: torch.Tensor, batch_size: int = 1024) -> float:
    """Mean squared error of ``model`` (eval mode) reconstructing ``data`` rescaled to [0, 1]."""
    model.eval()
    x = data.to(device=model.out_low.device, dtype=torch.float32)
    total = 0.0
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        target = (xb - model.out_low) / (model.out_high - model.out_low)
        total += float(F.mse_loss(model(xb), target, reduction="sum"))
    return total / max(1, x.numel())


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def checksum_path(path: str | Path) -> Path:
    """Where the SHA-256 side file of an autoencoder checkpoint lives (``<path>.sha256``)."""
    p = Path(path)
    return p.with_name(p.name + CHECKSUM_SUFFIX)


def save_autoencoder(path: str | Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> str:
    """Write ``{"version", "state", "meta"}`` (``torch.save``) plus a SHA-256 side file; returns the digest.

    ``meta`` must hold plain values (str, int, float, bool, lists/dicts of them), e.g. ``input_shape``.
    """
    buf = io.BytesIO()
    payload = {
        "version": FORMAT_VERSION,
        "state": {k: v.detach().cpu().clone() for k, v in state.items()},
        "meta": dict(meta),
    }
    torch.save(payload, buf)
    blob = buf.getvalue()
    digest = _digest(blob)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(blob)
    checksum_path(p).write_text(f"{digest}  {p.name}\n", encoding="utf-8")
    return digest


def load_autoencoder(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_autoencoder`: verify its SHA-256, then load tensors only.

    Raises DataError when the file or its checksum is missing, the digest differs, or the content is not a
    valid checkpoint.
    """
    p = Path(path)
    side = checksum_path(p)
    if not p.is_file():
        raise DataError(
            f"autoencoder file {p} does not exist",
            hint="run `edgelearn pretrain-autoencoder` first, "
            "or set autoencoder.path: null to pre-train at init",
        )
    if not side.is_file():
        raise DataError(
            f"autoencoder checksum file {side} is missing",
            hint="re-save the autoencoder with save_autoencoder (it writes the .sha256 file)",
        )
    blob = p.read_bytes()
    expected = side.read_text(encoding="utf-8").split()
    if not expected or expected[0].lower() != _digest(blob):
        raise DataError(
            f"autoencoder file {p} does not match its SHA-256 checksum in {side}",
            hint="the file is corrupt or was modified; pre-train and save it again",
        )
    try:
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means a bad file
        raise DataError(f"autoencoder file {p} is not a valid checkpoint: {exc}") from None
    if (
        not isinstance(payload, dict)
        or payload.get("version") != FORMAT_VERSION
        or not isinstance(payload.get("state"), dict)
        or not isinstance(payload.get("meta"), dict)
    ):
        raise DataError(
            f"autoencoder file {p} is not an edgelearn autoencoder checkpoint (version {FORMAT_VERSION})",
            hint="write it with edgelearn.models.autoencoder.save_autoencoder",
        )
    return payload["state"], payload["meta"]


def build_autoencoder(
    input_shape: Sequence[int],
    state: Mapping[str, torch.Tensor] | None = None,
    *,
    embed_channels: int = EMBED_CHANNELS,
    device: torch.device | None = None,
) -> Autoencoder:
    """A frozen autoencoder for ``input_shape``, loaded with ``state`` when given (shape mismatches raise)."""
    model = Autoencoder(input_shape, embed_channels)
    if state is not None:
        try:
            model.load_state_dict(dict(state))
        except RuntimeError as exc:
            raise DataError(
                f"autoencoder state does not fit input_shape {tuple(input_shape)} with "
                f"embed_channels={embed_channels}: {exc}",
                hint="pre-train an autoencoder for this dataset's image shape",
            ) from None
    if device is not None:
        model = model.to(device)
    return freeze(model)
