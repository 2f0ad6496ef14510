"""ONNX (run by onnxruntime) and Treelite (run by GTIL) against dartboost's own predictions."""
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from dartboost import DartClassifier, DartRegressor
from dartboost._tree_view import ensemble_view
from dartboost.export import to_onnx, to_treelite

DART = dict(skip_drop=0.0, drop_rate=0.5, random_state=0, early_stopping=False)


def _missing(X, seed=0):
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < 0.1] = np.nan
    return X


def _ort(model, X, dtype=np.float64):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": X.astype(dtype)})


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(500, 6, noise=1.0, random_state=0)
    X = _missing(X)
    y = y / np.std(y)
    return DartRegressor(n_estimators=25, **DART).fit(X, y), X


@pytest.fixture(scope="module")
def binary():
    X, y = make_classification(500, 6, random_state=1)
    X = _missing(X, 1)
    return DartClassifier(n_estimators=25, **DART).fit(X, np.where(y, "spam", "ham")), X


@pytest.fixture(scope="module")
def multiclass():
    X, y = make_classification(500, 6, n_informative=4, n_classes=4, random_state=2)
    X = _missing(X, 2)
    return DartClassifier(n_estimators=15, **DART).fit(X, y + 10), X


def test_onnx_regression_with_dart_weights_and_missing(regression):
    pytest.importorskip("onnx")
    est, X = regression
    assert np.ptp(est.tree_weights_) > 1e-3  # DART rescaled trees
    (out,) = _ort(to_onnx(est), X)
    np.testing.assert_allclose(out[:, 0], est.predict(X), rtol=1e-5, atol=1e-5)


def test_onnx_float32_input_takes_the_same_branches(regression):
    pytest.importorskip("onnx")
    est, X = regression
    X32 = X.astype(np.float32).astype(np.float64)  # values a float32 input can carry
    (out,) = _ort(to_onnx(est, input_dtype="float32"), X32, np.float32)
    np.testing.assert_allclose(out[:, 0], est.predict(X32), rtol=1e-5, atol=1e-5)
    # rows sitting exactly on a root threshold (rounded to float32): rounding
    # the threshold to nearest instead of down would flip some of these
    roots = [t for t in ensemble_view(est).trees if t.left[0] >= 0]
    on_edge = np.tile(X32[:1], (len(roots), 1))
    for r, t in enumerate(roots):
        on_edge[r, t.feature[0]] = np.float32(t.threshold[0])
    (out,) = _ort(to_onnx(est, input_dtype="float32"), on_edge, np.float32)
    np.testing.assert_allclose(out[:, 0], est.predict(on_edge), rtol=1e-5, atol=1e-5)


def test_onnx_binary_classifier(binary):
    pytest.importorskip("onnx")
    est, X = binary
    label, proba = _ort(to_onnx(est), X)
    np.testing.assert_allclose(proba, est.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(label, est.predict(X))


def test_onnx_multiclass(multiclass):
    pytest.importorskip("onnx")
    est, X = multiclass
    label, proba = _ort(to_onnx(est), X)
    np.testing.assert_allclose(proba, est.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(label, est.predict(X))


def test_onnx_poisson_and_multi_output():
    pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    X = _missing(rng.normal(size=(400, 4)))
    y = rng.poisson(np.exp(0.5 * np.nan_to_num(X[:, 0])))
    est = DartRegressor(loss="poisson", n_estimators=20, **DART).fit(X, y)
    (out,) = _ort(to_onnx(est), X)
    np.testing.assert_allclose(out[:, 0], est.predict(X), rtol=1e-5)
    X2, Y2 = make_regression(300, 4, n_targets=2, random_state=0)
    est2 = DartRegressor(n_estimators=10, **DART).fit(X2, Y2 / Y2.std())
    (out,) = _ort(to_onnx(est2), X2)
    np.testing.assert_allclose(out, est2.predict(X2), rtol=1e-5, atol=1e-5)


def test_onnx_bool_labels_and_bad_dtype():
    pytest.importorskip("onnx")
    X, y = make_classification(200, 4, random_state=0)
    est = DartClassifier(n_estimators=3, early_stopping=False).fit(X, y.astype(bool))
    label, _ = _ort(to_onnx(est), X)
    np.testing.assert_array_equal(label.astype(bool), est.predict(X))
    with pytest.raises(ValueError, match="input_dtype"):
        to_onnx(est, input_dtype="int8")


def test_treelite_matches(regression, binary, multiclass):
    treelite = pytest.importorskip("treelite")
    est, X = regression
    out = treelite.gtil.predict(to_treelite(est), X)
    np.testing.assert_allclose(out.reshape(-1), est.predict(X), rtol=1e-12, atol=1e-12)
    est, X = binary
    out = treelite.gtil.predict(to_treelite(est), X).reshape(len(X), -1)
    np.testing.assert_allclose(out[:, -1], est.predict_proba(X)[:, 1], atol=1e-12)
    margin = treelite.gtil.predict(to_treelite(est), X, pred_margin=True).reshape(-1)
    np.testing.assert_allclose(margin, est.decision_function(X), atol=1e-12)
    est, X = multiclass
    margin = treelite.gtil.predict(to_treelite(est), X, pred_margin=True).reshape(len(X), -1)
    np.testing.assert_allclose(margin, est.decision_function(X), atol=1e-12)
    # GTIL's softmax itself is less precise (measured 4e-8), the margins are exact
    out = treelite.gtil.predict(to_treelite(est), X).reshape(len(X), -1)
    np.testing.assert_allclose(out, est.predict_proba(X), atol=1e-6)
