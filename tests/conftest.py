"""Strict JAX settings for every test (set before any JAX operation)."""

import os
from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_num_cpu_devices", 8)  # sharded-index tests; the default device is the first
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

_DATA_DIRS = [
    Path(os.environ.get("IQDB_DATA", "")),
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data",
    Path(__file__).resolve().parents[1] / "shared" / "data",
]


def find_data_dir():
    for d in _DATA_DIRS:
        if str(d) and (d / "debian_base.f16.npy").exists():
            return d
    return None


@pytest.fixture(scope="session")
def real_data():
    """(base f32[n, 384], queries f32[nq, 384]) from ../shared/data, or skip."""
    d = find_data_dir()
    if d is None:
        pytest.skip("real embeddings (../shared/data) not present")
    base = np.load(d / "debian_base.f16.npy").astype(np.float32)
    queries = np.load(d / "debian_queries.f16.npy").astype(np.float32)
    return base, queries


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every XLA:CPU executable keeps its own memory mappings; the whole suite in one
    process compiles thousands of programs and ran into the kernel's
    ``vm.max_map_count`` (65530), after which LLVM crashed mid-compile
    (a segfault). Modules rarely share shapes, so little is recompiled.
    """
    yield
    jax.clear_caches()
