"""The linear code is MDS and its decoder never answers a badly determined slot.

Exhaustive over every erasure pattern of at most r of the k + r outputs for
k <= 8, r <= 3, with an exact parity (a linear base and a linear parity), so
any decoded answer can be checked against the truth.
"""

import itertools

import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.linear_model import LinearRegression

from dartboost.coded import (DECODED, DEFAULT, EXACT, CodedPredictor, code_matrix,
                             decode_amplification, degraded_mode_report)


@pytest.fixture(scope="module")
def linreg():
    X, y = make_regression(n_samples=120, n_features=4, noise=1.0, random_state=0)
    return X, y, LinearRegression().fit(X, y)


def _exact_outputs(cp, X, k, n=6):
    Xg = X[: k * n].reshape(k, n, -1)
    base = np.stack([cp.base_predict_raw(x) for x in Xg])
    P = cp.encode(Xg)
    parity = np.stack([cp.parity_predict(P, j) for j in range(cp.r)])
    return base, parity


def _patterns(k, r):
    for m in range(0, r + 1):
        for lost in itertools.combinations(range(k + r), m):
            mask = np.ones(k + r, dtype=bool)
            mask[list(lost)] = False
            yield mask


def test_middle_slot_and_parity_0_lost_is_exact(linreg):
    # Finding: k = 3, r = 2, odd k -> with Chebyshev nodes the middle node is
    # (numerically) 0, parity 1 carries nothing about the middle slot, and the
    # decoder divided by ~1e-17: a wrong answer flagged DECODED.
    X, _, base = linreg
    cp = CodedPredictor(base, k=3, r=2, parity_estimator=LinearRegression()).fit(X)
    outs, par = _exact_outputs(cp, X, 3)
    avail = np.array([True, False, True, False, True])
    dec, rec, status = cp.decode(outs, par, avail, return_status=True)
    assert status.tolist() == [EXACT, DECODED, EXACT]
    np.testing.assert_allclose(dec[1], outs[1], rtol=1e-7, atol=1e-6 * outs.std())


def test_code_matrix_every_square_submatrix_is_well_posed():
    for k in range(2, 13):
        for r in range(1, min(k, 4) + 1):
            A = code_matrix(k, r)
            assert np.all(A > 0) and np.allclose(A[0], 1.0)
            for m in range(1, r + 1):
                for rows in itertools.combinations(range(r), m):
                    for cols in itertools.combinations(range(k), m):
                        assert np.linalg.det(A[np.ix_(rows, cols)]) > 0


@pytest.mark.parametrize("k,r", [(k, r) for k in range(2, 9) for r in (1, 2, 3) if r <= k])
def test_every_pattern_of_at_most_r_losses_is_exact(linreg, k, r):
    X, _, base = linreg
    cp = CodedPredictor(base, k=k, r=r, parity_estimator=LinearRegression(),
                        max_amplification=np.inf).fit(X)
    guarded = CodedPredictor(base, k=k, r=r, parity_estimator=LinearRegression()).fit(X)
    outs, par = _exact_outputs(cp, X, k)
    g_outs, g_par = _exact_outputs(guarded, X, k)
    scale = outs.std()
    for mask in _patterns(k, r):
        lost = ~mask[:k]
        dec, rec, status = cp.decode(outs, par, mask, return_status=True)
        # MDS: every pattern of <= r losses is rebuilt, never defaulted.
        assert status.tolist() == [DECODED if lo else EXACT for lo in lost], mask
        assert cp.can_decode(mask)
        amp = cp.decode_amplification(mask)
        np.testing.assert_allclose(dec, outs, atol=1e-7 * scale * max(amp, 1.0))
        # With the guard: decoded only when well determined, and then exact.
        dec, rec, status = guarded.decode(g_outs, g_par, mask, return_status=True)
        ok = guarded.can_decode(mask)
        assert ok == bool(np.isfinite(amp) and amp <= guarded.max_amplification)
        expect = [(DECODED if ok else DEFAULT) if lo else EXACT for lo in lost]
        assert status.tolist() == expect, mask
        sel = lost if ok else ~lost
        np.testing.assert_allclose(dec[sel], g_outs[sel], atol=1e-7 * scale * max(amp, 1.0))


def test_more_losses_than_answered_parities_never_decode(linreg):
    X, _, base = linreg
    cp = CodedPredictor(base, k=4, r=2, parity_estimator=LinearRegression(),
                        max_amplification=np.inf).fit(X)
    outs, par = _exact_outputs(cp, X, 4)
    mask = np.array([False, False, True, True, True, False])
    assert not cp.can_decode(mask)
    assert cp.decode_amplification(mask) == np.inf
    _, _, status = cp.decode(outs, par, mask, return_status=True)
    assert status.tolist() == [DEFAULT, DEFAULT, EXACT, EXACT]


def test_amplification_is_the_decoded_error_scale():
    # r = 1 subtraction passes the parity error through unchanged; for r = 2
    # the reported amplification bounds the decoded error's std (Monte Carlo).
    A = code_matrix(4, 1)
    assert decode_amplification(A, [False, True, True, True, True]) == pytest.approx(1.0)
    assert decode_amplification(A, [True] * 5) == 0.0
    A = code_matrix(4, 2)
    mask = np.array([False, True, False, True, True, True])
    amp = decode_amplification(A, mask)
    rng = np.random.default_rng(0)
    from dartboost.coded import linear_decode
    outs = np.zeros((4, 20000, 1))
    noise = rng.standard_normal((2, 20000, 1))
    dec, _, ok = linear_decode(A, outs, noise, mask)
    assert ok
    stds = dec[[0, 2], :, 0].std(axis=1)
    assert stds.max() == pytest.approx(amp, rel=0.05)
    assert amp > 1.0


def test_report_gives_amplification_and_refusals(linreg):
    X, y, base = linreg
    cp = CodedPredictor(base, k=4, r=2, parity_estimator=LinearRegression(),
                        max_amplification=5.0).fit(X)
    rep = degraded_mode_report(cp, X, y, n_lost=2, timing=False)
    amps = [decode_amplification(cp.code_matrix_, np.r_[np.isin(np.arange(4), lost,
                                                                 invert=True), [True, True]])
            for lost in itertools.combinations(range(4), 2)]
    assert rep["decode_amplification"]["max"] == pytest.approx(max(amps))
    assert rep["decode_amplification"]["patterns_refused"] == sum(a > 5.0 for a in amps)
