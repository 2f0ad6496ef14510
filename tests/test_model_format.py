"""The model format: the findings of the loader review, reproduced through every
entry point (load, CLI predict, store get, resume_fit, warm start), and the
validation rules of docs/contracts.md one by one."""
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

import dartboost
from dartboost import DartClassifier, DartRanker, DartRegressor, FormatError
from dartboost.model_io import estimator_from_state
from dartboost.store import ModelStore, loads, resume_fit
from dartboost._model_file import dumps_state
from store_fixtures import local_locations

FAST = dict(n_estimators=8, max_leaf_nodes=6, random_state=0, early_stopping=False,
            skip_drop=0.0, drop_rate=0.4, n_jobs=1)


@pytest.fixture(scope="module")
def multiclass():
    X, y = make_classification(300, 6, n_informative=4, n_classes=3, random_state=0)
    return DartClassifier(**FAST).fit(X, y), X


@pytest.fixture(scope="module")
def regressor():
    X, y = make_regression(300, 4, random_state=0)
    return DartRegressor(**FAST).fit(X, y), X


def _blob(est, header, arrays):
    cls = type(est)
    return dumps_state("dartboost", header, arrays,
                       class_name=f"{cls.__module__}.{cls.__qualname__}")[0]


def _mutated(est, **changes):
    """``(header, arrays)`` of ``est`` with header fields / arrays replaced."""
    header, arrays = est._get_state()
    header, arrays = dict(header), dict(arrays)
    for name, value in changes.items():
        (arrays if name in arrays else header)[name] = value
    return header, arrays


# ----------------------------------------------------- the review's findings
def test_length_one_baseline_on_three_class_model_is_rejected(multiclass):
    est, _ = multiclass
    header, arrays = _mutated(est, baseline=np.zeros(1))
    with pytest.raises(FormatError, match="baseline"):
        loads(_blob(est, header, arrays))


def test_two_dimensional_baseline_is_rejected(multiclass):
    est, _ = multiclass
    header, arrays = _mutated(est, baseline=np.zeros((3, 3)))
    with pytest.raises(FormatError, match="baseline"):
        loads(_blob(est, header, arrays))


def test_class_list_shorter_than_trees_per_iteration_is_rejected(multiclass):
    est, _ = multiclass
    header, arrays = _mutated(est, classes=[0, 1])
    with pytest.raises(FormatError, match="classes"):
        loads(_blob(est, header, arrays))


def test_huge_classes_dtype_is_rejected_before_allocating():
    X, y = make_classification(200, 4, random_state=0)
    est = DartClassifier(**FAST).fit(X, np.where(y == 1, "yes", "no"))
    header, arrays = _mutated(est, classes_dtype="<U200000000")
    with pytest.raises(FormatError, match="classes_dtype"):
        loads(_blob(est, header, arrays))


def test_header_class_naming_main_module_neither_runs_nor_imports(regressor):
    est, _ = regressor
    header, arrays = est._get_state()
    blob = dumps_state("dartboost", header, arrays, class_name="dartboost.__main__.X")[0]
    code = ("import sys; sys.argv = ['dartboost', 'demo']\n"
            "from dartboost.store import loads\n"
            f"blob = open({repr(str(_tmp_blob_path(blob)))}, 'rb').read()\n"
            "try:\n    loads(blob)\nexcept ValueError as e:\n    print('REJECTED', e)\n"
            "print('main imported:', 'dartboost.__main__' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "REJECTED class" in out.stdout and "main imported: False" in out.stdout


def _tmp_blob_path(blob, _counter=[0]):
    import tempfile
    _counter[0] += 1
    f = tempfile.NamedTemporaryFile(delete=False, suffix=".dbm")
    f.write(blob)
    f.close()
    return f.name


def test_python_dash_m_main_is_guarded():
    out = subprocess.run([sys.executable, "-c",
                          "import sys; sys.argv=['x', 'demo']; import dartboost.__main__; "
                          "print('still here')"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "still here" in out.stdout


def test_bin_offsets_beyond_max_bins_are_rejected(regressor):
    est, _ = regressor
    header, arrays = _mutated(est, max_bins=4)
    with pytest.raises(FormatError, match="bin_offsets"):
        estimator_from_state(header, arrays)


def test_bin_offsets_of_the_wrong_length_are_rejected(regressor):
    est, _ = regressor
    header, arrays = _mutated(est)
    arrays["bin_offsets"] = arrays["bin_offsets"][:-1]
    with pytest.raises(FormatError, match="bin_offsets"):
        estimator_from_state(header, arrays)


# ------------------------------------------------------------- entry points
def _bad_state(est):
    return _mutated(est, baseline=np.zeros(2))


def test_cli_predict_rejects_a_malformed_file(tmp_path, multiclass):
    est, X = multiclass
    header, arrays = _bad_state(est)
    path = tmp_path / "bad.dbm"
    cls = type(est)
    path.write_bytes(dumps_state("dartboost", header, arrays,
                                 class_name=f"{cls.__module__}.{cls.__qualname__}",
                                 metadata={"feature_columns": list("abcdef")})[0])
    data = tmp_path / "x.csv"
    data.write_text("a,b,c,d,e,f\n" + "\n".join(",".join(map(str, r)) for r in X[:5]) + "\n")
    out = subprocess.run([sys.executable, "-m", "dartboost", "predict", str(data), "--model",
                          str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.returncode > 0  # an error exit, not a signal
    assert "not a valid dartboost model" in out.stderr and "baseline" in out.stderr


def _store_with(tmp_path, est, header, arrays):
    store = ModelStore(local_locations(tmp_path, 3), k=2, r=1)
    bad = type(est)(**est.get_params())
    bad._get_state = lambda: (header, arrays)
    store.put("m", bad)
    return store


def test_store_get_rejects_a_malformed_model(tmp_path, multiclass):
    est, _ = multiclass
    store = _store_with(tmp_path, est, *_bad_state(est))
    with pytest.raises(FormatError, match="baseline"):
        store.get("m")


def test_resume_fit_rejects_a_malformed_checkpoint(tmp_path, regressor):
    est, X = regressor
    header, arrays = _mutated(est)
    arrays["bin_thresholds"] = arrays["bin_thresholds"][::-1].copy()
    store = _store_with(tmp_path, est, header, arrays)
    with pytest.raises(FormatError, match="bin_thresholds"):
        resume_fit(DartRegressor(**{**FAST, "n_estimators": 12}), store, "m", X,
                   np.zeros(X.shape[0]))


def test_warm_start_from_a_loaded_state_is_checked(regressor):
    est, X = regressor
    header, arrays = _mutated(est)
    nodes = arrays["nodes"].copy()
    inner = np.flatnonzero(nodes["is_leaf"] == 0)[0]
    nodes["feature_idx"][inner] = 99
    arrays["nodes"] = nodes
    target = DartRegressor(**{**FAST, "warm_start": True})
    with pytest.raises(FormatError, match="feature_idx"):
        target._set_state(header, arrays)
    assert not hasattr(target, "_trees") and not hasattr(target, "booster_")


# ------------------------------------------------------ validation rules
@pytest.mark.parametrize("field, value, match", [
    ("n_trees_per_iteration", 2, "tree_offsets"),
    ("n_iter", 9, "tree_offsets"),
    ("n_features_in", 0, "n_features_in"),
    ("n_features_in", True, "n_features_in"),
    ("max_bins", 1000, "max_bins"),
    ("best_iteration", 99, "best_iteration"),
    ("feature_names_in", ["a"], "feature_names_in"),
    ("classes", [0, 2, 1], "classes"),
    ("classes", [0, 1, 2.5], "classes"),
    ("classes_dtype", "O", "classes_dtype"),
    ("classes_dtype", "<M8[s]", "classes_dtype"),
    ("params", {"n_estimators": -3}, "params"),
    ("params", {"no_such": 1}, "params"),
    ("params", {"callbacks": [1]}, "params"),
    ("format_version", 2, "format_version"),
    # a classifier's header relabelled: its classifier-only params are refused first
    ("class", "DartRegressor", r"unknown parameter\(s\) \['class_weight'\]"),
    ("class", "dartboost.__main__.X", "class"),
])
def test_header_rules(multiclass, field, value, match):
    est, _ = multiclass
    header, arrays = _mutated(est)
    header[field] = value
    with pytest.raises(FormatError, match=match):
        estimator_from_state(header, arrays)


def _nodes_with(est, field, value, where="inner"):
    header, arrays = _mutated(est)
    nodes = arrays["nodes"].copy()
    i = np.flatnonzero(nodes["is_leaf"] == (0 if where == "inner" else 1))[0]
    nodes[field][i] = value
    arrays["nodes"] = nodes
    return header, arrays


@pytest.mark.parametrize("field, value, where, match", [
    ("left", 0, "inner", "left/right"),
    ("right", 10**6, "inner", "left/right"),
    ("feature_idx", -1, "inner", "feature_idx"),
    ("is_leaf", 7, "inner", "is_leaf"),
    ("missing_go_to_left", 2, "inner", "missing_go_to_left"),
    ("value", np.nan, "leaf", "value"),
    ("num_threshold", 1e300, "inner", "num_threshold"),
    ("bin_threshold", 255, "inner", "bin_threshold"),
])
def test_node_rules(regressor, field, value, where, match):
    est, _ = regressor
    with pytest.raises(FormatError, match=match):
        estimator_from_state(*_nodes_with(est, field, value, where))


def _array_with(est, name, fn):
    header, arrays = _mutated(est)
    arrays[name] = fn(arrays[name].copy())
    return header, arrays


def _set(i, v):
    def f(a):
        a[i] = v
        return a
    return f


@pytest.mark.parametrize("name, fn, match", [
    ("tree_offsets", _set(1, 0), "tree_offsets"),
    ("tree_offsets", _set(-1, 10**9), "tree_offsets"),
    ("tree_offsets", lambda a: a.astype(np.int32), "tree_offsets"),
    ("tree_weights", _set(0, np.inf), "tree_weights"),
    ("tree_weights", _set(0, 0.5), "tree_weights"),
    ("log_offsets", _set(-1, 10**6), "log_offsets"),
    ("log_dropped", lambda a: a + 1000, "log_dropped"),
    ("log_scale", _set(0, np.nan), "log_scale"),
    ("bin_thresholds", _set(0, np.nan), "bin_thresholds"),
    ("bin_offsets", _set(1, -5), "bin_offsets"),
    ("nodes", lambda a: a.astype([(n, "<f8") for n in a.dtype.names]), "nodes"),
])
def test_array_rules(regressor, name, fn, match):
    est, _ = regressor
    assert est._get_state()[1]["log_dropped"].size > 0  # the fixture drops trees
    with pytest.raises(FormatError, match=match):
        estimator_from_state(*_array_with(est, name, fn))


def test_regressor_and_ranker_extras():
    X, y = make_regression(200, 3, n_targets=2, random_state=0)
    multi = DartRegressor(**FAST).fit(X, y)
    for change in ({"n_outputs": 3}, {"y_was_1d": True}, {"y_was_1d": 1}):
        with pytest.raises(FormatError, match="n_outputs|y_was_1d"):
            estimator_from_state(*_mutated(multi, **change))
    with pytest.raises(FormatError, match="params: Multi-output"):
        # multi-output needs loss='squared_error': the loss decides the tree count
        estimator_from_state(*_mutated(multi, n_outputs=2,
                                       params={**multi._get_state()[0]["params"],
                                               "loss": "poisson"}))
    rng = np.random.default_rng(0)
    Xr, yr = rng.normal(size=(200, 3)), rng.integers(0, 3, 200)
    ranker = DartRanker(**FAST).fit(Xr, yr, group=[50] * 4)
    with pytest.raises(FormatError, match="objective"):
        estimator_from_state(*_mutated(ranker, objective="pairwise"))


def test_format_error_is_a_value_error_shared_with_the_store():
    from dartboost.store import FormatError as StoreFormatError
    assert StoreFormatError is FormatError and issubclass(FormatError, ValueError)
    assert dartboost.FormatError is FormatError
