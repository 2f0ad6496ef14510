"""HTTP front end of a serving pool (standard library ``http.server``).

Why the standard library: the server has three JSON endpoints on loopback and
delegates all concurrency to the pool (each HTTP thread just waits on a pool
future), so a threading ``http.server`` does the job with no new dependency;
a framework would add routing and templating we do not use.

Endpoints
---------
``POST /predict``
    Body ``{"instances": [[f1, f2, ...], ...]}`` (``"X"`` is accepted too).
    200 with ``{"predictions": [...], "approximate": [...], "latency_ms": t}``.
``GET /health``
    200 ``{"status": "ok", ...}`` while the pool serves, 503 once it is closed.
``GET /metrics``
    200 with the pool's counters and latency percentiles (JSON).

Errors are JSON ``{"error": message}``: 400 malformed JSON or wrong shape /
feature count, 404 unknown path, 405 wrong method, 411 no Content-Length,
413 body too large, 503 pool closed, 504 query timed out, 500 a query that
failed (worker errors after retries). A bad request never stops the server.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from ._errors import PoolClosedError, QueryError, QueryTimeout

__all__ = ["PredictionServer", "make_server"]

MAX_BODY = 16 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server_version = "dartboost-serve"
    protocol_version = "HTTP/1.1"
    # A client that stalls mid-request must not hold a thread forever.
    timeout = 30

    def log_message(self, fmt, *args):  # quiet by default; the CLI can turn it on
        if self.server.verbose:
            super().log_message(fmt, *args)

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code, msg):
        self.server.count_error(code)
        self._send(code, {"error": msg})

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        pool = self.server.pool
        if path == "/health":
            if pool._closed:
                return self._send(503, {"status": "closed"})
            st = pool.stats()
            return self._send(200, {"status": "ok", "mode": pool.mode, "k": pool.k,
                                    "r": pool.r, "workers": pool.n_base + pool.n_extra,
                                    "worker_pids": sorted(pool.worker_pids().values()),
                                    "worker_restarts": st["worker_restarts"]})
        if path == "/metrics":
            st = pool.stats()
            st["http_errors"] = dict(self.server.errors)
            return self._send(200, st)
        if path == "/predict":
            return self._error(405, "use POST for /predict")
        return self._error(404, f"no such endpoint: {path}")

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        if path != "/predict":
            if path in ("/health", "/metrics"):
                return self._error(405, f"use GET for {path}")
            return self._error(404, f"no such endpoint: {path}")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            return self._error(411, "Content-Length required")
        try:
            length = int(length)
        except ValueError:
            self.close_connection = True
            return self._error(400, "bad Content-Length")
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return self._error(413, f"body must be at most {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._error(400, f"malformed JSON: {exc}")
        if not isinstance(doc, dict) or not ({"instances", "X"} & doc.keys()):
            return self._error(400, 'body must be a JSON object with "instances": [[...], ...]')
        rows = doc.get("instances", doc.get("X"))
        try:
            X = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            return self._error(400, f"instances must be a rectangular array of numbers: {exc}")
        pool = self.server.pool
        try:
            fut = pool.submit(X)
        except PoolClosedError as exc:
            return self._error(503, str(exc))
        except ValueError as exc:
            return self._error(400, str(exc))
        try:
            res = fut.result(timeout=pool.request_timeout + 5.0)
        except QueryTimeout as exc:
            return self._error(504, str(exc))
        except PoolClosedError as exc:
            return self._error(503, str(exc))
        except (QueryError, TimeoutError) as exc:
            return self._error(500, str(exc))
        self._send(200, {"predictions": np.asarray(res.values).tolist(),
                         "approximate": res.approximate.tolist(),
                         "latency_ms": res.latency * 1e3})


class PredictionServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one :class:`~dartboost.serving.CodedPool`.

    Parameters
    ----------
    pool : CodedPool
    host : str, default="127.0.0.1"
        Bind address (loopback by default; serve beyond it behind a proxy).
    port : int, default=8000
        0 picks a free port (see :attr:`url`).
    close_pool : bool, default=True
        :meth:`stop` also closes the pool.
    verbose : bool, default=False
        Log each request to stderr.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, pool, host="127.0.0.1", port=8000, close_pool=True, verbose=False):
        super().__init__((host, port), _Handler)
        self.pool = pool
        self.close_pool = close_pool
        self.verbose = verbose
        self.errors = {}
        self._lock = threading.Lock()
        self._thread = None

    def count_error(self, code):
        with self._lock:
            self.errors[str(code)] = self.errors.get(str(code), 0) + 1

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="dartboost-http",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving, close the socket and (if owned) the pool."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(10)
            self._thread = None
        self.server_close()
        if self.close_pool:
            self.pool.close()


def make_server(pool, host="127.0.0.1", port=8000, **kwargs):
    """Create a :class:`PredictionServer` for ``pool`` (not yet serving)."""
    return PredictionServer(pool, host=host, port=port, **kwargs)
