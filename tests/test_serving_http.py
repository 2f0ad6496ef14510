"""HTTP front end and ``dartboost serve`` CLI, driven with real requests on 127.0.0.1."""

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import joblib
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression

import dartboost
from dartboost.coded import CodedPredictor
from dartboost.serving import CodedPool, FaultSpec, make_server
from process_utils import alive

# The server's stack is the optional "serve" extra.
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")


def _request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


def _post(port, obj):
    body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
    return _request(port, "POST", "/predict", body=body,
                    headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def model():
    X, y = make_classification(n_samples=800, n_features=6, random_state=3)
    base = LogisticRegression(max_iter=500).fit(X, y)
    cp = CodedPredictor(base, k=2, parity_estimator=LinearRegression(), random_state=0).fit(X)
    return X, base, cp


def test_http_predict_errors_health_metrics(model):
    X, base, cp = model
    pool = CodedPool(cp, n_workers=2, faults={0: FaultSpec(service_time=0.05)})
    server = make_server(pool, host="127.0.0.1", port=0).start()
    port = server.server_address[1]
    pids = list(pool.worker_pids().values())
    try:
        status, doc = _post(port, {"instances": X[:5].tolist()})
        assert status == 200
        assert doc["predictions"] == base.predict(X[:5]).tolist()
        assert len(doc["approximate"]) == 5 and doc["latency_ms"] > 0

        bad = [
            (b"{not json", 400, "malformed JSON"),
            (json.dumps([1, 2, 3]), 400, "instances"),
            (json.dumps({"rows": [[1.0] * 6]}), 400, "instances"),
            (json.dumps({"instances": [[1.0] * 5]}), 400, "features"),
            (json.dumps({"instances": [[1.0] * 6, [1.0] * 5]}), 400, "rectangular"),
            (json.dumps({"instances": [["a"] * 6]}), 400, "rectangular"),
            (json.dumps({"instances": []}), 400, ""),
        ]
        for body, code, msg in bad:
            status, doc = _post(port, body)
            assert status == code, (body, status, doc)
            assert msg in doc["error"]
        assert _request(port, "GET", "/nope")[0] == 404
        assert _request(port, "GET", "/predict")[0] == 405
        assert _request(port, "POST", "/health", body="{}")[0] == 405
        # Missing Content-Length: a raw request the stdlib client would not send.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/predict", skip_accept_encoding=True)
        conn.endheaders()
        assert conn.getresponse().status == 411
        conn.close()

        # Still serving after all of that, and under a stream of queries.
        for i in range(40):
            status, doc = _post(port, {"instances": X[i:i + 1].tolist()})
            assert status == 200 and doc["predictions"] == base.predict(X[i:i + 1]).tolist()

        status, health = _request(port, "GET", "/health")
        assert status == 200 and health["status"] == "ok" and health["workers"] == 3
        status, metrics = _request(port, "GET", "/stats")
        assert status == 200
        assert metrics["requests_ok"] == 41
        assert metrics["latency_ms"]["count"] == 41
        assert metrics["latency_ms"]["p99"] >= metrics["latency_ms"]["p50"] > 0
        assert "degraded_rows" in metrics and metrics["http_errors"]["400"] == len(bad)
    finally:
        server.stop()
    assert pool._closed
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def test_cli_serve_subprocess(model, tmp_path):
    X, base, cp = model
    path = tmp_path / "model.joblib"
    joblib.dump(cp, path)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(dartboost.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dartboost.serving.cli", str(path), "--port", "0",
         "--workers", "2", "--duration", "120", "--allow-pickle"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        line = ""
        deadline = time.monotonic() + 90
        while "http://" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "http://127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1].split()[0])
        status, doc = _post(port, {"instances": X[:3].tolist()})
        assert status == 200 and doc["predictions"] == base.predict(X[:3]).tolist()
        assert _post(port, b"garbage")[0] == 400
        status, health = _request(port, "GET", "/health")
        assert status == 200 and health["mode"] == "coded"
        pids = health["worker_pids"]
        assert len(pids) == 3 and all(alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The server shut its pool down: no worker outlives it.
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
