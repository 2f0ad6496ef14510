"""Loss kernels (``_cext/_loss.pyx``) against their loss values: every
gradient is the finite difference of ``loss.loss`` and every hessian its second
difference, except where a loss declares a surrogate hessian (1)."""
import numpy as np
import pytest

from dartboost import _losses
from dartboost._cext import _loss

EPS_G = 1e-6   # central first difference
EPS_H = 1e-4   # central second difference


def _make(name):
    if name == "quantile":
        return _losses.Quantile(0.3)
    if name == "huber":
        loss = _losses.Huber(0.9)
        loss.delta = 0.7
        return loss
    if name == "tweedie":
        return _losses.Tweedie(1.3)
    return {"squared_error": _losses.SquaredError, "absolute_error": _losses.AbsoluteError,
            "poisson": _losses.Poisson, "binary_log_loss": _losses.BinaryLogLoss,
            "gamma": _losses.Gamma}[name](1)


def _targets(name, rng, n):
    if name == "binary_log_loss":
        return rng.integers(0, 2, n).astype(np.float64)
    if name == "poisson":
        return rng.poisson(2.0, n).astype(np.float64)
    if name == "gamma":
        return rng.gamma(2.0, 1.5, n)
    if name == "tweedie":
        return _compound_poisson_gamma(rng, n)
    return rng.normal(size=n)


def _compound_poisson_gamma(rng, n):
    """Tweedie (1 < rho < 2) targets: a Poisson number of gamma amounts,
    so exact zeros occur."""
    counts = rng.poisson(1.0, n)
    return np.array([rng.gamma(2.0, 1.0, c).sum() for c in counts])


def _raw_away_from_kinks(name, y, rng):
    # |raw - y| away from 0 (absolute, quantile) and from delta (huber), where
    # the loss has no derivative and a finite difference means nothing
    offset = rng.choice([-1.0, 1.0], y.size) * rng.uniform(0.1, 2.0, y.size)
    if name == "huber":
        offset = rng.choice([-1.0, 1.0], y.size) * rng.choice([0.3, 1.5], y.size)
    if name in ("poisson", "binary_log_loss", "gamma", "tweedie"):
        return rng.normal(scale=1.5, size=y.size)
    return y + offset


def _kernel(loss, y, raw, sw=None, n_threads=2):
    K, n = raw.shape
    g = np.empty((K, n), np.float32)
    h = np.empty((K, n), np.float32)
    loss.gradients(y, raw, sw, n_threads, g, h)
    return g.astype(np.float64), h.astype(np.float64)


def _point_loss(loss, y, raw, i, k=0, delta=0.0):
    r = raw[:, i:i + 1].copy()
    r[k, 0] += delta
    yi = y[i:i + 1] if loss.is_multiclass else y[:, i:i + 1]
    return loss.loss(yi, r)


def _finite_differences(loss, y, raw, i, k=0):
    g = (_point_loss(loss, y, raw, i, k, EPS_G) - _point_loss(loss, y, raw, i, k, -EPS_G)) \
        / (2 * EPS_G)
    h = (_point_loss(loss, y, raw, i, k, EPS_H) - 2 * _point_loss(loss, y, raw, i, k)
         + _point_loss(loss, y, raw, i, k, -EPS_H)) / EPS_H ** 2
    return g, h


SURROGATE_HESSIAN = {"absolute_error", "quantile", "huber"}


@pytest.mark.parametrize("name", _loss.POINTWISE_LOSSES)
def test_pointwise_gradient_and_hessian_match_finite_differences(name):
    rng = np.random.default_rng(0)
    loss = _make(name)
    y = _targets(name, rng, 60)
    raw = _raw_away_from_kinks(name, y, rng)
    g, h = _kernel(loss, y[None], raw[None])
    for i in range(y.size):
        fd_g, fd_h = _finite_differences(loss, y[None], raw[None], i)
        assert g[0, i] == pytest.approx(fd_g, rel=1e-5, abs=1e-6), (name, i)
        if name in SURROGATE_HESSIAN:
            assert h[0, i] == 1.0
        else:
            assert h[0, i] == pytest.approx(fd_h, rel=1e-4, abs=1e-5), (name, i)


def test_huber_hessian_is_exact_in_the_quadratic_part():
    loss = _make("huber")
    y = np.zeros(2)
    raw = np.array([0.3, -0.5])  # |r| < delta = 0.7
    _, h = _kernel(loss, y[None], raw[None])
    for i in range(2):
        assert h[0, i] == pytest.approx(_finite_differences(loss, y[None], raw[None], i)[1],
                                        rel=1e-4)


def test_softmax_gradient_and_hessian_diagonal_match_finite_differences():
    rng = np.random.default_rng(1)
    K, n = 4, 30
    loss = _losses.SoftmaxLogLoss(K)
    y = rng.integers(0, K, n).astype(np.float64)
    raw = rng.normal(scale=2.0, size=(K, n))
    g, h = _kernel(loss, y, raw)
    for i in range(n):
        for k in range(K):
            fd_g, fd_h = _finite_differences(loss, y, raw, i, k)
            assert g[k, i] == pytest.approx(fd_g, rel=1e-5, abs=1e-6)
            assert h[k, i] == pytest.approx(fd_h, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("name", _loss.POINTWISE_LOSSES + ("softmax",))
def test_weights_scale_gradient_and_hessian(name):
    rng = np.random.default_rng(2)
    if name == "softmax":
        loss = _losses.SoftmaxLogLoss(3)
        y = rng.integers(0, 3, 500).astype(np.float64)
        raw = rng.normal(size=(3, 500))
    else:
        loss = _make(name)
        y1 = _targets(name, rng, 500)
        y, raw = y1[None], _raw_away_from_kinks(name, y1, rng)[None]
    w = rng.uniform(0.0, 3.0, 500)
    g, h = _kernel(loss, y, raw)
    gw, hw = _kernel(loss, y, raw, w)
    np.testing.assert_allclose(gw, w * g, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(hw, w * h, rtol=1e-6, atol=1e-7)


def test_squared_error_multi_output_rows_are_independent():
    rng = np.random.default_rng(3)
    loss = _losses.SquaredError(3)
    y = rng.normal(size=(3, 20))
    raw = rng.normal(size=(3, 20))
    g, h = _kernel(loss, y, raw)
    np.testing.assert_allclose(g, raw - y, rtol=1e-6)
    np.testing.assert_array_equal(h, 1.0)


def test_log_loss_gradient_is_finite_at_extreme_scores():
    loss = _make("binary_log_loss")
    y = np.array([[0.0, 1.0, 0.0, 1.0]])
    raw = np.array([[800.0, -800.0, -800.0, 800.0]])
    g, h = _kernel(loss, y, raw)
    np.testing.assert_allclose(g, [[1.0, -1.0, 0.0, 0.0]], atol=1e-12)
    assert np.all(np.isfinite(h)) and np.all(h >= 0)


def test_thread_count_does_not_change_gradients():
    rng = np.random.default_rng(4)
    loss = _make("binary_log_loss")
    y = _targets("binary_log_loss", rng, 300_000)[None]
    raw = rng.normal(size=(1, 300_000))
    g1, h1 = _kernel(loss, y, raw, n_threads=1)
    g2, h2 = _kernel(loss, y, raw, n_threads=2)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(h1, h2)


def test_unknown_kernel_name_is_rejected():
    buf = np.empty(1, np.float32)
    with pytest.raises(ValueError, match="Unknown pointwise loss 'nope'"):
        _loss.gradient_hessian("nope", np.zeros(1), np.zeros(1), np.empty(0), 0.0, 1, buf, buf)


def test_tweedie_targets_include_zeros_and_the_hessian_stays_positive():
    rng = np.random.default_rng(5)
    y = _compound_poisson_gamma(rng, 400)
    assert np.any(y == 0)
    for rho in (1.01, 1.5, 1.99):
        loss = _losses.Tweedie(rho)
        raw = rng.normal(scale=3.0, size=y.size)
        _, h = _kernel(loss, y[None], raw[None])
        assert np.all(h > 0), rho


@pytest.mark.parametrize("loss", [_losses.Gamma(1), _losses.Tweedie(1.4), _losses.Poisson(1)])
def test_log_link_baseline_minimises_the_loss(loss):
    rng = np.random.default_rng(6)
    y = rng.gamma(2.0, 1.0, (1, 300))
    w = rng.uniform(0.5, 2.0, 300)
    b = loss.baseline(y, w)[0]
    assert b == pytest.approx(np.log(np.average(y[0], weights=w)))
    at = loss.loss(y, np.full((1, 300), b), w)
    for step in (-1e-3, 1e-3):
        assert loss.loss(y, np.full((1, 300), b + step), w) > at
