"""Suite-wide settings: one torch thread (tests use tiny models; extra threads only add contention)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

# Subprocesses (CLI tests) inherit this; torch reads it at start-up.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from edgelearn.engine.precision import set_precision  # noqa: E402

torch.set_num_threads(1)

# Modules whose assertions compare floats that depend on which CPU kernels run (executor against executor,
# precision against precision, training against a learned threshold). `make test-avx2` (run by .ci/run)
# repeats them with the AVX2 kernels an AVX2-only CPU gets, so a tolerance tuned on an AVX-512 machine fails
# here first.
KERNEL_SENSITIVE = {
    "test_engine.py",
    "test_engine_auto.py",
    "test_engine_grad_shift.py",
    "test_engine_infer.py",
    "test_engine_precision.py",
    "test_engine_ray.py",
    "test_engine_vmap.py",
    "test_engine_vmap_norm.py",
    "test_example_plugins.py",
    "test_executor_equivalence.py",
    "test_fedagg_algorithm.py",
    "test_fedagg_distill.py",
    "test_learning_above_chance.py",
    "test_plugins_pickle.py",
    "test_baselines_demlearn.py",
    "test_baselines_feddkc.py",
    "test_baselines_fedgkt.py",
    "test_two_stage.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of a :data:`KERNEL_SENSITIVE` module ``kernel_sensitive``."""
    for item in items:
        if item.path.name in KERNEL_SENSITIVE:
            item.add_marker(pytest.mark.kernel_sensitive)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    """Every test starts single-threaded, even after a test that changed torch's thread count (e.g. a run
    with engine.torch_threads); Ray's serial references then reduce floats like its one-thread workers."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _float32_policy() -> Iterator[None]:
    """A run with engine.precision=bfloat16 sets the process's autocast policy; later tests start float32."""
    yield
    set_precision("float32")


# --- user cache (edgelearn.cache): tests never read or write the real ~/.cache/edgelearn. -----------------
# Set at import, before any test or collection-time code loads a dataset; subprocesses (CLI tests) inherit it.
_TEST_CACHE_DIR = tempfile.mkdtemp(prefix="edgelearn-test-cache-")
os.environ["EDGELEARN_CACHE_DIR"] = _TEST_CACHE_DIR
atexit.register(shutil.rmtree, _TEST_CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_registries() -> Iterator[None]:
    """Names a test registers (plugins: algorithms, models, datasets, partitioners, hardware) end with it."""
    from edgelearn.plugins import isolated

    with isolated():
        yield
