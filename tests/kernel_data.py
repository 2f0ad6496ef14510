"""Data shared by the kernel test files (one test file per kernel module)."""
import numpy as np

from dartboost._common import HISTOGRAM_DTYPE


def mixed_data(n=3000, n_features=5, seed=0):
    """Normal features, one with few distinct values, one with 10% missing;
    float32 gradients and positive hessians."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    X[:, 1] = rng.integers(0, 7, size=n)  # few distinct values
    X[rng.random(n) < 0.1, 2] = np.nan     # missing values
    g = rng.normal(size=n).astype(np.float32)
    h = rng.uniform(0.5, 1.5, size=n).astype(np.float32)
    return X, g, h


def naive_histogram(binned, rows, g, h, n_bins):
    """Histograms by ``np.bincount``, feature by feature."""
    out = np.zeros((binned.shape[1], n_bins), dtype=HISTOGRAM_DTYPE)
    for f in range(binned.shape[1]):
        b = binned[rows, f]
        out["sum_gradients"][f] = np.bincount(b, weights=g[rows], minlength=n_bins)
        out["sum_hessians"][f] = np.bincount(b, weights=h[rows], minlength=n_bins)
        out["count"][f] = np.bincount(b, minlength=n_bins)
    return out
