"""The user cache (edgelearn.cache) and cached digits: same arrays bit for bit, damage detected and rebuilt.

conftest.py points EDGELEARN_CACHE_DIR at a per-session temp folder; tests that need an empty cache use their
own folder through monkeypatch.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tiny import python_stdout

from edgelearn import __version__, cache
from edgelearn.data.builtin import DIGITS_CACHE_NAME, digits_arrays, digits_arrays_fresh, load_digits_bundle


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / __version__


def test_cache_dir_env_var_then_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "mine" / __version__
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_dir() == tmp_path / "xdg" / "edgelearn" / __version__
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "edgelearn" / __version__


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), key


def test_cached_digits_equal_a_fresh_load_bit_for_bit(cache_root: Path) -> None:
    fresh = digits_arrays_fresh()
    first = digits_arrays()  # builds the cache file
    assert (cache_root / f"{DIGITS_CACHE_NAME}.npz").is_file()
    second = digits_arrays()  # reads it
    _assert_same(first, fresh)
    _assert_same(second, fresh)
    assert second["images"].dtype == np.float32 and second["labels"].dtype == np.int64
    assert second["images"].tobytes() == fresh["images"].tobytes()


def test_digits_bundle_is_the_same_from_cache(cache_root: Path) -> None:
    cold = load_digits_bundle(seed=3)
    warm = load_digits_bundle(seed=3)
    for part in ("train", "test"):
        for field in ("x", "y"):
            a, b = getattr(getattr(cold, part), field), getattr(getattr(warm, part), field)
            assert a.dtype == b.dtype and np.array_equal(a, b)
    assert cold.source == warm.source


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "tampered", "no-digest", "pickled"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(
    cache_root: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = digits_arrays_fresh()
    digits_arrays()
    path = cache_root / f"{DIGITS_CACHE_NAME}.npz"
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "tampered":  # a valid npz whose arrays no longer match the stored digest
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["images"][0, 0, 0, 0] += 1
        np.savez(path, **arrays)
    elif damage == "no-digest":
        np.savez(path, **fresh)
    else:  # an object array needs pickle to load: refused, never unpickled
        np.savez(path, images=np.array([{"evil": 1}], dtype=object), labels=fresh["labels"], sha256="0")
    with caplog.at_level(logging.WARNING, logger="edgelearn.cache"):
        rebuilt = digits_arrays()
    assert "damaged" in caplog.text
    _assert_same(rebuilt, fresh)
    _assert_same(digits_arrays(), fresh)  # the rewritten file is good again
    assert "damaged" not in caplog.text.split("rebuilding it", 1)[1]


def test_writes_are_atomic_and_leave_no_temp_files(cache_root: Path) -> None:
    digits_arrays()
    assert [p.name for p in cache_root.iterdir()] == [f"{DIGITS_CACHE_NAME}.npz"]
    with zipfile.ZipFile(cache_root / f"{DIGITS_CACHE_NAME}.npz") as archive:
        assert sorted(archive.namelist()) == ["images.npy", "labels.npy", "sha256.npy"]


def test_an_unwritable_cache_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker))
    with caplog.at_level(logging.WARNING, logger="edgelearn.cache"):
        arrays = cache.cached_arrays("thing", lambda: {"a": np.arange(3)})
    assert np.array_equal(arrays["a"], np.arange(3))
    assert "could not write cache file" in caplog.text and cache.CACHE_ENV in caplog.text


def test_entries_refuse_object_arrays_and_bad_names(cache_root: Path) -> None:
    with pytest.raises(ValueError, match="hold objects"):
        cache.cached_arrays("objects", lambda: {"a": np.array([None], dtype=object)})
    with pytest.raises(ValueError, match="letters, digits"):
        cache.cached_arrays("../escape", lambda: {"a": np.arange(3)})


def test_a_cached_digits_load_does_not_import_scikit_learn(cache_root: Path) -> None:
    digits_arrays()  # fill the cache in this process
    code = (
        "import sys\n"
        "from edgelearn.data import load_dataset\n"
        "bundle = load_dataset('digits', seed=0)\n"
        "print(len(bundle.train.y), 'sklearn' in sys.modules, 'scipy' in sys.modules)\n"
    )
    out = python_stdout(code).split()
    assert out == [str(len(load_digits_bundle(0).train.y)), "False", "False"]
