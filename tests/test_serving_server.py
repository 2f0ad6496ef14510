"""The ASGI server: protocol, limits, safety of model loading. Loopback only, bounded loops.

Most tests serve through the in-process "thread" backend (no worker start-up);
a few hold tasks with ManualBackend to make backpressure and deadlines
deterministic.
"""

import http.client
import json
import os
import socket
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from dartboost.coded import CodedPredictor  # noqa: E402
from dartboost.serving import CodedPool, make_server  # noqa: E402
from dartboost.serving._inprocess import ManualBackend  # noqa: E402


def _req(port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("content-type", "")
        doc = json.loads(data) if data and "json" in ctype else data.decode()
        return resp.status, doc, resp
    finally:
        conn.close()


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=600, n_features=6, random_state=3)
    return X, y, LogisticRegression(max_iter=500).fit(X, y)


@pytest.fixture(scope="module")
def served(data):
    X, y, base = data
    cp = CodedPredictor(base, k=2, parity_estimator=LinearRegression(), random_state=0).fit(X)
    pool = CodedPool(cp, n_workers=2, backend="thread")
    server = make_server(pool, port=0, max_rows=100, max_body=200_000).start()
    yield server.server_address[1], server
    server.stop()


MALFORMED = [
    (b'{"instances": [[Infinity, 1, 1, 1, 1, 1]]}', "finite"),
    (b'{"instances": [[-Infinity, 1, 1, 1, 1, 1]]}', "finite"),
    (b'{"instances": [[NaN, 1, 1, 1, 1, 1]]}', "finite"),
    (b'{"instances": [[1e999, 1, 1, 1, 1, 1]]}', "overflow"),
    (b'{"instances": [[' + b"9" * 400 + b', 1, 1, 1, 1, 1]]}', "too long"),
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested"),
    (b'{"instances": [["1", 1, 1, 1, 1, 1]]}', "numbers"),
    (b'{"instances": [[true, 1, 1, 1, 1, 1]]}', "numbers"),
    (b'{"instances": [[1, 1, 1, 1, 1]]}', "features"),
    (b'{"instances": [[1, 1, 1, 1, 1, 1], [1]]}', "rectangular"),
    (b'{"instances": []}', "non-empty"),
    (b'{"instances": [[1, 1, 1, 1, 1, 1]], "proba": "yes"}', "proba"),
    (b"\xff\xfe not utf8", "malformed"),
    (b"{not json", "malformed"),
]


@pytest.mark.parametrize("body,msg", MALFORMED)
def test_every_malformed_body_is_a_400(served, data, body, msg):
    # Finding: a 400-digit integer or deep nesting dropped the connection, and
    # Infinity / 1e999 reached the pool (and failed the requests batched with it).
    port, _ = served
    status, doc, _ = _req(port, "POST", "/predict", body=body,
                          headers={"Content-Type": "application/json"})
    assert status == 400, (body[:60], status, doc)
    assert msg in doc["error"]
    X, _, base = data
    status, doc, _ = _req(port, "POST", "/predict", {"instances": X[:2].tolist()})
    assert status == 200 and doc["predictions"] == base.predict(X[:2]).tolist()


def test_probabilities_on_both_protocols(served, data):
    # Finding: "proba": true was ignored.
    port, _ = served
    X, _, base = data
    status, doc, _ = _req(port, "POST", "/predict", {"instances": X[:4].tolist(), "proba": True})
    assert status == 200
    np.testing.assert_allclose(doc["probabilities"], base.predict_proba(X[:4]), atol=1e-9)
    body = {"id": "q1", "inputs": [{"name": "x", "shape": [4, 6], "datatype": "FP64",
                                    "data": X[:4].ravel().tolist()}],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
    status, doc, _ = _req(port, "POST", "/v2/models/model/infer", body)
    assert status == 200 and doc["id"] == "q1" and doc["model_name"] == "model"
    outs = {o["name"]: o for o in doc["outputs"]}
    assert outs["predict"]["data"] == base.predict(X[:4]).tolist()
    assert outs["predict"]["datatype"] == "INT64"
    np.testing.assert_allclose(np.reshape(outs["predict_proba"]["data"], (4, 2)),
                               base.predict_proba(X[:4]), atol=1e-9)
    assert outs["approximate"]["data"] == [False] * 4


def test_v2_health_metadata_and_errors(served):
    port, _ = served
    assert _req(port, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    assert _req(port, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    status, meta, _ = _req(port, "GET", "/v2/models/model")
    assert status == 200 and meta["inputs"][0]["shape"] == [-1, 6]
    assert {o["name"] for o in meta["outputs"]} == {"predict", "approximate", "predict_proba"}
    assert _req(port, "GET", "/v2/models/other")[0] == 404
    assert _req(port, "POST", "/v2/models/other/infer", {"inputs": []})[0] == 404
    assert _req(port, "GET", "/v2/models/model/infer")[0] == 405
    bad = {"inputs": [{"name": "x", "shape": [2, 6], "datatype": "BYTES", "data": ["a"] * 12}]}
    status, doc, _ = _req(port, "POST", "/v2/models/model/infer", bad)
    assert status == 400 and "numeric" in doc["error"]
    bad = {"inputs": [{"name": "x", "shape": [2, 6], "datatype": "FP64", "data": [1.0] * 11}]}
    assert _req(port, "POST", "/v2/models/model/infer", bad)[0] == 400
    assert _req(port, "GET", "/nope")[0] == 404


def test_row_and_body_limits(served, data):
    # Finding: one 150k-row request held small requests back by seconds.
    port, _ = served
    X, _, _ = data
    status, doc, _ = _req(port, "POST", "/predict", {"instances": [X[0].tolist()] * 101})
    assert status == 400 and "at most 100" in doc["error"]
    status, doc, _ = _req(port, "POST", "/predict", b"[" + b" " * 300_000 + b"]")
    assert status == 413


def test_prometheus_metrics_and_nodelay(served):
    port, server = served
    _req(port, "POST", "/predict", b"{bad")
    status, text, resp = _req(port, "GET", "/metrics")
    assert status == 200 and resp.getheader("content-type").startswith("text/plain")
    assert 'dartboost_http_requests_total{code="400",endpoint="predict"}' in text
    assert "dartboost_pool_requests_ok_total" in text
    assert "dartboost_http_request_duration_seconds_bucket" in text
    # Finding: no TCP_NODELAY, 44 ms per keep-alive request. Accepted sockets
    # inherit the listener's TCP protocol and option.
    sock = server._sock
    assert sock.proto == socket.IPPROTO_TCP
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_named_feature_rows(data):
    # Finding: rows keyed by feature name were refused.
    pd = pytest.importorskip("pandas")
    X, y, _ = data
    cols = [f"f{i}" for i in range(6)]
    base = LogisticRegression(max_iter=500).fit(pd.DataFrame(X, columns=cols), y)
    pool = CodedPool(base, mode="none", n_workers=1, backend="thread")
    server = make_server(pool, port=0).start()
    port = server.server_address[1]
    try:
        rows = [dict(zip(cols, r)) for r in X[:3].tolist()]
        status, doc, _ = _req(port, "POST", "/predict", {"instances": rows})
        assert status == 200
        assert doc["predictions"] == base.predict(pd.DataFrame(X[:3], columns=cols)).tolist()
        status, doc, _ = _req(port, "POST", "/predict", {"instances": [{"f0": 1.0}]})
        assert status == 400 and "missing" in doc["error"]
        inputs = [{"name": c, "shape": [3], "datatype": "FP64", "data": X[:3, i].tolist()}
                  for i, c in reversed(list(enumerate(cols)))]
        status, doc, _ = _req(port, "POST", "/v2/models/model/infer", {"inputs": inputs})
        assert status == 200 and doc["outputs"][0]["data"] == doc["outputs"][0]["data"]
        assert doc["outputs"][0]["data"] == base.predict(
            pd.DataFrame(X[:3], columns=cols)).tolist()
    finally:
        server.stop()


def test_bearer_token_auth(data):
    X, _, base = data
    pool = CodedPool(base, mode="none", n_workers=1, backend="thread")
    server = make_server(pool, port=0, auth_token="s3cret").start()
    port = server.server_address[1]
    try:
        body = {"instances": X[:1].tolist()}
        assert _req(port, "POST", "/predict", body)[0] == 401
        status, _, resp = _req(port, "POST", "/predict", body,
                               headers={"Authorization": "Bearer wrong"})
        assert status == 401 and resp.getheader("www-authenticate").startswith("Bearer")
        assert _req(port, "POST", "/predict", body,
                    headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert _req(port, "GET", "/metrics")[0] == 401
        assert _req(port, "GET", "/v2/health/live")[0] == 200  # probes stay open
        assert _req(port, "GET", "/v2/health/ready")[0] == 200
    finally:
        server.stop()


def _held_server(base, **kw):
    be = ManualBackend()
    pool = CodedPool(base, mode="none", n_workers=1, backend=be, batch_size=1,
                     hang_timeout=1e6, request_timeout=60)
    server = make_server(pool, port=0, **kw).start()
    return be, pool, server, server.server_address[1]


def _in_thread(fn, *args):
    out = {}

    def run():
        out["res"] = fn(*args)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    return cond()


def test_backpressure_429_and_deadline_504(data):
    X, _, base = data
    be, pool, server, port = _held_server(base, max_concurrency=2)
    body = {"instances": X[:1].tolist()}
    try:
        threads = [_in_thread(_req, port, "POST", "/predict", body) for _ in range(2)]
        assert _wait(lambda: server.app.state.serving.inflight == 2)
        status, doc, resp = _req(port, "POST", "/predict", body)
        assert status == 429 and resp.getheader("retry-after") == "1"
        assert _wait(lambda: be.busy() == [0])
        be.finish(0)  # the one running task; the second is queued behind it
        assert _wait(lambda: be.busy() == [0])
        be.finish(0)
        for t, out in threads:
            t.join(10)
            assert out["res"][0] == 200
        # A deadline shorter than the answer: 504, and the server goes on.
        t0 = time.monotonic()
        status, doc, _ = _req(port, "POST", "/predict?timeout=0.2", body)
        assert status == 504 and time.monotonic() - t0 < 5
        assert _wait(lambda: be.busy() == [0])
        be.finish(0)  # the late answer nobody waits for must not break the pool
        assert _req(port, "POST", "/predict?timeout=abc", body)[0] == 400
        be.auto = True
        assert _req(port, "POST", "/predict", body)[0] == 200
        assert pool.health()["status"] == "ok"
    finally:
        be.auto = True
        be.finish_all()
        server.stop()


def test_slow_client_cannot_hold_the_server(data):
    # Finding: a client trickling one byte every 10 s held its thread.
    X, _, base = data
    pool = CodedPool(base, mode="none", n_workers=1, backend="thread")
    server = make_server(pool, port=0, body_timeout=0.5).start()
    port = server.server_address[1]
    try:
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        t0 = time.monotonic()
        # Others are served while it trickles.
        for i in range(5):
            status, doc, _ = _req(port, "POST", "/predict", {"instances": X[i:i + 1].tolist()})
            assert status == 200
        reply = slow.recv(4096)
        assert b" 408 " in reply.split(b"\r\n")[0] and time.monotonic() - t0 < 5
        slow.close()
    finally:
        server.stop()


def test_poisoning_client_never_fails_others(data):
    # Finding: 69 of 600 valid requests got HTTP 500 while one client sent
    # Infinity; in-process, 210 of 210 co-batched valid requests failed.
    X, _, base = data
    cp = CodedPredictor(base, k=2, parity_estimator=LinearRegression(), random_state=0).fit(X)
    pool = CodedPool(cp, n_workers=2, backend="thread", batch_size=8, max_batch_delay=0.002)
    server = make_server(pool, port=0).start()
    port = server.server_address[1]
    results = {"good": [], "bad": []}

    def client(kind, n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(n):
            if kind == "bad":
                body = b'{"instances": [[Infinity, 1, 2, 3, 4, 5]]}'
            else:
                body = json.dumps({"instances": X[i % 50:i % 50 + 1].tolist()})
            conn.request("POST", "/predict", body=body)
            resp = conn.getresponse()
            doc = json.loads(resp.read())
            results[kind].append((resp.status, doc, i))
        conn.close()

    try:
        threads = [threading.Thread(target=client, args=("good", 40)) for _ in range(3)]
        threads.append(threading.Thread(target=client, args=("bad", 40)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results["good"]) == 120 and len(results["bad"]) == 40
        assert _req(port, "GET", "/stats")[1]["http_merged_requests"] >= 0
        for status, doc, i in results["good"]:
            assert status == 200 and doc["predictions"] == base.predict(
                X[i % 50:i % 50 + 1]).tolist()
        assert all(status == 400 for status, _, _ in results["bad"])
    finally:
        server.stop()


def test_broken_pool_is_not_ready(data):
    X, _, base = data
    pool = CodedPool(base, mode="none", n_workers=1, backend="thread")
    server = make_server(pool, port=0).start()
    port = server.server_address[1]
    try:
        pool._break(RuntimeError("simulated dispatcher failure"))
        status, doc, _ = _req(port, "GET", "/health")
        assert status == 503 and doc["status"] == "broken"
        assert _req(port, "GET", "/v2/health/ready")[0] == 503
        assert _req(port, "POST", "/predict", {"instances": X[:1].tolist()})[0] == 503
    finally:
        server.stop()


def test_graceful_shutdown_answers_requests_in_flight(data):
    X, _, base = data
    be, pool, server, port = _held_server(base)
    try:
        t, out = _in_thread(_req, port, "POST", "/predict", {"instances": X[:1].tolist()})
        assert _wait(lambda: be.busy() == [0])
        stopper = threading.Thread(target=server.stop, daemon=True)
        stopper.start()
        time.sleep(0.2)
        assert stopper.is_alive()  # waiting for the request in flight
        be.finish(0)
        t.join(10)
        stopper.join(30)
        assert out["res"][0] == 200 and not stopper.is_alive()
        assert pool._closed
    finally:
        be.auto = True


# ----------------------------------------------------------------- loading


def _args(path, **kw):
    import argparse

    from dartboost.serving.cli import _add_arguments

    p = argparse.ArgumentParser()
    _add_arguments(p)
    extra = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        extra += [flag] if v is True else [flag, str(v)]
    return p.parse_args([str(path)] + extra)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_serve_never_unpickles_without_allow_pickle(tmp_path):
    # Finding: `dartboost serve` loaded with allow_pickle=True and fell back to
    # joblib.load on any format error: a pickle ran os.system.
    import joblib

    from dartboost.serving.cli import _load_model
    from dartboost.store import save

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.joblib"
    joblib.dump(_Evil(marker), evil)
    with pytest.raises(SystemExit, match="allow-pickle"):
        _load_model(_args(evil))
    dbm = tmp_path / "evil.dbm"
    save({"x": _Evil(marker)}, dbm)  # a pickle payload inside dartboost's format
    with pytest.raises(SystemExit, match="allow-pickle"):
        _load_model(_args(dbm))
    assert not marker.exists()


def test_corrupt_model_file_is_an_error_not_a_fallback(tmp_path, monkeypatch, data):
    import joblib

    from dartboost import DartClassifier
    from dartboost.serving.cli import _load_model
    from dartboost.store import save

    X, y, _ = data
    path = tmp_path / "m.dbm"
    save(DartClassifier(n_estimators=3, n_jobs=1).fit(X, y), path)
    blob = bytearray(path.read_bytes())
    blob[64 + 20] ^= 0x01  # one bit of the header (its CRC no longer matches)
    path.write_bytes(bytes(blob))

    def no_joblib(*a, **k):
        raise AssertionError("fell back to joblib.load")

    monkeypatch.setattr(joblib, "load", no_joblib)
    with pytest.raises(SystemExit, match="not a valid model file"):
        _load_model(_args(path, allow_pickle=True))


def test_coded_mode_with_nan_parity_data(tmp_path):
    # Finding: coded mode exited at start with a bare "Input contains NaN"
    # when the parity data had NaNs, though DART handles them.
    from dartboost import DartRegressor
    from dartboost.serving.cli import _load_model
    from dartboost.store import save

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    path = tmp_path / "m.dbm"
    save(DartRegressor(n_estimators=5, n_jobs=1).fit(X, np.nan_to_num(X[:, 0])), path)
    np.save(tmp_path / "X.npy", X)
    model, mode, _ = _load_model(_args(path, mode="coded", parity_data=tmp_path / "X.npy"))
    assert mode == "coded" and hasattr(model, "parity_predict")
    lin = tmp_path / "lin.joblib"
    import joblib

    joblib.dump(LinearRegression().fit(np.nan_to_num(X), np.nan_to_num(X[:, 1])), lin)
    with pytest.raises(SystemExit, match="parity-data"):
        _load_model(_args(lin, mode="coded", parity_data=tmp_path / "X.npy",
                          allow_pickle=True))
