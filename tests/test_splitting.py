"""Best-split search (``_splitting.find_best_split``): the exact split (feature,
bin, missing direction, left count) of a brute-force scan over the rows,
across min_samples_leaf, min_child_weight, min_split_gain and feature masks."""
import numpy as np
import pytest
from kernel_data import mixed_data, naive_histogram

from dartboost._binning import BinMapper
from dartboost._cext import _splitting
from dartboost._common import HISTOGRAM_DTYPE

N_BINS = 16


def _brute_force(binned, g, h, n_bins_nm, mask, l2, msl, mcw, msg):
    """Scan every candidate split on the rows themselves, in the kernel's
    order (missing right by bin, then missing left by bin; features in index
    order), keeping the first strictly best."""
    G, H, n = g.sum(), h.sum(), g.size
    parent = G * G / (H + l2)
    best, best_gain = None, -np.inf
    for f in np.flatnonzero(mask):
        col = binned[:, f]
        miss = col == N_BINS
        nb = int(n_bins_nm[f])
        candidates = [(b, False) for b in range(nb) if not (b == nb - 1 and not miss.any())]
        if miss.any() and nb > 1:
            candidates += [(b, True) for b in range(nb - 1)]
        for b, miss_left in candidates:
            left = ((col <= b) & ~miss) | (miss & miss_left)
            nl = int(left.sum())
            gl, hl = g[left].sum(), h[left].sum()
            if nl < msl or n - nl < msl or hl < mcw or H - hl < mcw:
                continue
            gain = gl * gl / (hl + l2) + (G - gl) ** 2 / (H - hl + l2) - parent
            if gain > best_gain:
                best_gain, best = gain, (int(f), b, miss_left, nl, gl, hl)
    if best is None or best_gain <= msg or best_gain <= 0:
        return None
    return (best_gain,) + best


@pytest.fixture(scope="module")
def node():
    X, g, h = mixed_data(n=500, n_features=6, seed=3)
    X[:, 4] = np.where(X[:, 4] > 1.0, np.nan, X[:, 4])  # a second feature with missing values
    mapper = BinMapper(max_bins=N_BINS, random_state=0).fit(X)
    binned = mapper.transform(X)
    g, h = g.astype(np.float64), h.astype(np.float64)
    hist = naive_histogram(binned, np.arange(X.shape[0]), g, h, N_BINS + 1)
    return binned, g, h, hist, mapper.n_bins_non_missing_


MASKS = {"all": [1, 1, 1, 1, 1, 1], "some": [0, 1, 1, 0, 1, 0], "one": [0, 0, 0, 0, 1, 0]}


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("min_samples_leaf", [1, 40])
@pytest.mark.parametrize("min_child_weight", [1e-3, 30.0, 200.0])
@pytest.mark.parametrize("min_split_gain", [0.0, 2.0, 1e9])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_best_split_is_the_brute_force_split(node, mask_name, min_samples_leaf,
                                             min_child_weight, min_split_gain, n_threads):
    binned, g, h, hist, n_bins_nm = node
    mask = np.array(MASKS[mask_name], dtype=np.uint8)
    l2 = 0.5
    res = _splitting.find_best_split(hist, g.sum(), h.sum(), g.size, n_bins_nm, mask, N_BINS, l2,
                                     min_samples_leaf, min_child_weight, min_split_gain,
                                     n_threads)
    ref = _brute_force(binned, g, h, n_bins_nm, mask, l2, min_samples_leaf, min_child_weight,
                       min_split_gain)
    if ref is None:
        assert res is None
        return
    assert res is not None
    gain, feature, bin_idx, missing_left, gl, hl, nl, cat_bitset = res
    assert cat_bitset is None  # numerical features only
    ref_gain, ref_f, ref_b, ref_ml, ref_nl, ref_gl, ref_hl = ref
    assert (feature, bin_idx, missing_left, nl) == (ref_f, ref_b, ref_ml, ref_nl)
    assert mask[feature]
    assert gain == pytest.approx(ref_gain, rel=1e-9)
    assert (gl, hl) == pytest.approx((ref_gl, ref_hl), rel=1e-9)


def test_constraints_really_bind(node):
    # the parametrised cases above must cover both outcomes of each constraint
    binned, g, h, hist, n_bins_nm = node
    mask = np.ones(6, np.uint8)
    free = _brute_force(binned, g, h, n_bins_nm, mask, 0.5, 1, 1e-3, 0.0)
    assert free is not None
    assert _brute_force(binned, g, h, n_bins_nm, mask, 0.5, 1, 200.0, 0.0)[1:4] != free[1:4]
    assert _brute_force(binned, g, h, n_bins_nm, mask, 0.5, 1, 1e-3, 1e9) is None
    assert _brute_force(binned, g, h, n_bins_nm, MASKS["one"], 0.5, 1, 1e-3, 0.0)[1] == 4


def test_equal_gains_go_to_the_lower_feature():
    X, g, h = mixed_data(n=400, n_features=3, seed=5)
    X = np.repeat(X[:, :1], 4, axis=1)  # four identical features
    mapper = BinMapper(max_bins=N_BINS, random_state=0).fit(X)
    binned = mapper.transform(X)
    hist = naive_histogram(binned, np.arange(400), g.astype(np.float64), h.astype(np.float64),
                           N_BINS + 1)
    for mask in ([1, 1, 1, 1], [0, 0, 1, 1]):
        res = _splitting.find_best_split(hist, float(g.sum()), float(h.sum()), 400,
                                         mapper.n_bins_non_missing_, np.array(mask, np.uint8),
                                         N_BINS, 0.0, 1, 1e-3, 0.0, 2)
        assert res[1] == mask.index(1)


def test_flat_and_padded_histograms_give_the_same_split():
    # the flat layout (each feature its own bins, then its missing bin) is
    # searched as the padded one: same split, categorical or not
    from dartboost._grower import histogram_offsets
    rng = np.random.default_rng(3)
    nb = np.array([1, 2, 5, 40, 255], np.uint32)
    offsets = histogram_offsets(nb)
    padded = np.zeros((5, 256), HISTOGRAM_DTYPE)
    for f in range(5):
        for b in list(range(nb[f])) + [255]:
            padded[f, b] = (rng.normal(), rng.uniform(1, 5), rng.integers(25, 200))
    flat = np.concatenate([np.r_[padded[f, :nb[f]], padded[f, 255:]] for f in range(5)])
    assert flat.size == offsets[-1] == nb.sum() + 5
    sum_g = float(padded["sum_gradients"][0].sum())
    sum_h = float(padded["sum_hessians"][0].sum())
    n = int(padded["count"][0].sum())
    mask = np.ones(5, np.uint8)
    for is_cat in (None, np.array([0, 0, 1, 1, 0], np.uint8)):
        found = [_splitting.find_best_split(
            hist, sum_g, sum_h, n, nb, mask, 255, 1.0, 20, 1e-3, 0.0, 2, is_cat,
            min_data_per_group=20, offsets=offs) for hist, offs in ((padded, None),
                                                                    (flat, offsets))]
        assert found[0] is not None
        assert found[0][:7] == found[1][:7]
        if found[0][7] is not None:
            np.testing.assert_array_equal(found[0][7], found[1][7])
    with pytest.raises(ValueError, match="fewer records than its bins"):
        _splitting.find_best_split(flat[:-1], sum_g, sum_h, n, nb, mask, 255, 1.0, 20, 1e-3,
                                   0.0, 1, offsets=offsets - np.r_[0, 0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="missing bin 255 must be the last"):
        _splitting.find_best_split(padded[:, :200], sum_g, sum_h, n, nb, mask, 255, 1.0, 20,
                                   1e-3, 0.0, 1)
