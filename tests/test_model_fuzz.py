"""Structure-aware mutation fuzzing of the model loader.

Each mutant changes one or two fields of a valid model state (an array entry,
an array's length or dtype, a header field) and is written in the store's file
format with its checksums recomputed, as an attacker would. A child process
loads every mutant of a batch and predicts with those it accepts: the loader
must either raise ``FormatError`` or give a model that predicts finite values
of the right shape. A crash (signal), hang (timeout) or any other exception
fails the test with the mutant's description.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sklearn.datasets import make_classification, make_regression

from dartboost import DartClassifier, DartRanker, DartRegressor, FormatError
from dartboost.model_io import estimator_from_state
from dartboost._model_file import dumps_state

FAST = dict(n_estimators=6, max_leaf_nodes=5, random_state=0, early_stopping=False,
            skip_drop=0.0, drop_rate=0.5, n_jobs=1)
N_MUTANTS = 3000
BATCHES = 2

_CHILD = r"""
import json, sys, numpy as np
from dartboost import FormatError
from dartboost.store import loads
X = np.load(sys.argv[2])
out = []
for path in json.load(open(sys.argv[1])):
    blob = open(path, "rb").read()
    try:
        model = loads(blob)
    except FormatError:
        out.append("rejected")
        continue
    except Exception as exc:
        out.append(f"loader raised {type(exc).__name__}: {exc}")
        continue
    try:
        if hasattr(model, "predict_proba"):
            p = model.predict_proba(X)
            ok = p.shape[0] == X.shape[0] and p.shape[1] == len(model.classes_)
            model.predict(X)
        else:
            p = model.predict(X)
            ok = p.shape[0] == X.shape[0]
        for _ in model.staged_predict(X[:3]):
            pass
        model.predict_leaf(X)
        out.append("ok" if ok and np.all(np.isfinite(p)) else f"bad output {p.shape}")
    except ValueError as exc:  # e.g. params that predict validates
        out.append(f"predict raised ValueError: {exc}")
print(json.dumps(out))
"""


def _models():
    Xc, yc = make_classification(200, 6, n_informative=4, n_classes=3, random_state=0)
    Xr, yr = make_regression(200, 5, random_state=0)
    Xb, yb = make_classification(200, 5, random_state=1)
    ranker_y = np.random.default_rng(0).integers(0, 3, 200)
    return [
        (DartClassifier(**FAST).fit(Xc, yc), Xc[:20]),
        (DartClassifier(**FAST).fit(Xb, np.where(yb == 1, "yes", "no")), Xb[:20]),
        (DartRegressor(**FAST).fit(Xr, yr), Xr[:20]),
        (DartRegressor(**FAST).fit(Xr, np.c_[yr, -yr]), Xr[:20]),
        (DartRanker(**FAST).fit(Xr, ranker_y, group=[50] * 4), Xr[:20]),
    ]


_INTERESTING = [0, 1, -1, 2, 3, 255, 256, 2**31 - 1, 2**32 - 1, 2**62, -2**63]


def _mutate_array(arr, rng):
    """One structural mutation of an array: a value, its length or its dtype."""
    kind = rng.integers(6)
    a = arr.reshape(-1).copy()
    if kind == 0 and a.size:  # one entry (of one field of the nodes)
        i = rng.integers(a.size)
        if a.dtype.names:
            f = a.dtype.names[rng.integers(len(a.dtype.names))]
            a[f][i] = _value_for(a[f].dtype, rng)
        else:
            a[i] = _value_for(a.dtype, rng)
        return a, "entry"
    if kind == 1:  # shorter
        return a[:rng.integers(a.shape[0] + 1)].copy(), "truncated"
    if kind == 2:  # longer
        return np.concatenate([a, a[:rng.integers(1, 4)]]) if a.size else a, "extended"
    if kind == 3 and not a.dtype.names:  # other dtype
        with np.errstate(invalid="ignore", over="ignore"):
            return a.astype([np.int32, np.float32, np.int64, np.float64, np.uint8][
                rng.integers(5)]), "dtype"
    if kind == 4:  # other number of dimensions
        return a.reshape(1, -1) if a.size else a.reshape(0, 1), "ndim"
    if a.size >= 2:  # swap two entries
        i, j = rng.integers(a.size, size=2)
        a[i], a[j] = a[j].copy(), a[i].copy()
    return a, "swap"


def _value_for(dtype, rng):
    if dtype.kind == "f":
        return [np.nan, np.inf, -np.inf, 0.0, 1e300, -1.0, 0.5][rng.integers(7)]
    info = np.iinfo(dtype)
    v = _INTERESTING[rng.integers(len(_INTERESTING))]
    return int(np.clip(v, info.min, info.max))


_HEADER_VALUES = [0, 1, 2, 3, -1, 255, 256, 10**9, None, True, "x", [], {}, [0, 1], 1.5,
                  "<U200000000", "<i8", "|b1", "O", "DartRegressor", "dartboost.__main__.X"]


def _mutate_header(header, rng):
    h = json.loads(json.dumps(header))
    key = sorted(h)[rng.integers(len(h))]
    if key == "params" and rng.random() < 0.7:
        pk = sorted(h["params"])[rng.integers(len(h["params"]))]
        h["params"][pk] = _HEADER_VALUES[rng.integers(len(_HEADER_VALUES))]
        return h, f"params.{pk}"
    if isinstance(h[key], list) and h[key] and rng.random() < 0.5:
        h[key] = h[key][:rng.integers(len(h[key]))]
        return h, f"{key} shortened"
    h[key] = _HEADER_VALUES[rng.integers(len(_HEADER_VALUES))]
    return h, key


def _mutants(models, n, rng):
    for _ in range(n):
        m = rng.integers(len(models))
        est, _X = models[m]
        header, arrays = est._get_state()
        arrays = dict(arrays)
        what = []
        for _ in range(1 + (rng.random() < 0.4)):
            if rng.random() < 0.7:
                name = sorted(arrays)[rng.integers(len(arrays))]
                arrays[name], how = _mutate_array(arrays[name], rng)
                what.append(f"{name} {how}")
            else:
                header, how = _mutate_header(header, rng)
                what.append(f"header {how}")
        cls = type(est)
        blob = dumps_state("dartboost", header, arrays,
                           class_name=f"{cls.__module__}.{cls.__qualname__}")[0]
        yield m, blob, f"model {m}: " + ", ".join(what)


def test_structure_aware_mutants_never_crash_the_predictor(tmp_path):
    models = _models()
    rng = np.random.default_rng(20240611)
    per_model = {m: [] for m in range(len(models))}
    for m, blob, what in _mutants(models, N_MUTANTS, rng):
        path = tmp_path / f"{len(per_model[m])}_{m}.dbm"
        path.write_bytes(blob)
        per_model[m].append((str(path), what))
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    jobs = []
    for m, items in per_model.items():
        X_path = tmp_path / f"X{m}.npy"
        np.save(X_path, models[m][1])
        for b in range(BATCHES):
            batch = items[b::BATCHES]
            listing = tmp_path / f"batch_{m}_{b}.json"
            listing.write_text(json.dumps([p for p, _ in batch]))
            jobs.append((batch, [sys.executable, str(script), str(listing), str(X_path)]))
    counts = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # two children at a time: a 2-core CI runner stays busy, not oversubscribed
    for first in range(0, len(jobs), 2):
        running = [(batch, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, env=env))
                   for batch, cmd in jobs[first:first + 2]]
        for batch, proc in running:
            try:
                stdout, stderr = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"child hung on a batch including {[w for _, w in batch][:5]}")
            assert proc.returncode == 0, (
                f"child died with {proc.returncode} on a batch including "
                f"{[w for _, w in batch][:5]}...: {stderr[-2000:]}")
            results = json.loads(stdout.strip().splitlines()[-1])
            for (path, what), res in zip(batch, results):
                assert res in ("rejected", "ok"), f"{what}: {res}"
                counts[res] = counts.get(res, 0) + 1
    assert sum(counts.values()) == N_MUTANTS
    assert counts["rejected"] > N_MUTANTS // 2  # the mutations do hit checked fields


# ---------------------------------------------------------------- properties
@pytest.fixture(scope="module")
def small_model():
    X, y = make_classification(150, 5, n_informative=3, n_classes=3, random_state=0)
    return DartClassifier(**FAST).fit(X, y), X[:10]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_node_field_value_is_rejected_or_predicts_finitely(small_model, data):
    est, X = small_model
    header, arrays = est._get_state()
    nodes = arrays["nodes"].copy()
    field = data.draw(st.sampled_from(nodes.dtype.names))
    i = data.draw(st.integers(0, nodes.size - 1))
    dt = nodes[field].dtype
    if dt.kind == "f":
        value = data.draw(st.floats(allow_nan=True, allow_infinity=True))
    else:
        info = np.iinfo(dt)
        value = data.draw(st.integers(int(info.min), int(info.max)))
    nodes[field][i] = value
    try:
        model = estimator_from_state(header, {**arrays, "nodes": nodes})
    except FormatError:
        return
    proba = model.predict_proba(X)
    assert proba.shape == (X.shape[0], 3) and np.all(np.isfinite(proba))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(baseline=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=6),
       n_classes=st.integers(0, 6))
def test_baseline_and_class_count_must_match_the_trees(small_model, baseline, n_classes):
    est, X = small_model
    header, arrays = est._get_state()
    header = {**header, "classes": list(range(n_classes))}
    arrays = {**arrays, "baseline": np.asarray(baseline, dtype=np.float64)}
    if len(baseline) == 3 and n_classes == 3:
        estimator_from_state(header, arrays).predict(X)
    else:
        with pytest.raises(FormatError, match="baseline|classes"):
            estimator_from_state(header, arrays)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(step=st.integers(0, 5), value=st.integers(-3, 10))
def test_weight_log_drops_only_earlier_iterations(small_model, step, value):
    est, X = small_model
    header, arrays = est._get_state()
    dropped, offsets = arrays["log_dropped"].copy(), arrays["log_offsets"]
    if offsets[step] == offsets[step + 1]:
        return
    dropped[offsets[step]] = value
    try:
        model = estimator_from_state(header, {**arrays, "log_dropped": dropped})
    except FormatError:
        return  # out of range, a repeat, or weights that no longer replay
    assert 0 <= value < step
    assert np.all(np.isfinite(model.predict_proba(X)))
