"""Objectives and weights (issue 13, item 4): ``class_weight``, the gamma and
tweedie losses, and callable objectives."""
import warnings

import numpy as np
import pytest
from sklearn.metrics import mean_gamma_deviance, mean_tweedie_deviance
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.class_weight import compute_sample_weight

from dartboost import DartClassifier, DartRegressor, FormatError
from dartboost._tree_view import ensemble_view
from dartboost.store import dumps, loads

def _round_trip(est):
    """``est`` written to model-file bytes and read back."""
    return loads(dumps(est)[0])


FAST = dict(n_estimators=15, max_leaf_nodes=8, random_state=0, early_stopping=False, n_jobs=1)


def _nodes(est):
    return est._get_state()[1]["nodes"]


def _classification(n=600, n_classes=2, seed=0, balanced=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    if balanced:
        y = np.tile(np.arange(n_classes), n // n_classes)
        X[:, 0] += y
    else:
        y = np.digitize(X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=n),
                        np.linspace(-1, 2, n_classes - 1) if n_classes > 2 else [0.6])
    return X, y


# -------------------------------------------------------------- class_weight
@pytest.mark.parametrize("class_weight", ["balanced", {0: 3.0, 2: 0.5}, {1: 2.0}])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_class_weight_is_compute_sample_weight_times_sample_weight(class_weight, n_classes):
    X, y = _classification(n_classes=n_classes)
    if n_classes == 2 and isinstance(class_weight, dict) and 2 in class_weight:
        class_weight = {0: 3.0, 1: 0.5}
    sw = np.random.default_rng(1).uniform(0.5, 2.0, y.size)
    expected = compute_sample_weight(class_weight, y) * sw
    a = DartClassifier(class_weight=class_weight, **FAST).fit(X, y, sample_weight=sw)
    b = DartClassifier(**FAST).fit(X, y, sample_weight=expected)
    np.testing.assert_array_equal(_nodes(a), _nodes(b))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_balanced_class_weight_raises_recall_of_the_rare_class():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 4))
    y = (X[:, 0] + rng.normal(scale=1.0, size=3000) > 2.0).astype(int)  # ~8 % positives
    plain = DartClassifier(**FAST).fit(X, y)
    balanced = DartClassifier(class_weight="balanced", **FAST).fit(X, y)
    recall = lambda est: np.mean(est.predict(X)[y == 1] == 1)  # noqa: E731
    assert recall(balanced) > recall(plain) + 0.2


def test_class_weight_on_labels_of_any_type_and_its_errors():
    X, y = _classification()
    labels = np.array(["no", "yes"])[y]
    a = DartClassifier(class_weight={"yes": 4.0}, **FAST).fit(X, labels)
    b = DartClassifier(**FAST).fit(X, labels, sample_weight=np.where(y == 1, 4.0, 1.0))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    with pytest.raises(ValueError, match="not in class_weight|maybe"):
        DartClassifier(class_weight={"maybe": 2.0}, **FAST).fit(X, labels)
    with pytest.raises(ValueError, match="class 'no'"):
        DartClassifier(class_weight={"yes": 0.0}, **FAST).fit(X, labels)
    with pytest.raises(InvalidParameterError, match="class_weight"):
        DartClassifier(class_weight="uniform").fit(X, labels)


def test_class_weight_survives_the_model_format():
    X, y = _classification(n_classes=3)
    for cw in ({0: 2.0, 2: 0.25}, "balanced"):
        est = DartClassifier(class_weight=cw, **FAST).fit(X, y)
        back = _round_trip(est)
        assert back.get_params()["class_weight"] == cw
        np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    header, arrays = est.set_params(class_weight={1: 2.0}).fit(X, y)._get_state()
    for bad in ([[7, 1.0]], [[1, -1.0]], [[1, float("nan")]], {"1": 2.0}, [[1]]):
        with pytest.raises(FormatError, match="class_weight"):
            DartClassifier()._set_state({**header, "class_weight": bad}, arrays)


# --------------------------------------------------------- gamma and tweedie
def _log_linear(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    log_mu = 0.6 * X[:, 0] - 0.4 * X[:, 1] + 0.3 * np.sin(2 * X[:, 2])
    return rng, X, np.exp(log_mu)


def _gamma_data(n, seed=0, shape=2.0):
    rng, X, mu = _log_linear(n, seed)
    return X, rng.gamma(shape, mu / shape), mu


def _tweedie_data(n, seed=0, rho=1.5, phi=1.0):
    """Compound Poisson-gamma with mean ``mu`` and variance ``phi mu^rho``."""
    rng, X, mu = _log_linear(n, seed)
    lam = mu ** (2 - rho) / (phi * (2 - rho))
    alpha = (2 - rho) / (rho - 1)
    scale = phi * (rho - 1) * mu ** (rho - 1)
    counts = rng.poisson(lam)
    y = np.array([rng.gamma(alpha, s, c).sum() for c, s in zip(counts, scale)])
    return X, y, mu


@pytest.mark.parametrize("loss", ["gamma", "tweedie"])
def test_log_link_losses_match_lightgbm(loss):
    """Equal MART settings: held-out deviance within noise of LightGBM's
    objective of the same name (both near the deviance of the true mean)."""
    lgb = pytest.importorskip("lightgbm")
    make = _gamma_data if loss == "gamma" else _tweedie_data
    X, y, _ = make(6000, seed=1)
    X_te, y_te, mu_te = make(4000, seed=2)
    settings = dict(n_estimators=100, learning_rate=0.1)
    ours = DartRegressor(loss=loss, boosting="mart", max_leaf_nodes=15, min_samples_leaf=20,
                         tweedie_variance_power=1.5, early_stopping=False, random_state=0,
                         **settings).fit(X, y)
    peer = lgb.LGBMRegressor(objective=loss, num_leaves=15, min_child_samples=20,
                             tweedie_variance_power=1.5, verbose=-1, random_state=0,
                             **settings).fit(X, y)
    dev = (mean_gamma_deviance if loss == "gamma"
           else lambda a, b: mean_tweedie_deviance(a, b, power=1.5))
    d_ours, d_peer, d_true = dev(y_te, ours.predict(X_te)), dev(y_te, peer.predict(X_te)), \
        dev(y_te, mu_te)
    assert np.all(ours.predict(X_te) > 0)
    assert d_ours <= d_peer * 1.03, (d_ours, d_peer, d_true)
    assert d_ours <= d_true * 1.10, (d_ours, d_true)


def test_gamma_and_tweedie_metrics_match_scikit_learn():
    X, y, _ = _tweedie_data(1500)
    y = y + 0.1  # > 0 for the gamma deviance
    est = DartRegressor(loss="tweedie", tweedie_variance_power=1.3, **FAST)
    est.set_params(eval_metric=["tweedie", "tweedie_deviance", "gamma", "gamma_deviance"])
    est.fit(X, y, eval_set=[(X, y)])
    pred = est.predict(X)
    rec = {k: v[-1] for k, v in est.evals_result_["training"].items()}
    assert rec["tweedie_deviance"] == pytest.approx(mean_tweedie_deviance(y, pred, power=1.3))
    assert rec["gamma_deviance"] == pytest.approx(mean_gamma_deviance(y, pred))
    assert rec["gamma"] == pytest.approx(np.mean(y / pred + np.log(pred)))
    rho = 1.3
    assert rec["tweedie"] == pytest.approx(
        np.mean(-y * pred ** (1 - rho) / (1 - rho) + pred ** (2 - rho) / (2 - rho)))
    # the default metric of each loss is its own negative log-likelihood
    for loss in ("gamma", "tweedie"):
        fitted = DartRegressor(loss=loss, **FAST).fit(X, y, eval_set=[(X, y)])
        assert list(fitted.evals_result_["training"]) == [loss]


def test_target_domains_are_checked():
    X, y, _ = _gamma_data(200)
    with pytest.raises(ValueError, match="loss='gamma' requires positive targets"):
        DartRegressor(loss="gamma", **FAST).fit(X, np.where(y > 1, y, 0.0))
    with pytest.raises(ValueError, match="loss='tweedie' requires non-negative"):
        DartRegressor(loss="tweedie", **FAST).fit(X, y - 1.0)
    with pytest.raises(ValueError, match="positive"):
        DartRegressor(loss="tweedie", **FAST).fit(X, np.zeros_like(y))
    with pytest.raises(ValueError, match=r"eval_set\[0\]'s y"):
        DartRegressor(loss="gamma", **FAST).fit(X, y, eval_set=[(X, -y)])
    DartRegressor(loss="tweedie", **FAST).fit(X, np.where(y > 1, y, 0.0))  # zeros are fine
    for bad in (1.0, 2.0, 0.5):
        with pytest.raises(InvalidParameterError, match="tweedie_variance_power"):
            DartRegressor(loss="tweedie", tweedie_variance_power=bad).fit(X, y)


@pytest.mark.parametrize("loss", ["gamma", "tweedie"])
def test_log_link_models_round_trip_the_model_format(loss):
    X, y, _ = _tweedie_data(500)
    est = DartRegressor(loss=loss, tweedie_variance_power=1.7, **FAST).fit(X, y + 0.05)
    back = _round_trip(est)
    assert back.get_params()["loss"] == loss
    assert back.get_params()["tweedie_variance_power"] == 1.7
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    np.testing.assert_allclose(est.predict(X), np.exp(est.predict(X, raw_score=True)))
    assert ensemble_view(back).link == "log"  # exports apply exp as predict does


# -------------------------------------------------------- callable objectives
def _squared_error(y_true, y_pred):
    return y_pred - y_true, np.ones_like(y_pred)


def _logistic(y_true, y_pred):
    p = 1.0 / (1.0 + np.exp(-y_pred))
    return p - y_true, p * (1.0 - p)


def _softmax(y_true, y_pred):
    e = np.exp(y_pred - y_pred.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    onehot = np.eye(y_pred.shape[1])[y_true.astype(int)]
    return p - onehot, p * (1.0 - p)


@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_custom_squared_error_grows_the_built_in_trees(boosting):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(800, 5))
    y = X[:, 0] - 2 * X[:, 1] ** 2 + rng.normal(size=800)
    sw = rng.uniform(0.5, 2.0, 800)
    built_in = DartRegressor(boosting=boosting, drop_rate=0.3, **FAST).fit(X, y, sample_weight=sw)
    custom = DartRegressor(boosting=boosting, drop_rate=0.3, objective=_squared_error,
                           base_score=float(np.average(y, weights=sw)), **FAST)
    custom.fit(X, y, sample_weight=sw)  # the two-argument form: weights applied here
    np.testing.assert_array_equal(_nodes(custom), _nodes(built_in))
    np.testing.assert_array_equal(custom.predict(X), built_in.predict(X))


def test_custom_logistic_and_softmax_grow_the_built_in_trees():
    X, y = _classification(n=900)
    built_in = DartClassifier(**FAST).fit(X, y)
    custom = DartClassifier(objective=_logistic, base_score=float(built_in.booster_.baseline[0]),
                            **FAST).fit(X, y)
    np.testing.assert_array_equal(_nodes(custom), _nodes(built_in))
    np.testing.assert_array_equal(custom.decision_function(X), built_in.decision_function(X))
    np.testing.assert_array_equal(custom.predict(X), built_in.predict(X))

    X, y = _classification(n=900, n_classes=3, balanced=True)
    built_in = DartClassifier(**FAST).fit(X, y)
    assert np.all(built_in.booster_.baseline == 0)  # balanced classes: the prior is uniform
    custom = DartClassifier(objective=_softmax, **FAST).fit(X, y)
    np.testing.assert_array_equal(_nodes(custom), _nodes(built_in))
    np.testing.assert_array_equal(custom.predict(X), built_in.predict(X))
    with pytest.warns(UserWarning, match="raw scores"):
        raw = custom.predict_proba(X)
    np.testing.assert_array_equal(raw, custom.decision_function(X))


def test_three_argument_objective_receives_the_weights():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 3))
    y = X[:, 0] + rng.normal(size=300)
    sw = rng.uniform(0.0, 2.0, 300)
    seen = []

    def weighted(y_true, y_pred, sample_weight):
        seen.append(sample_weight)
        return sample_weight * (y_pred - y_true), sample_weight

    a = DartRegressor(objective=weighted, **FAST).fit(X, y, sample_weight=sw)
    b = DartRegressor(objective=_squared_error, **FAST).fit(X, y, sample_weight=sw)
    np.testing.assert_array_equal(seen[0], sw)
    np.testing.assert_array_equal(_nodes(a), _nodes(b))


def test_custom_objective_with_dart_early_stopping_and_a_custom_metric():
    X, y = _classification(n=2000)
    X_val, y_val = _classification(n=800, seed=9)
    calls = []

    def margin_error(y_true, y_pred, sample_weight):
        calls.append(y_pred.shape)
        return "margin_error", float(np.mean((y_pred > 0) != (y_true == 1))), False

    est = DartClassifier(objective=_logistic, eval_metric=[margin_error, "auc"],
                         n_estimators=300, n_iter_no_change=5, learning_rate=0.3,
                         random_state=0, n_jobs=1)
    est.fit(X, y, eval_set=[(X_val, y_val)])
    assert est.n_iter_ < 300  # stopped
    assert (800,) in calls  # raw scores of the eval set (and (2000,): training)
    curve = est.evals_result_["valid_0"]["margin_error"]
    assert est.best_score_["valid_0"]["margin_error"] == min(curve)
    with pytest.raises(ValueError, match="needs an eval_metric"):
        DartClassifier(objective=_logistic, n_iter_no_change=5).fit(X, y)
    with pytest.raises(ValueError, match="needs probabilities"):
        DartClassifier(objective=_logistic, eval_metric="binary_logloss").fit(X, y)
    # without metrics nothing is recorded: a custom objective has no default one
    plain = DartClassifier(objective=_logistic, **FAST).fit(X, y, eval_set=[(X_val, y_val)])
    assert plain.evals_result_ == {"valid_0": {}}


def test_custom_objective_model_saves_and_predicts_raw_scores_identically():
    X, y = _classification(n=600, n_classes=3)
    est = DartClassifier(objective=_softmax, **FAST).fit(X, y)
    back = _round_trip(est)
    assert back.get_params()["objective"] is None
    np.testing.assert_array_equal(back.decision_function(X), est.decision_function(X))
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(back.predict_proba(X), est.decision_function(X))
    with pytest.raises(ValueError, match="grown\\s+with a callable objective|callable"):
        back.set_params(warm_start=True, n_estimators=20).fit(X, y)
    back.set_params(objective=_softmax).fit(X, y)  # continues with the objective given again
    assert back.n_iter_ == 20

    rng = np.random.default_rng(5)
    Xr, yr = rng.normal(size=(400, 3)), rng.normal(size=400)
    reg = DartRegressor(objective=_squared_error, **FAST).fit(Xr, yr)
    np.testing.assert_array_equal(_round_trip(reg).predict(Xr), reg.predict(Xr))
    header, arrays = reg._get_state()
    assert header["custom_objective"] is True
    assert ensemble_view(reg).link == "identity"
    with pytest.raises(FormatError, match="custom_objective"):
        DartRegressor()._set_state({**header, "custom_objective": "yes"}, arrays)


@pytest.mark.parametrize("result, error, match", [
    (lambda g, h: g, TypeError, "tuple \\(grad, hess\\)"),
    (lambda g, h: (g, h, h), TypeError, "tuple \\(grad, hess\\)"),
    (lambda g, h: (g[:-1], h[:-1]), ValueError, "grad of shape \\(299,\\); expected \\(300,\\)"),
    (lambda g, h: (g, h[:, None]), ValueError, "hess of shape \\(300, 1\\)"),
    (lambda g, h: (np.where(g > 1, np.nan, g), h), ValueError, "grad with NaN"),
    (lambda g, h: (g, -h), ValueError, "negative hessians"),
    (lambda g, h: (g, 0 * h), ValueError, "sum to 0"),
    (lambda g, h: (g * 1e39, h), ValueError, "too\\s+large for float32"),
    (lambda g, h: (["a"] * len(g), h), TypeError, "not numeric"),
])
def test_a_malformed_objective_names_its_mistake(result, error, match):
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(300, 3)), rng.normal(size=300)

    def broken(y_true, y_pred):
        return result(*_squared_error(y_true, y_pred))

    with pytest.raises(error, match=f"objective broken.*{match}|{match}"):
        DartRegressor(objective=broken, **FAST).fit(X, y)


def test_objective_and_base_score_are_validated_parameters():
    X, y = np.random.default_rng(7).normal(size=(50, 2)), np.arange(50.0)
    with pytest.raises(InvalidParameterError, match="objective"):
        DartRegressor(objective="squared_error").fit(X, y)
    with pytest.raises(InvalidParameterError, match="base_score"):
        DartRegressor(base_score="mean").fit(X, y)
    with pytest.raises(ValueError, match="base_score must be finite"):
        DartRegressor(base_score=float("nan")).fit(X, y)
    est = DartRegressor(base_score=3.0, **FAST).fit(X, y)
    assert est.booster_.baseline.tolist() == [3.0]
    assert _round_trip(est).get_params()["base_score"] == 3.0


def test_multi_output_custom_objective_gets_two_dimensional_scores():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(400, 4))
    Y = np.column_stack([X[:, 0], -X[:, 1]]) + rng.normal(scale=0.1, size=(400, 2))
    shapes = []

    def l2(y_true, y_pred):
        shapes.append((y_true.shape, y_pred.shape))
        return _squared_error(y_true, y_pred)

    custom = DartRegressor(objective=l2, **FAST).fit(X, Y)
    assert shapes[0] == ((400, 2), (400, 2))
    built_in = DartRegressor(base_score=0.0, **FAST).fit(X, Y)
    np.testing.assert_array_equal(custom.predict(X), built_in.predict(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert custom.predict(X).shape == (400, 2)


def test_ranker_custom_objective_gets_grades_weights_and_query_sizes():
    from dartboost.ranking import DartRanker, make_ranking_data, ndcg_score
    X, y, qid = make_ranking_data(120, random_state=0)
    _, group = np.unique(qid, return_counts=True)
    seen = {}

    def pointwise(y_true, y_pred, sample_weight, group):
        seen.update(y_true=y_true, sample_weight=sample_weight, group=group)
        return y_pred - y_true, np.ones_like(y_pred)

    ranker = DartRanker(objective=pointwise, **FAST).fit(X, y, group=group)
    np.testing.assert_array_equal(seen["y_true"], y)
    np.testing.assert_array_equal(seen["group"], group)
    assert seen["sample_weight"] is None
    # the same pointwise formula through the regressor: the same trees
    reg = DartRegressor(objective=_squared_error, **FAST).fit(X, y)
    np.testing.assert_array_equal(_nodes(ranker), _nodes(reg))
    assert ndcg_score(y, ranker.predict(X), group=group) > \
        ndcg_score(y, np.zeros(y.size), group=group) + 0.1
    back = _round_trip(ranker)
    np.testing.assert_array_equal(back.predict(X), ranker.predict(X))
    stopped = DartRanker(objective=pointwise, eval_metric="ndcg", n_estimators=200,
                         n_iter_no_change=3, random_state=0).fit(X, y, group=group)
    assert stopped.n_iter_ < 200 and "ndcg@10" in stopped.best_score_["validation"]
    with pytest.raises(TypeError, match="takes 5 positional arguments"):
        DartRanker(objective=lambda a, b, c, d, e: None, **FAST).fit(X, y, group=group)
