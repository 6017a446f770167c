"""FedAgg's autoencoder (shape adaptation, size, freezing, pre-training, checksummed files) and the bridge
sample store (alignment with the real samples, subtree rows, scales)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.algorithms.fedagg.bridge import (
    FLOAT_BYTES,
    LABEL_BYTES,
    build_bridge_store,
    heldout_images,
    logit_bytes,
    sample_bytes,
)
from edgelearn.data import ArrayDataset, DatasetBundle
from edgelearn.engine import ClientData
from edgelearn.errors import DataError
from edgelearn.models.autoencoder import (
    MAX_PARAMS,
    Autoencoder,
    build_autoencoder,
    checksum_path,
    load_autoencoder,
    num_params,
    pretrain_autoencoder,
    reconstruction_mse,
    save_autoencoder,
)


def test_demo_architecture_has_the_papers_parameter_counts() -> None:
    model = Autoencoder((3, 32, 32))
    assert num_params(model.encoder) == 1948  # 1.90 Ki (Wu et al., INFOCOM 2024, Table I)
    assert num_params(model.decoder) == 2531  # 2.47 Ki
    assert model.embed_shape == (4, 8, 8) and model.embed_numel == 256


@pytest.mark.parametrize(
    ("shape", "embed"), [((1, 8, 8), (4, 4, 4)), ((1, 28, 28), (4, 7, 7)), ((3, 32, 32), (4, 8, 8))]
)
def test_embedding_shapes_per_dataset(shape: tuple[int, ...], embed: tuple[int, ...]) -> None:
    model = build_autoencoder(shape)
    x = torch.randn(3, *shape)
    z = model.encode(x)
    assert tuple(z.shape) == (3, *embed)
    out = model.decode(z)
    assert tuple(out.shape) == (3, *shape)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert num_params(model) < MAX_PARAMS


@given(c=st.sampled_from([1, 3]), h=st.integers(1, 40), w=st.integers(1, 40))
@settings(max_examples=30, deadline=None)
def test_any_image_shape_reconstructs_to_itself(c: int, h: int, w: int) -> None:
    model = build_autoencoder((c, h, w))
    assert tuple(model(torch.rand(2, c, h, w)).shape) == (2, c, h, w)
    assert min(model.embed_shape[1:]) >= min(1, min(h, w))


def test_built_autoencoder_is_frozen() -> None:
    model = build_autoencoder((1, 8, 8))
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 1, 1, generator=g)  # smooth images: a brightness plus a gradient
    ramp = torch.linspace(0, 1, 8).view(1, 1, 1, 8)
    return base + 0.5 * ramp + 0.05 * torch.randn(n, 1, 8, 8, generator=g)


def test_pretraining_is_seeded_and_reduces_reconstruction_error() -> None:
    data = _images(64, 0)
    torch.manual_seed(1)
    a = Autoencoder((1, 8, 8))
    untrained = Autoencoder((1, 8, 8))
    untrained.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    b = Autoencoder((1, 8, 8))
    state_a = pretrain_autoencoder(a, data, epochs=15, lr=1e-2, seed=7, batch_size=16)
    state_b = pretrain_autoencoder(b, data, epochs=15, lr=1e-2, seed=7, batch_size=16)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    untrained.out_low.copy_(a.out_low)
    untrained.out_high.copy_(a.out_high)
    assert reconstruction_mse(a, data) < 0.2 * reconstruction_mse(untrained, data)
    assert not a.training and all(not p.requires_grad for p in a.parameters())
    assert torch.allclose(a.out_low.flatten(), data.amin(dim=(0, 2, 3)))


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = build_autoencoder((1, 8, 8))
    path = tmp_path / "ae.pt"
    digest = save_autoencoder(path, model.state_dict(), {"input_shape": [1, 8, 8], "embed_channels": 4})
    assert checksum_path(path).read_text().split()[0] == digest
    state, meta = load_autoencoder(path)
    assert meta == {"input_shape": [1, 8, 8], "embed_channels": 4}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    rebuilt = build_autoencoder((1, 8, 8), state)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(rebuilt(x), model(x))


def test_corrupt_or_unverified_files_raise_data_error(tmp_path: Path) -> None:
    path = tmp_path / "ae.pt"
    save_autoencoder(path, build_autoencoder((1, 8, 8)).state_dict(), {"input_shape": [1, 8, 8]})
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="checksum"):
        load_autoencoder(path)
    checksum_path(path).unlink()
    with pytest.raises(DataError, match="checksum file"):
        load_autoencoder(path)
    with pytest.raises(DataError, match="does not exist"):
        load_autoencoder(tmp_path / "missing.pt")


class _NotATensor:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_a_checksummed_pickle_of_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"version": 1, "state": {}, "meta": {}, "x": _NotATensor()}, buf)
    path.write_bytes(buf.getvalue())
    import hashlib

    checksum_path(path).write_text(hashlib.sha256(buf.getvalue()).hexdigest() + "  evil.pt\n")
    with pytest.raises(DataError, match="not a valid checkpoint"):
        load_autoencoder(path)


def test_state_of_the_wrong_shape_raises_data_error() -> None:
    state = build_autoencoder((3, 32, 32)).state_dict()
    with pytest.raises(DataError, match="does not fit"):
        build_autoencoder((1, 8, 8), state)


def test_sample_and_logit_bytes() -> None:
    assert sample_bytes(256) == 256 * FLOAT_BYTES + LABEL_BYTES == 1032
    assert logit_bytes(10, 7) == 280


def _clients() -> list[ClientData]:
    g = torch.Generator().manual_seed(3)
    sizes = [5, 0, 3, 4]
    return [ClientData(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 10) for n in sizes]


@pytest.mark.parametrize("scale", ["data", "unit"])
def test_bridge_rows_are_aligned_with_each_devices_real_samples(scale: str) -> None:
    torch.manual_seed(0)
    model = build_autoencoder((1, 8, 8))
    model.out_low.fill_(-2.0)
    model.out_high.fill_(3.0)
    clients = _clients()
    store = build_bridge_store(model, clients, scale=scale, batch_size=4)  # type: ignore[arg-type]
    assert store.offsets.tolist() == [0, 5, 5, 8, 12]
    for k, data in enumerate(clients):
        assert store.count(k) == len(data)
        if len(data) == 0:
            continue
        with torch.no_grad():
            unit = model.decode(model.encode(data.x))
        expected = -2.0 + 5.0 * unit if scale == "data" else unit
        assert torch.allclose(store.bridges[store.span(k)], expected, atol=1e-6)
        assert torch.equal(store.labels[store.span(k)], data.y)
    assert not store.bridges.requires_grad and not store.embeddings.requires_grad
    assert store.embeddings.shape == (12, 4, 4, 4)
    assert store.rows([2, 3]) == slice(5, 12)
    rows = store.rows([3, 0])
    assert isinstance(rows, torch.Tensor) and rows.tolist() == [8, 9, 10, 11, 0, 1, 2, 3, 4]


def test_heldout_images_never_come_from_a_device_partition() -> None:
    train = ArrayDataset(np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1), np.zeros(10, dtype=np.int64))
    test = ArrayDataset(np.full((6, 1, 1, 1), -1.0, dtype=np.float32), np.zeros(6, dtype=np.int64))
    bundle = DatasetBundle("toy", train, test, 2, (1, 1, 1))
    parts = [np.array([0, 1, 2]), np.array([5, 6, 7, 8, 9])]
    rng = np.random.default_rng(0)
    out, index = heldout_images(bundle, parts, source="unassigned_train", max_samples=10, rng=rng)
    assert sorted(out.ravel().tolist()) == [3.0, 4.0] and index.tolist() == [3, 4]
    with pytest.raises(DataError, match="test split is refused"):
        heldout_images(bundle, parts, source="test", max_samples=4, rng=rng)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="data.holdout"):  # no hold-out was made
        heldout_images(bundle, parts, source="holdout", max_samples=4, rng=rng)
    with pytest.raises(DataError, match="unassigned_train"):
        heldout_images(bundle, [np.arange(9)], source="unassigned_train", max_samples=5, rng=rng)
