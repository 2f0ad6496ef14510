"""Evaluation conventions of ``fit``: eval sets, metrics, ``evals_result_``,
early stopping only when asked, LightGBM-style callbacks, importance types."""
import json

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

from dartboost import DartClassifier, DartRegressor
from dartboost.callbacks import CallbackEnv, EarlyStopException
from dartboost.ranking import DartRanker, make_ranking_data, ndcg_score
from dartboost.store import dumps, loads

BASE = dict(learning_rate=0.3, drop_rate=0.3, skip_drop=0.0, min_samples_leaf=5,
            random_state=0, n_jobs=1)


@pytest.fixture(scope="module")
def reg():
    X, y = make_regression(900, 8, noise=30.0, random_state=0)
    return X[:600], y[:600], X[600:750], y[600:750], X[750:], y[750:]


def test_eval_set_without_early_stopping_only_records(reg):
    """Issue: eval_set turned early stopping on even with early_stopping=False
    (300 trees asked, 63-72 kept)."""
    X, y, Xv, yv, _, _ = reg
    est = DartRegressor(n_estimators=120, early_stopping=False, **BASE)
    est.fit(X, y, eval_set=(Xv, yv))
    assert est.n_iter_ == 120 and est.best_iteration_ == 120
    assert est.validation_score_ == [] and est.train_score_ == []
    curve = est.evals_result_["valid_0"]["l2"]
    assert len(curve) == 120
    staged = list(est.staged_predict(Xv))
    for t in (0, 37, 119):
        assert curve[t] == pytest.approx(mean_squared_error(yv, staged[t]), rel=1e-9)
    # the default "auto" does not turn it on for an eval_set either
    auto = DartRegressor(n_estimators=120, **BASE).fit(X, y, eval_set=(Xv, yv))
    assert auto.n_iter_ == 120


def test_list_of_eval_sets_with_names_and_weights(reg):
    """Issue: the [(X, y), ...] list form was a TypeError and two sets gave
    'could not convert string to float'."""
    X, y, Xv, yv, Xw, yw = reg
    w = np.linspace(0.5, 2.0, yw.shape[0])
    est = DartRegressor(n_estimators=15, early_stopping=False, eval_metric=["l2", "l1"],
                        **BASE)
    est.fit(X, y, eval_set=[(X, y), (Xv, yv), (Xw, yw)],
            eval_names=["train", "val", "weighted"], eval_sample_weight=[None, None, w])
    assert list(est.evals_result_) == ["train", "val", "weighted"]
    final = est.predict(Xw)
    assert est.evals_result_["weighted"]["l2"][-1] == pytest.approx(
        mean_squared_error(yw, final, sample_weight=w), rel=1e-9)
    assert est.evals_result_["weighted"]["l1"][-1] == pytest.approx(
        mean_absolute_error(yw, final, sample_weight=w), rel=1e-9)
    # the same weights as a tuple's third item; default names
    again = DartRegressor(n_estimators=15, early_stopping=False, eval_metric=["l2", "l1"],
                          **BASE).fit(X, y, eval_set=[(X, y), (Xv, yv), (Xw, yw, w)])
    assert list(again.evals_result_) == ["training", "valid_1", "valid_2"]
    assert again.evals_result_["valid_2"] == est.evals_result_["weighted"]
    with pytest.raises(ValueError, match="both"):
        est.fit(X, y, eval_set=[(Xw, yw, w)], eval_sample_weight=[w])
    with pytest.raises(ValueError, match="eval_names"):
        est.fit(X, y, eval_set=[(Xv, yv), (Xw, yw)], eval_names=["only one"])
    with pytest.raises(ValueError, match="unique"):
        est.fit(X, y, eval_set=[(Xv, yv), (Xw, yw)], eval_names=["a", "a"])
    with pytest.raises(TypeError, match=r"eval_set\[1\]"):
        est.fit(X, y, eval_set=[(Xv, yv), Xw])
    with pytest.raises(TypeError, match="eval_set"):
        est.fit(X, y, eval_set=Xv)


def test_early_stopping_only_when_asked_and_on_the_last_set(reg):
    X, y, Xv, yv, Xw, yw = reg
    for kwargs in (dict(n_iter_no_change=5), dict(early_stopping_rounds=5),
                   dict(early_stopping=True, n_iter_no_change=5)):
        est = DartRegressor(n_estimators=300, **kwargs, **BASE)
        est.fit(X, y, eval_set=[(Xw, yw), (Xv, yv)])
        assert est.n_iter_ < 300, kwargs
        scores = est.validation_score_
        assert est.best_iteration_ == est.n_iter_ == int(np.argmax(scores))
        # scored on the last set, with the kept model's weights
        best = -0.5 * mean_squared_error(yv, est.predict(Xv))
        assert scores[est.best_iteration_] == pytest.approx(best, rel=1e-9)
        # every set's curve covers every iteration run, past the best one
        assert len(est.evals_result_["valid_0"]["l2"]) == len(scores) - 1
        assert est.best_score_["valid_1"]["l2"] == pytest.approx(
            mean_squared_error(yv, est.predict(Xv)), rel=1e-9)
    off = DartRegressor(n_estimators=60, early_stopping=False, n_iter_no_change=5, **BASE)
    assert off.fit(X, y, eval_set=(Xv, yv)).n_iter_ == 60
    with pytest.raises(ValueError, match="two names of one setting"):
        DartRegressor(n_iter_no_change=5, early_stopping_rounds=7).fit(X, y)
    with pytest.raises(ValueError, match="early_stopping_rounds"):
        DartRegressor(early_stopping_rounds=0).fit(X, y)


def test_classification_metrics_match_scikit_learn():
    X, y = make_classification(800, 8, random_state=0)
    Xt, yt, Xv, yv = X[:600], y[:600], X[600:], y[600:]
    labels = np.array(["no", "yes"])
    clf = DartClassifier(n_estimators=12, early_stopping=False,
                         eval_metric=["auc", "binary_logloss", "binary_error", "multi_error"],
                         **BASE).fit(Xt, labels[yt], eval_set=[(Xv, labels[yv])])
    res = clf.evals_result_["valid_0"]
    p = clf.predict_proba(Xv)[:, 1]
    assert res["auc"][-1] == pytest.approx(roc_auc_score(yv, p), rel=1e-12)
    assert res["binary_logloss"][-1] == pytest.approx(log_loss(yv, p), rel=1e-9)
    assert res["binary_error"][-1] == pytest.approx(np.mean((p > 0.5) != yv))
    assert res["multi_error"][-1] == res["binary_error"][-1]
    Xm, ym = make_classification(600, 8, n_informative=5, n_classes=3, random_state=0)
    multi = DartClassifier(n_estimators=8, early_stopping=False, **BASE)
    multi.fit(Xm[:400], ym[:400], eval_set=[(Xm[400:], ym[400:])])
    assert list(multi.evals_result_["valid_0"]) == ["multi_logloss"]  # the loss's metric
    assert multi.evals_result_["valid_0"]["multi_logloss"][-1] == pytest.approx(
        log_loss(ym[400:], multi.predict_proba(Xm[400:])), rel=1e-9)
    with pytest.raises(ValueError, match="binary classification"):
        DartClassifier(n_estimators=2, eval_metric="auc").fit(Xm, ym, eval_set=[(Xm, ym)])
    with pytest.raises(ValueError, match="Unknown eval_metric 'accuracy'"):
        DartClassifier(n_estimators=2, eval_metric="accuracy").fit(X, y, eval_set=[(X, y)])
    with pytest.raises(TypeError, match=r"eval_metric\[1\]"):
        DartClassifier(n_estimators=2, eval_metric=["auc", 3]).fit(X, y)
    with pytest.raises(ValueError, match="eval_metric"):
        DartClassifier(n_estimators=2, eval_metric=3.5).fit(X, y)


def test_regression_metric_names_and_aliases(reg):
    X, y, Xv, yv, _, _ = reg
    est = DartRegressor(n_estimators=5, early_stopping=False, **BASE)
    est.fit(X, y, eval_set=[(Xv, yv)], eval_metric=["mse", "rmse", "mae", "mape", "l2"])
    res = est.evals_result_["valid_0"]
    assert list(res) == ["l2", "rmse", "l1", "mape"]  # canonical names, no duplicate
    pred = est.predict(Xv)
    assert res["rmse"][-1] == pytest.approx(np.sqrt(mean_squared_error(yv, pred)), rel=1e-12)
    assert res["mape"][-1] == pytest.approx(
        np.mean(np.abs(yv - pred) / np.maximum(1, np.abs(yv))), rel=1e-12)
    with pytest.raises(ValueError, match="quantile="):
        est.fit(X, y, eval_set=[(Xv, yv)], eval_metric="quantile")


def test_custom_metric_records_and_drives_early_stopping(reg):
    """A callable metric f(y_true, y_pred, sample_weight) is usable for early
    stopping (issues 13 and 14)."""
    X, y, Xv, yv, _, _ = reg
    calls = []

    def neg_mae(y_true, y_pred, sample_weight):
        calls.append(sample_weight)
        return "neg_mae", -float(np.mean(np.abs(y_true - y_pred))), True

    est = DartRegressor(n_estimators=300, n_iter_no_change=5, eval_metric=[neg_mae, "l2"],
                        **BASE).fit(X, y, eval_set=(Xv, yv))
    assert est.n_iter_ < 300
    curve = est.evals_result_["valid_0"]["neg_mae"]
    assert est.best_iteration_ == int(np.argmax(curve)) + 1
    assert est.validation_score_[1:] == curve  # the score early stopping compared
    assert est.validation_score_[est.best_iteration_] == pytest.approx(
        -np.mean(np.abs(yv - est.predict(Xv))), rel=1e-9)
    # lower-is-better metrics are sign-flipped for the comparison
    est2 = DartRegressor(n_estimators=300, n_iter_no_change=5, eval_metric="l1",
                         **BASE).fit(X, y, eval_set=(Xv, yv))
    assert est2.validation_score_[1:] == [-v for v in est2.evals_result_["valid_0"]["l1"]]

    def bad(y_true, y_pred, sample_weight):
        return 0.5

    with pytest.raises(TypeError, match="bad"):
        DartRegressor(n_estimators=3, eval_metric=bad).fit(X, y, eval_set=(Xv, yv))

    def nan_metric(y_true, y_pred, sample_weight):
        return "m", float("nan"), False

    with pytest.raises(ValueError, match="non-finite"):
        DartRegressor(n_estimators=3, eval_metric=nan_metric).fit(X, y, eval_set=(Xv, yv))


def test_ranking_eval_sets_and_ndcg_metric():
    X, y, qid = make_ranking_data(120, min_docs=5, max_docs=20, random_state=0)
    cut = np.searchsorted(qid, 80)
    cut2 = np.searchsorted(qid, 100)
    Xv, yv, qv = X[cut:cut2], y[cut:cut2], qid[cut:cut2]
    Xw, yw, qw = X[cut2:], y[cut2:], qid[cut2:]
    seen = {}

    def mean_score(y_true, y_pred, sample_weight, group):
        seen["group"] = group
        return "mean_score", float(np.mean(y_pred)), True

    rk = DartRanker(n_estimators=6, early_stopping=False, eval_metric=["ndcg@5", "ndcg",
                                                                       mean_score], **BASE)
    rk.fit(X[:cut], y[:cut], qid=qid[:cut], eval_set=[(Xv, yv), (Xw, yw)],
           eval_qid=[qv, qw])
    res = rk.evals_result_["valid_1"]
    assert list(res) == ["ndcg@5", "ndcg@10", "mean_score"]
    assert res["ndcg@5"][-1] == pytest.approx(ndcg_score(yw, rk.predict(Xw), qid=qw, k=5))
    assert seen["group"].sum() == yw.shape[0]
    # one set: its own query array is accepted as eval_qid (and the legacy tuple)
    one = DartRanker(n_estimators=3, early_stopping=False, **BASE)
    one.fit(X[:cut], y[:cut], qid=qid[:cut], eval_set=(Xv, yv), eval_qid=qv)
    assert len(one.evals_result_["valid_0"]["ndcg@10"]) == 3


def test_lightgbm_style_callables_get_an_env_and_can_stop(reg):
    """Issue: LightGBM-style callables in callbacks= were silently ignored."""
    X, y, Xv, yv, _, _ = reg
    envs, before = [], []

    def record(env):
        envs.append(env)
        if env.iteration == 7:
            raise EarlyStopException(best_iteration=4)

    def pre(env):
        before.append((env.iteration, env.evaluation_result_list))
    pre.before_iteration = True

    est = DartRegressor(n_estimators=50, early_stopping=False, callbacks=[record, pre],
                        **BASE).fit(X, y, eval_set=(Xv, yv))
    assert [e.iteration for e in envs] == list(range(8))
    assert before == [(t, None) for t in range(8)]
    env = envs[3]
    assert isinstance(env, CallbackEnv) and env.model is est
    assert (env.begin_iteration, env.end_iteration) == (0, 50)
    assert env.params["n_estimators"] == 50
    [(name, metric, value, higher)] = env.evaluation_result_list
    assert (name, metric, higher) == ("valid_0", "l2", False)
    assert value == est.evals_result_["valid_0"]["l2"][3]
    # the model of iteration 4 (0-based), with the weights it had then
    assert est.n_iter_ == est.best_iteration_ == 5
    short = DartRegressor(n_estimators=5, early_stopping=False, **BASE).fit(X, y)
    np.testing.assert_allclose(est.predict(Xv), short.predict(Xv), rtol=1e-12)

    def stop_now(env):
        if env.iteration == 2:
            raise EarlyStopException()

    assert DartRegressor(n_estimators=20, early_stopping=False, callbacks=[stop_now],
                         **BASE).fit(X, y).n_iter_ == 3

    def bad_best(env):
        raise EarlyStopException(best_iteration=99)

    with pytest.raises(ValueError, match="best_iteration=99"):
        DartRegressor(n_estimators=5, callbacks=[bad_best]).fit(X, y)


def test_unusable_callbacks_are_a_type_error(reg):
    """Issue: arbitrary objects in callbacks= were silently ignored."""
    X, y = reg[:2]

    class NotCallableHook:
        on_iteration_end = 3

    with pytest.raises(TypeError, match=r"callbacks\[1\] is a int"):
        DartRegressor(n_estimators=2, callbacks=[lambda env: None, 42]).fit(X, y)
    with pytest.raises(TypeError, match="on_iteration_end is not callable"):
        DartRegressor(n_estimators=2, callbacks=[NotCallableHook()]).fit(X, y)
    with pytest.raises(TypeError, match="neither a callable"):
        DartRegressor(n_estimators=2, callbacks=[object()]).fit(X, y)


def test_importance_type(reg):
    X, y = reg[:2]
    est = DartRegressor(n_estimators=15, early_stopping=False, importance_type="split",
                        **BASE).fit(X, y)
    counts = np.zeros(X.shape[1])
    for tree in est.booster_.trees:
        np.add.at(counts, tree["feature_idx"][tree["is_leaf"] == 0], 1)
    np.testing.assert_allclose(est.feature_importances_, counts / counts.sum())
    np.testing.assert_array_equal(est.booster_.feature_importances("split", normalize=False),
                                  counts)
    gain = est.set_params(importance_type="gain").feature_importances_
    assert not np.allclose(gain, counts / counts.sum())
    with pytest.raises(ValueError, match="importance_type"):
        DartRegressor(importance_type="cover").fit(X, y)


def test_new_parameters_survive_the_model_format(reg):
    X, y, Xv, yv, _, _ = reg

    def neg_l1(y_true, y_pred, sample_weight):
        return "neg_l1", -float(np.mean(np.abs(y_true - y_pred))), True

    est = DartRegressor(n_estimators=40, early_stopping_rounds=3, importance_type="split",
                        eval_metric=neg_l1, callbacks=[lambda env: None], **BASE)
    est.fit(X, y, eval_set=[(Xv, yv)])
    again = loads(dumps(est)[0])
    assert again.early_stopping_rounds == 3 and again.importance_type == "split"
    assert again.eval_metric is None  # code is not stored
    np.testing.assert_array_equal(again.predict(Xv), est.predict(Xv))
    json.dumps(est.evals_result_)  # plain data


def test_models_written_before_early_stopping_rounds_keep_their_meaning(reg):
    """Old files store the old default n_iter_no_change=10, which did not ask
    for early stopping; loaded, it must not turn it on."""
    from dartboost.model_io import estimator_from_state
    X, y = reg[:2]
    header, arrays = DartRegressor(n_estimators=3, **BASE).fit(X, y)._get_state()
    params = {k: v for k, v in header["params"].items()
              if k not in ("early_stopping_rounds", "importance_type")}
    old = estimator_from_state({**header, "params": {**params, "n_iter_no_change": 10}}, arrays)
    assert old.n_iter_no_change is None and old._patience(100) is None
    assert old.evals_result_ == {}
    new = estimator_from_state({**header, "params": {**header["params"],
                                                     "n_iter_no_change": 10}}, arrays)
    assert new.n_iter_no_change == 10 and new._patience(100) == 10
