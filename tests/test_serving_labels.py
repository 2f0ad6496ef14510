"""String (label) categorical columns through the serving pool and its HTTP front end."""

import json

import numpy as np
import pandas as pd
import pytest

from dartboost import DartClassifier, DartRegressor
from dartboost.serving import CodedPool, make_server
from dartboost.serving._labels import CodesRawOutput, label_columns
from dartboost.serving._protocol import BadRequest, rows_to_array, v2_inputs_to_array

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

CITIES = ["oslo", "paris", "rome", "lima"]


def _frame(n, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "city": rng.choice(CITIES, n),
                         "b": rng.integers(0, 4, n).astype(float)})


@pytest.fixture(scope="module")
def fitted():
    X = _frame(600, 0)
    y = ((X["city"] == "rome") | (X["a"] > 1.0)).to_numpy().astype(int)
    model = DartClassifier(n_estimators=15, random_state=0).fit(X, y)
    return X, model


def _queries():
    # seen labels, an unseen one, a missing one
    return pd.DataFrame({"a": [0.1, -0.3, 2.0, 0.0, 0.5],
                         "city": ["rome", "oslo", "paris", "madrid", None],
                         "b": [1.0, 0.0, 3.0, 2.0, np.nan]})


def test_label_columns_and_round_trip(fitted):
    X, model = fitted
    labels = label_columns(model)
    assert list(labels) == [1] and sorted(labels[1]) == sorted(CITIES)
    assert label_columns(DartRegressor(n_estimators=2).fit(X[["a", "b"]], X["a"])) is None
    Q = _queries()
    codes = rows_to_array(Q.astype(object).where(Q.notna(), None).values.tolist(), 3,
                          ["a", "city", "b"], 100, labels)
    assert codes[3, 1] == -1 and np.isnan(codes[4, 1])
    decoded = CodesRawOutput(lambda est, Z: est.predict_proba(Z), labels,
                             model.feature_names_in_)(model, codes)
    np.testing.assert_array_equal(decoded, model.predict_proba(Q))


def test_protocol_refuses_bad_values_by_column(fitted):
    _, model = fitted
    labels = label_columns(model)
    names = ["a", "city", "b"]
    with pytest.raises(BadRequest, match="'a'"):
        rows_to_array([["x", "rome", 1.0]], 3, names, 10, labels)
    with pytest.raises(BadRequest, match="categorical feature's value"):
        rows_to_array([[1.0, {"x": 1}, 1.0]], 3, names, 10, labels)
    with pytest.raises(BadRequest, match="features"):
        rows_to_array([[1.0, "rome"]], 3, names, 10, labels)
    doc = {"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]},
                      {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["rome"]},
                      {"name": "b", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    with pytest.raises(BadRequest, match="'a' is BYTES"):
        v2_inputs_to_array(doc, 3, names, 10, labels)
    with pytest.raises(BadRequest, match="not numeric"):
        v2_inputs_to_array(doc, 3, names, 10, None)


def test_coded_mode_refuses_label_columns(fitted):
    _, model = fitted
    from dartboost.coded import CodedPredictor
    from sklearn.linear_model import LinearRegression
    numeric = _frame(200, 1).assign(city=lambda f: f["city"].map(CITIES.index).astype(float))
    cp = CodedPredictor(model, k=2, parity_estimator=LinearRegression()).fit(numeric)
    with pytest.raises(ValueError, match="needs numeric features"):
        CodedPool(cp, backend="thread")


def test_pool_takes_frames_and_http_takes_strings(fitted):
    X, model = fitted
    Q = _queries()
    expected = model.predict(Q).tolist()
    pool = CodedPool(model, mode="replication", n_workers=1, backend="thread")
    server = make_server(pool, host="127.0.0.1", port=0).start()
    port = server.server_address[1]
    try:
        np.testing.assert_array_equal(pool.predict(Q), model.predict(Q))
        rows = [[None if pd.isna(v) else v for v in r] for r in Q.astype(object).values.tolist()]
        status, doc = _post(port, "/predict", {"instances": rows})
        assert status == 200, doc
        assert doc["predictions"] == expected
        status, doc = _post(port, "/predict", {"instances": [dict(zip(Q.columns, r))
                                                             for r in rows], "proba": True})
        assert status == 200, doc
        np.testing.assert_allclose(doc["probabilities"], model.predict_proba(Q))
        v2 = {"inputs": [
            {"name": "a", "shape": [5], "datatype": "FP64", "data": Q["a"].tolist()},
            {"name": "city", "shape": [5], "datatype": "BYTES",
             "data": [None if pd.isna(v) else v for v in Q["city"]]},
            {"name": "b", "shape": [5], "datatype": "FP64",
             "data": [None if pd.isna(v) else v for v in Q["b"]]}]}
        v2["inputs"][2]["data"][4] = 0.0  # v2 numbers: no nulls
        Q2 = Q.assign(b=Q["b"].fillna(0.0))
        status, doc = _post(port, "/v2/models/model/infer", v2)
        assert status == 200, doc
        assert doc["outputs"][0]["data"] == model.predict(Q2).tolist()
        status, doc = _post(port, "/predict", {"instances": [["x", "rome", 1.0]]})
        assert status == 400 and "'a'" in doc["error"]
    finally:
        server.stop()


def _post(port, path, obj):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(obj),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()
