"""Tests for LearnedCode (learned encoder/decoder around a frozen base)."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from threadpoolctl import threadpool_limits

from dartboost.coded import LearnedCode, UnrecoverableGroupError, raw_output
from dartboost.coded._learned import _patterns

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    with threadpool_limits(1):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits_mlp():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    base = MLPClassifier((16,), max_iter=40, random_state=0).fit(X[:800], y[:800])
    return X, y, base


def test_patterns_cover_erasures():
    assert _patterns(3, 1).shape == (3, 4)  # one loss of each base slot
    p = _patterns(2, 2)
    # 1 loss: 2 base slots; 2 losses containing a base slot: C(4,2) - 1 = 5
    assert p.shape == (7, 4)
    assert all((~m[:2]).any() for m in p)


def test_learned_code_reconstructs_better_than_default(digits_mlp):
    X, y, base = digits_mlp
    lc = LearnedCode(base, k=2, loss="kl", epochs=8, random_state=0).fit(X[:800])
    assert len(lc.loss_curve_) == 8 and lc.loss_curve_[-1] < lc.loss_curve_[0]
    Xg = X[1000:1200].reshape(2, 100, -1)
    P = lc.encode(Xg)
    assert P.shape == (1, 100, 64)
    # the base model itself answers the parity query
    np.testing.assert_allclose(lc.parity_predict(P, 0), raw_output(base, P[0]))
    pred, rec = lc.predict_group(Xg, [True, False, True])
    assert rec.tolist() == [False, True]
    np.testing.assert_array_equal(pred[0], base.predict(Xg[0]))
    acc = np.mean(pred[1] == base.predict(Xg[1]))
    assert acc > 0.4  # default prediction: about 0.1
    sizes = lc.codec_size()
    assert sizes["encoder_params"] == (128 * 128 + 128) + (128 * 64 + 64)


def test_learned_code_r2_and_unrecoverable(digits_mlp):
    X, y, base = digits_mlp
    lc = LearnedCode(base, k=2, r=2, epochs=2, random_state=0,
                     on_unrecoverable="raise").fit(X[:300])
    Xg = X[:20].reshape(2, 10, -1)
    pred, rec = lc.predict_group(Xg, [False, False, True, True])
    assert rec.all() and pred.shape == (2, 10)
    with pytest.raises(UnrecoverableGroupError):
        lc.predict_group(Xg, [False, False, True, False])


def test_learned_code_ce_loss_and_regression():
    X, y = load_digits(return_X_y=True)
    X = X[:300] / 16.0
    base = MLPClassifier((8,), max_iter=20, random_state=0).fit(X, y[:300] % 2)
    lc = LearnedCode(base, k=3, loss="ce", epochs=2, random_state=0).fit(X, y[:300] % 2)
    assert lc.n_outputs_ == 1
    with pytest.raises(ValueError, match="pass y"):
        clone(lc).fit(X)
    Xr, yr = make_regression(n_samples=200, n_features=5, random_state=0)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(Xr, yr)
    lc = LearnedCode(reg, k=2, epochs=3, random_state=0).fit(Xr)
    pred, rec = lc.predict_group(Xr[:20].reshape(2, 10, -1), [False, True, True])
    assert pred.shape == (2, 10) and np.all(np.isfinite(pred))
    with pytest.raises(ValueError, match="classifier"):
        LearnedCode(reg, loss="kl").fit(Xr)


def test_learned_code_is_deterministic_clonable_and_picklable(digits_mlp):
    X, y, base = digits_mlp
    lc = LearnedCode(base, k=2, epochs=2, random_state=3).fit(X[:200])
    lc2 = clone(lc).fit(X[:200])
    assert lc2.base_estimator is base
    Xg = X[300:320].reshape(2, 10, -1)
    m = [False, True, True]
    np.testing.assert_allclose(lc.predict_group(Xg, m)[0], lc2.predict_group(Xg, m)[0])
    lc3 = pickle.loads(pickle.dumps(lc))
    np.testing.assert_array_equal(lc3.predict_group(Xg, m)[0], lc.predict_group(Xg, m)[0])


def test_learned_code_bad_input(digits_mlp):
    X, y, base = digits_mlp
    Xr, yr = make_regression(n_samples=50, n_features=3, random_state=0)
    with pytest.raises(TypeError, match="differentiable"):
        LearnedCode(LinearRegression().fit(Xr, yr)).fit(Xr)
    with pytest.raises(NotFittedError):
        LearnedCode(MLPClassifier()).fit(X)
    for bad in (dict(k=6), dict(k=1), dict(loss="hinge"), dict(epochs=0),
                dict(learning_rate=-1.0), dict(decoder_hidden=0)):
        with pytest.raises(ValueError):
            LearnedCode(base, **bad).fit(X[:50])
    lc = LearnedCode(base, k=2, epochs=1, random_state=0).fit(X[:100])
    with pytest.raises(ValueError, match="expected k=2"):
        lc.predict_group(X[:30].reshape(3, 10, -1), [True] * 3)
    with pytest.raises(ValueError, match="features"):
        lc.encode(X[:20, :32].reshape(2, 10, 32))


def test_torch_cnn_base_parity_and_learned_code():
    # dartboost.gpu's torch estimators: a CNN base gets a CNN parity model by
    # default, and a learned code trains through the CNN itself.
    gpu = pytest.importorskip("dartboost.gpu")
    from dartboost.coded import CodedPredictor, ImageConcatEncoder
    from dartboost.coded._learned import _torch_neural
    from dartboost.coded._report import model_size

    X, y = load_digits(return_X_y=True)
    X = X[:400] / 16.0
    y = y[:400]
    cnn = gpu.NeuralClassifier((16,), architecture="cnn", image_shape=(8, 8), conv_channels=(4,),
                               max_iter=3, device="cpu", random_state=0).fit(X, y)
    net = _torch_neural(cnn, torch)
    Xt = torch.as_tensor(X[:20], dtype=torch.float32)
    np.testing.assert_allclose(net(Xt).numpy(), raw_output(cnn, X[:20]), atol=1e-4)
    cp = CodedPredictor(cnn, k=2, encoder=ImageConcatEncoder((8, 8)), random_state=0).fit(X)
    par = cp.parity_estimators_[0]
    assert isinstance(par, gpu.NeuralRegressor) and par.architecture == "cnn"
    assert model_size(par) == model_size(cnn)  # same architecture, same size
    lc = LearnedCode(cnn, k=2, epochs=2, random_state=0).fit(X)
    pred, rec = lc.predict_group(X[:20].reshape(2, 10, -1), [True, False, True])
    assert rec.tolist() == [False, True] and pred.shape == (2, 10)
    # binary MLP: the margin logit_1 - logit_0, as decision_function gives it
    mlp = gpu.NeuralClassifier((8,), max_iter=2, device="cpu", random_state=0).fit(X, y % 2)
    np.testing.assert_allclose(_torch_neural(mlp, torch)(Xt).numpy(), raw_output(mlp, X[:20]),
                               atol=1e-4)
