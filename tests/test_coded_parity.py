"""Tests for CodedPredictor (ParM parity models)."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.multioutput import MultiOutputRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.svm import SVC

from dartboost.coded import (
    DECODED,
    DEFAULT,
    EXACT,
    CodedPredictor,
    ParityModel,
    UnrecoverableGroupError,
    default_parity_estimator,
    raw_output,
)

pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.usefixtures("one_blas_thread")]


@pytest.fixture(scope="module")
def linreg():
    X, y = make_regression(n_samples=240, n_features=6, noise=1.0, random_state=0)
    return X, y, LinearRegression().fit(X, y)


@pytest.fixture(scope="module")
def logreg3():
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=3,
                               random_state=0)
    return X, y, LogisticRegression(max_iter=500).fit(X, y)


def _mask(k, r, lost):
    m = np.ones(k + r, dtype=bool)
    m[list(lost)] = False
    return m


@pytest.mark.parametrize("k,r", [(2, 1), (3, 1), (4, 2), (3, 3)])
def test_linear_base_is_reconstructed_exactly(linreg, k, r):
    # A linear model's sum parity is exactly linear (intercept k*b), so
    # decoding is exact: this test fails on any slip in encoding or decoding.
    X, y, base = linreg
    # No conditioning guard: this checks the algebra, and r = k losses are
    # far too ill-conditioned for the default guard.
    cp = CodedPredictor(base, k=k, r=r, parity_estimator=LinearRegression(),
                        max_amplification=np.inf).fit(X)
    Xg = X[: 10 * k].reshape(k, 10, -1)
    truth = base.predict(Xg.reshape(k * 10, -1)).reshape(k, 10)
    lost = tuple(range(r))
    pred, rec = cp.predict_group(Xg, _mask(k, r, lost))
    np.testing.assert_allclose(pred, truth, atol=1e-7)
    assert rec.tolist() == [i in lost for i in range(k)]
    assert pred.shape == (k, 10)


def test_multiclass_margins_reconstructed_exactly(logreg3):
    X, y, base = logreg3
    cp = CodedPredictor(base, k=3, parity_estimator=LinearRegression()).fit(X)
    assert cp.n_outputs_ == 3
    Xg = X[:60].reshape(3, 20, -1)
    labels, rec = cp.predict_group(Xg, [True, False, True, True])
    np.testing.assert_array_equal(labels, base.predict(X[:60]).reshape(3, 20))
    assert rec.tolist() == [False, True, False]
    assert cp.classes_.tolist() == [0, 1, 2]


def test_contract_shapes_and_decode(linreg):
    X, y, base = linreg
    cp = CodedPredictor(base, k=2, r=2, encoder="sum",
                        parity_estimator=LinearRegression()).fit(X)
    Xg = [X[:5], X[5:10]]
    P = cp.encode(Xg)
    assert P.shape == (2, 5, 6)
    par = np.stack([cp.parity_predict(P, j) for j in range(2)])
    assert par.shape == (2, 5, 1)
    np.testing.assert_allclose(cp.parity_predict(P[1], 1), par[1])
    base_out = np.stack([raw_output(base, x) for x in Xg])
    base_out[0] = np.nan  # rows of unavailable slots are ignored
    out, rec, status = cp.decode(base_out, par, [False, True, True, False], return_status=True)
    assert out.shape == (2, 5, 1) and rec.tolist() == [True, False]
    assert status.tolist() == [DECODED, EXACT]
    np.testing.assert_allclose(out[0, :, 0], base.predict(X[:5]), atol=1e-7)
    np.testing.assert_allclose(cp.outputs_to_prediction(out[0]), base.predict(X[:5]), atol=1e-7)


def test_mlp_parity_beats_default_prediction():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    Xtr, ytr, Xte = X[:600], y[:600], X[1000:1200]
    base = MLPClassifier((16,), max_iter=40, random_state=0).fit(Xtr, ytr)
    cp = CodedPredictor(base, k=2, encoder="concat",
                        parity_estimator=MLPRegressor(hidden_layer_sizes=(64,), max_iter=100,
                                                      random_state=0),
                        random_state=0).fit(Xtr)
    Xg = Xte.reshape(2, 100, -1)
    pred, _ = cp.predict_group(Xg, [False, True, True])
    acc = np.mean(pred[0] == base.predict(Xg[0]))
    # the default prediction agrees about 1 time in 10; a working parity far more
    assert acc > 0.6, acc


def test_unrecoverable_policy_default_and_raise(linreg):
    X, y, base = linreg
    cp = CodedPredictor(base, k=3, parity_estimator=LinearRegression()).fit(X)
    Xg = X[:12].reshape(3, 4, -1)
    pred, rec, status = cp.predict_group(Xg, [False, False, True, True], return_status=True)
    assert rec.tolist() == [True, True, False]
    assert status.tolist() == [DEFAULT, DEFAULT, EXACT]
    np.testing.assert_allclose(pred[0], base.predict(X).mean())
    np.testing.assert_allclose(pred[2], base.predict(Xg[2]))
    strict = clone(cp).set_params(on_unrecoverable="raise").fit(X)
    with pytest.raises(UnrecoverableGroupError, match="cannot be rebuilt"):
        strict.predict_group(Xg, [True, False, True, False])
    # nothing missing: no decoding, exact outputs
    pred, rec = strict.predict_group(Xg)
    assert not rec.any()


def test_default_output_predicts_majority_class(logreg3):
    X, y, base = logreg3
    cp = CodedPredictor(base, k=2, parity_estimator=Ridge()).fit(X)
    majority = np.bincount(base.predict(X)).argmax()
    assert cp.outputs_to_prediction(cp.default_output_[None])[0] == majority


def test_pad_group_partial_group(linreg):
    X, y, base = linreg
    cp = CodedPredictor(base, k=3, parity_estimator=LinearRegression()).fit(X)
    Xg, n_rows = cp.pad_group([X[:4], X[4:6]])
    assert Xg.shape == (3, 4, 6) and n_rows.tolist() == [4, 2, 0]
    np.testing.assert_allclose(Xg[2], np.broadcast_to(cp.pad_query_, (4, 6)))
    np.testing.assert_allclose(raw_output(base, Xg[2])[:, 0], cp.pad_output_[0])
    # slot 0 lost: the padded slot counts as available with its known output
    pred, rec = cp.predict_group(Xg, [False, True, True, True])
    np.testing.assert_allclose(pred[0], base.predict(X[:4]), atol=1e-7)
    with pytest.raises(ValueError, match="1..k"):
        cp.pad_group([X[:1]] * 4)


def test_clone_params_pickle(linreg):
    X, y, base = linreg
    cp = CodedPredictor(base, k=2, parity_estimator=Ridge(alpha=0.1), random_state=0)
    params = cp.get_params()
    assert params["parity_estimator__alpha"] == 0.1
    cp.set_params(parity_estimator__alpha=0.5, k=3)
    assert cp.parity_estimator.alpha == 0.5 and cp.k == 3
    c = clone(cp)
    assert c.base_estimator is base  # the deployed model is shared, not refitted
    assert c.parity_estimator is not cp.parity_estimator
    cp.fit(X)
    c.fit(X)
    Xg = X[:30].reshape(3, 10, -1)
    m = [True, True, False, True]
    np.testing.assert_allclose(c.predict_group(Xg, m)[0], cp.predict_group(Xg, m)[0])
    cp2 = pickle.loads(pickle.dumps(cp))
    np.testing.assert_allclose(cp2.predict_group(Xg, m)[0], cp.predict_group(Xg, m)[0])
    assert ParityModel is CodedPredictor


def test_default_parity_family():
    X, y = make_classification(n_samples=80, n_features=4, random_state=0)
    mlp = MLPClassifier((7, 3), max_iter=5, random_state=0).fit(X, y)
    reg = default_parity_estimator(mlp)
    # standardised targets around the base's architecture, >= 500 epochs
    assert type(reg).__name__ == "TransformedTargetRegressor"
    reg = reg.regressor
    assert isinstance(reg, MLPRegressor) and reg.hidden_layer_sizes == (7, 3)
    assert reg.max_iter == 500
    hgb = HistGradientBoostingClassifier(max_iter=7).fit(X, y)
    reg = default_parity_estimator(hgb)
    assert isinstance(reg, HistGradientBoostingRegressor) and reg.max_iter == 14
    assert reg.loss == "squared_error"
    with pytest.raises(ValueError, match="parity_estimator"):
        default_parity_estimator(SVC().fit(X, y))


def test_multioutput_wrapping_for_single_output_regressors(logreg3):
    X, y, base = logreg3
    cp = CodedPredictor(base, k=2, parity_estimator=HistGradientBoostingRegressor(max_iter=5),
                        random_state=0).fit(X)
    assert isinstance(cp.parity_estimators_[0], MultiOutputRegressor)
    assert cp.parity_predict(cp.encode(X[:20].reshape(2, 10, -1)), 0).shape == (10, 3)


def test_bad_input(linreg):
    X, y, base = linreg
    with pytest.raises(NotFittedError):
        CodedPredictor(LinearRegression()).fit(X)
    for bad in (dict(k=1), dict(r=0), dict(k=2, r=3), dict(k=2.5), dict(n_groups=0),
                dict(on_unrecoverable="ignore"), dict(encoder="xor")):
        with pytest.raises(ValueError):
            CodedPredictor(base, **bad).fit(X)
    with pytest.raises(ValueError, match="features"):
        CodedPredictor(base).fit(X[:, :4])
    cp = CodedPredictor(base, k=2, parity_estimator=LinearRegression()).fit(X)
    with pytest.raises(ValueError, match="expected k=2"):
        cp.encode(X[:30].reshape(3, 10, -1))
    with pytest.raises(ValueError, match="expected k=2"):
        cp.predict_group([X[:5]], [True, True, True])
    with pytest.raises(ValueError, match="features per query"):
        cp.encode(X[:20, :5].reshape(2, 10, 5))
    with pytest.raises(ValueError, match="same number of rows"):
        cp.encode([X[:5], X[5:9]])
    with pytest.raises(ValueError, match="shape \\(k \\+ r,\\)"):
        cp.predict_group(X[:20].reshape(2, 10, -1), [True, False])
    with pytest.raises(ValueError, match="NaN"):
        bad = X[:20].reshape(2, 10, -1).copy()
        bad[0, 0, 0] = np.nan
        cp.encode(bad)
    out = np.zeros((2, 4, 1))
    par = np.zeros((1, 4, 1))
    out[1, 0, 0] = np.inf
    with pytest.raises(ValueError, match="base outputs contain NaN"):
        cp.decode(out, par, [False, True, True])
    with pytest.raises(ValueError, match="parity_outputs must have shape"):
        cp.decode(np.zeros((2, 4, 1)), np.zeros((1, 3, 1)), [False, True, True])
    with pytest.raises(ValueError, match="parity index"):
        cp.parity_predict(np.zeros((1, 4, 6)), 1)
    with pytest.raises(NotFittedError):
        CodedPredictor(base).encode(X[:20].reshape(2, 10, -1))


def test_nonfinite_parity_output_is_rejected(linreg):
    X, y, base = linreg

    class NaNRegressor(LinearRegression):
        def predict(self, X):
            return np.full(len(X), np.nan)

    cp = CodedPredictor(base, k=2, parity_estimator=NaNRegressor()).fit(X)
    with pytest.raises(ValueError, match="non-finite"):
        cp.predict_group(X[:20].reshape(2, 10, -1), [False, True, True])


def test_mlp_parity_is_one_multioutput_network(logreg3):
    # ParM's parity model has the base's architecture: one network with d
    # outputs, not d networks (MLPRegressor's tags do not declare this).
    X, y, base = logreg3
    cp = CodedPredictor(base, k=2, parity_estimator=MLPRegressor(hidden_layer_sizes=(8,),
                                                                 max_iter=5, random_state=0),
                        random_state=0).fit(X)
    par = cp.parity_estimators_[0]
    assert isinstance(par, MLPRegressor) and par.coefs_[-1].shape == (8, 3)


def test_transformed_target_parity_keeps_one_network(logreg3):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.preprocessing import StandardScaler

    from dartboost.coded._report import model_size

    X, y, base = logreg3
    par = TransformedTargetRegressor(MLPRegressor(hidden_layer_sizes=(8,), max_iter=5,
                                                  random_state=0), transformer=StandardScaler())
    cp = CodedPredictor(base, k=2, encoder="sum", parity_estimator=par, random_state=0).fit(X)
    fitted = cp.parity_estimators_[0]
    assert isinstance(fitted, TransformedTargetRegressor)
    assert model_size(fitted) == {"params": 6 * 8 + 8 + 8 * 3 + 3}
