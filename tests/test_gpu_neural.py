"""NeuralClassifier / NeuralRegressor: scikit-learn conventions and ABFT inference."""
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_blobs, make_classification, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from dartboost.gpu import NeuralClassifier, NeuralRegressor  # noqa: E402

# Small, quickly converging settings so the whole check suite runs in seconds.
FAST = dict(hidden_layer_sizes=(16,), max_iter=30, learning_rate_init=0.01,
            n_iter_no_change=5, device="cpu", random_state=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# No expected failures: every applicable check passes (pandas/array-API checks are
# skipped by scikit-learn itself when those libraries are absent).
@parametrize_with_checks([NeuralClassifier(**FAST), NeuralRegressor(**FAST)])
def test_sklearn_estimator_checks(estimator, check):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        check(estimator)
    finally:
        torch.set_num_threads(n)


def test_classifier_learns_and_probabilities_are_consistent():
    X, y = make_classification(400, 10, n_informative=6, n_classes=3, random_state=0)
    clf = NeuralClassifier((32,), max_iter=100, learning_rate_init=0.01, device="cpu",
                           random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.9
    p = clf.predict_proba(X)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[p.argmax(1)], clf.predict(X))
    assert clf.decision_function(X).shape == (400, 3)


def test_same_seed_same_model_and_clone():
    X, y = make_classification(200, 8, random_state=1)
    a = NeuralClassifier(**FAST).fit(X, y)
    b = clone(a).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert clone(a).get_params() == a.get_params()
    c = NeuralClassifier(**{**FAST, "random_state": 1}).fit(X, y)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def test_early_stopping_returns_best_epoch_weights():
    X, y = make_classification(300, 10, flip_y=0.3, random_state=0)
    clf = NeuralClassifier((64,), max_iter=80, early_stopping=True, n_iter_no_change=8,
                           learning_rate_init=0.02, device="cpu", random_state=0).fit(X, y)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ < 80  # stopped early
    assert clf.best_validation_score_ == max(scores)
    # Re-score the held-out split with the returned weights: it is the best score.
    from sklearn.model_selection import train_test_split
    enc = np.searchsorted(clf.classes_, y)
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    _, Xv, _, yv = train_test_split(X, enc, test_size=0.1, random_state=seed % (2 ** 31),
                                    stratify=enc)
    assert np.mean(clf.predict(Xv) == clf.classes_[yv]) == pytest.approx(max(scores))


def test_partial_fit_and_warm_start():
    X, y = make_blobs(300, 4, centers=3, random_state=0)
    clf = NeuralClassifier((16,), device="cpu", random_state=0, learning_rate_init=0.01)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    for _ in range(20):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    assert clf.n_iter_ == 20 and clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X, y + 5)
    reg = NeuralRegressor(**{**FAST, "warm_start": True})
    Xr, yr = make_regression(200, 5, noise=1.0, random_state=0)
    reg.fit(Xr, yr)
    n1 = reg.n_iter_
    reg.fit(Xr, yr)
    assert reg.n_iter_ > n1  # continued, not restarted


def test_regressor_multioutput_and_scale():
    X, y = make_regression(300, 6, n_targets=2, noise=0.5, random_state=0)
    y = y * 1000 + 5e4  # raw targets: standardised internally
    reg = NeuralRegressor((32,), max_iter=150, device="cpu", random_state=0,
                          learning_rate_init=0.01).fit(X, y)
    assert reg.predict(X).shape == (300, 2) and reg.score(X, y) > 0.95


def test_cnn_on_image_arrays():
    rng = np.random.RandomState(0)
    X = rng.randn(120, 1, 8, 8).astype(np.float32)
    y = (X[:, 0, :4].mean((1, 2)) > X[:, 0, 4:].mean((1, 2))).astype(int)
    X[y == 1, 0, :4] += 1.0
    clf = NeuralClassifier((16,), architecture="cnn", conv_channels=(4,), max_iter=40,
                           learning_rate_init=0.01, device="cpu", random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.9
    assert any(isinstance(m, torch.nn.Conv2d) for m in clf.module_.modules())
    flat = NeuralClassifier((16,), architecture="cnn", image_shape=(8, 8), conv_channels=(4,),
                            max_iter=5, device="cpu", random_state=0).fit(X.reshape(120, 64), y)
    assert flat.predict(X.reshape(120, 64)).shape == (120,)
    with pytest.raises(ValueError, match="image_shape"):
        NeuralClassifier(architecture="cnn", device="cpu").fit(X.reshape(120, 64), y)


def test_pipeline_and_grid_search():
    X, y = make_classification(150, 6, random_state=0)
    pipe = make_pipeline(StandardScaler(), NeuralClassifier(**FAST))
    gs = GridSearchCV(pipe, {"neuralclassifier__alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    assert gs.best_score_ > 0.7


@pytest.mark.parametrize("abft", ["global", "tile"])
def test_abft_inference_matches_and_detects(abft):
    import dartboost.gpu as dg
    X, y = make_classification(200, 8, random_state=0)
    clf = NeuralClassifier(**FAST).fit(X, y)
    ref = clf.predict_proba(X)
    clf.set_params(abft=abft)
    np.testing.assert_allclose(clf.predict_proba(X), ref, rtol=1e-9, atol=1e-12)
    pm = clf.protected_module_
    assert dg.is_protected(pm)
    with dg.inject_fault(pm, "0", "weight", 62, row=0, col=0):  # float64 inference on CPU
        with pytest.raises(dg.ABFTFaultError):
            clf.predict(X)
    clf.set_params(on_fault="flag")
    assert clf.protected_module_ is not pm  # settings changed: rebuilt


def test_pickle_roundtrip_keeps_predictions_and_drops_device():
    X, y = make_classification(100, 5, random_state=0)
    clf = NeuralClassifier(**{**FAST, "device": "auto", "abft": "global"}).fit(X, y)
    before = clf.predict_proba(X)
    clf2 = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clf2.predict_proba(X), before)
    assert all(p.device.type == "cpu" for p in clf2.module_.parameters())


def test_bad_parameters_and_devices():
    X, y = make_classification(50, 4, random_state=0)
    for bad in ({"hidden_layer_sizes": (0,)}, {"architecture": "rnn"}, {"activation": "elu"},
                {"max_iter": 0}, {"learning_rate_init": 0}, {"abft": "yes"},
                {"on_fault": "ignore"}, {"batch_size": 0}, {"validation_fraction": 1.5},
                {"device": "tpu"}):
        with pytest.raises(ValueError):
            NeuralClassifier(**{**FAST, **bad}).fit(X, y)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            NeuralClassifier(**{**FAST, "device": "cuda"}).fit(X, y)
