"""Small helpers shared by the test modules."""

import numpy as np


def gaussian(n: int = 600, d: int = 8, seed: int = 0) -> np.ndarray:
    """``f32[n, d]`` standard normal rows (a fixed seed)."""
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def assert_same_results(a, b) -> None:
    """Two ``search_arrays`` results have the same ids and the same distance bits."""
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0].view(np.uint32), b[0].view(np.uint32))
