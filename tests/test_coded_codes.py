"""Tests for raw outputs, code matrices, encoders and the linear decoder."""

import itertools

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier

from dartboost.coded import (
    ConcatEncoder,
    FunctionEncoder,
    ImageConcatEncoder,
    SumEncoder,
    code_matrix,
    linear_decode,
    raw_output,
)
from dartboost.coded._codes import check_encoder

pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.usefixtures("one_blas_thread")]


def test_raw_output_regressor_is_2d():
    X, y = make_regression(n_samples=50, n_features=3, random_state=0)
    reg = LinearRegression().fit(X, y)
    out = raw_output(reg, X)
    assert out.shape == (50, 1) and out.dtype == np.float64
    np.testing.assert_allclose(out[:, 0], reg.predict(X))
    Y = np.c_[y, 2 * y]
    assert raw_output(LinearRegression().fit(X, Y), X).shape == (50, 2)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_raw_output_classifier_uses_margins(n_classes):
    X, y = make_classification(n_samples=120, n_features=5, n_informative=3,
                               n_classes=n_classes, random_state=0)
    clf = LogisticRegression().fit(X, y)
    out = raw_output(clf, X)
    dec = clf.decision_function(X)
    np.testing.assert_allclose(out, dec.reshape(len(X), -1))


def test_raw_output_mlp_logits_match_proba():
    X, y = make_classification(n_samples=150, n_features=6, n_informative=4, n_classes=3,
                               random_state=0)
    mlp = MLPClassifier((8,), max_iter=50, random_state=0).fit(X, y)
    logits = raw_output(mlp, X)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    np.testing.assert_allclose(soft, mlp.predict_proba(X), rtol=1e-6, atol=1e-9)
    # binary MLP: one logit, positive means classes_[1]
    yb = (y > 0).astype(int)
    mlpb = MLPClassifier((8,), max_iter=50, random_state=0).fit(X, yb)
    lb = raw_output(mlpb, X)
    assert lb.shape == (150, 1)
    np.testing.assert_array_equal((lb[:, 0] > 0).astype(int), mlpb.predict(X))


def test_raw_output_predict_proba_fallback_agrees_with_predict():
    X, y = make_classification(n_samples=150, n_features=6, n_informative=4, n_classes=3,
                               random_state=1)
    rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    out = raw_output(rf, X)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(rf.classes_[out.argmax(1)], rf.predict(X))


def test_raw_output_unfitted_and_nonfinite():
    with pytest.raises(NotFittedError):
        raw_output(LinearRegression(), np.zeros((3, 2)))

    class Bad(LinearRegression):
        def predict(self, X):
            out = super().predict(X)
            out[0] = np.nan
            return out

    X, y = make_regression(n_samples=20, n_features=2, random_state=0)
    with pytest.raises(ValueError, match="non-finite"):
        raw_output(Bad().fit(X, y), X)


@pytest.mark.parametrize("k,r", [(2, 1), (3, 2), (4, 2), (4, 3), (5, 3)])
def test_code_matrix_any_r_erasures_invertible(k, r):
    A = code_matrix(k, r)
    assert A.shape == (r, k)
    np.testing.assert_array_equal(A[0], 1.0)
    for m in range(1, r + 1):
        for cols in itertools.combinations(range(k), m):
            sub = A[:m][:, cols]
            assert np.linalg.matrix_rank(sub) == m


@pytest.mark.parametrize("k,r", [(2, 1), (3, 1), (4, 2), (5, 3)])
def test_linear_decode_exact_for_every_erasure_pattern(k, r):
    rng = np.random.default_rng(0)
    A = code_matrix(k, r)
    F = rng.normal(size=(k, 7, 3))
    P = np.einsum("rk,knd->rnd", A, F)
    for m in range(1, r + 1):
        for lost in itertools.combinations(range(k), m):
            available = np.ones(k + r, dtype=bool)
            available[list(lost)] = False
            base = F.copy()
            base[list(lost)] = np.nan
            out, rec, ok = linear_decode(A, base, P, available)
            assert ok
            np.testing.assert_allclose(out, F, atol=1e-9)
            assert rec.tolist() == [i in lost for i in range(k)]


def test_linear_decode_reports_unrecoverable():
    A = code_matrix(3, 1)
    F = np.ones((3, 2, 1))
    P = np.full((1, 2, 1), 3.0)
    available = np.array([False, False, True, True])
    out, rec, ok = linear_decode(A, F, P, available)
    assert not ok and not rec.any() and np.isnan(out[:2]).all()
    # one loss but the parity is also gone
    out, rec, ok = linear_decode(A, F, P, np.array([False, True, True, False]))
    assert not ok


def test_sum_and_concat_encoders():
    rng = np.random.default_rng(0)
    Xg = rng.normal(size=(3, 4, 5))
    A = code_matrix(3, 2)
    P = SumEncoder().encode(Xg, A)
    assert P.shape == (2, 4, 5)
    np.testing.assert_allclose(P[0], Xg.sum(0))
    np.testing.assert_allclose(P[1], np.tensordot(A[1], Xg, axes=1))
    C = ConcatEncoder().encode(Xg, A)
    assert C.shape == (2, 4, 15)
    np.testing.assert_array_equal(C[0, 1], np.r_[Xg[0, 1], Xg[1, 1], Xg[2, 1]])


def test_image_encoder_tiles_downsampled_images():
    k, n, H, W = 4, 2, 8, 8
    Xg = np.stack([np.full((n, H * W), float(i + 1)) for i in range(k)])
    P = ImageConcatEncoder((H, W)).encode(Xg, code_matrix(k, 1))
    img = P[0, 0].reshape(H, W)
    # 2x2 grid: each quadrant holds the (constant) value of its image
    assert img[:4, :4].mean() == 1 and img[:4, 4:].mean() == 2
    assert img[4:, :4].mean() == 3 and img[4:, 4:].mean() == 4
    # area averaging of a checkerboard to half size gives its mean
    cb = (np.indices((H, W)).sum(0) % 2).reshape(1, 1, -1).astype(float)
    cb = np.repeat(np.repeat(cb, 4, axis=0), 1, axis=1)
    P = ImageConcatEncoder((H, W)).encode(cb, code_matrix(4, 1))
    np.testing.assert_allclose(P, 0.5)
    # k = 3 leaves one empty (zero) tile; channels ride along
    Xc = np.ones((3, 1, 6 * 6 * 3))
    Pc = ImageConcatEncoder((6, 6, 3)).encode(Xc, code_matrix(3, 1)).reshape(6, 6, 3)
    assert Pc[3:, 3:].sum() == 0 and np.allclose(Pc[:3, :3], 1)


def test_image_encoder_bad_shape():
    with pytest.raises(ValueError, match="image_shape"):
        ImageConcatEncoder((8, 8)).encode(np.zeros((2, 1, 60)), code_matrix(2, 1))
    with pytest.raises(ValueError, match="square"):
        check_encoder("image", 60)


def _first_minus_second(Xg):
    return Xg[0] - Xg[1]


def test_function_encoder_and_check_encoder():
    Xg = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    enc = check_encoder(_first_minus_second)
    assert isinstance(enc, FunctionEncoder)
    P = enc.encode(Xg, code_matrix(2, 2))
    assert P.shape == (2, 3, 4)
    np.testing.assert_allclose(P[1], Xg[0] - Xg[1])
    with pytest.raises(ValueError, match="must return shape"):
        FunctionEncoder(lambda Xg: Xg[0, :1]).encode(Xg, code_matrix(2, 1))
    with pytest.raises(ValueError, match="not one of"):
        check_encoder("xor")
    with pytest.raises(TypeError):
        check_encoder(3)


def test_import_without_torch():
    # torch is an optional extra: importing dartboost.coded must not need it.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import dartboost.coded as c\n"
        "assert c.LearnedCode is not None and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
