"""HTTP front end of a serving pool: a Starlette app served by uvicorn.

Why these libraries: uvicorn is an asyncio HTTP server (keep-alive,
``TCP_NODELAY``, connection limits and time-outs, graceful shutdown on
SIGTERM), so a slow or idle client holds a coroutine, not a thread; Starlette
gives the routing and request/response types without a framework's weight;
``prometheus_client`` writes the standard metrics text format. All three are
imported only when a server is made (``pip install dartboost[serve]``).

Endpoints
---------
``POST /predict``
    ``{"instances": [[f1, ...], ...] or [{"name": v, ...}, ...], "proba": bool}``
    -> ``{"predictions", "approximate", "latency_ms"}`` (+ ``"probabilities"``).
``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``,
``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``,
``POST /v2/models/{name}/infer``
    The Open Inference Protocol v2 (KServe); see :mod:`._protocol`.
``GET /health``
    The pool's state (200 while it serves, 503 otherwise) and its workers.
``GET /metrics``
    Prometheus text format: HTTP requests, latencies, in-flight requests and
    the pool's counters. ``GET /stats``: the pool's counters as JSON.

Errors are JSON ``{"error": message}``: 400 malformed body, 401 missing or
wrong bearer token, 404 unknown path or model, 405 wrong method, 408 body not
received in time, 411 no Content-Length, 413 body too large, 429 too many
requests in flight (with ``Retry-After``), 503 pool not ready or closed, 504
deadline passed, 500 a query the model failed on. A bad request never stops
the server or fails another client's request.
"""

import asyncio
import hmac
import socket
import threading
import time

import numpy as np

from ._errors import ModelError, PoolBrokenError, PoolClosedError, QueryError, QueryTimeout
from ._labels import CodesRawOutput
from ._protocol import BadRequest, loads, rows_to_array, v2_inputs_to_array, v2_outputs, \
    wants_proba

__all__ = ["make_app", "PredictionServer", "make_server"]

MAX_BODY = 16 * 1024 * 1024
MAX_ROWS = 4096
_OPEN_PATHS = ("/health", "/v2/health/live", "/v2/health/ready")


# asyncio.timeout (3.11+) puts a deadline on the running task; asyncio.wait_for
# wraps a coroutine in a new task with its own timer, which on a loop busy with
# thousands of requests per second is a measurable share of each request's cost.
_timeout = getattr(asyncio, "timeout", None)


async def _within(awaitable, seconds):
    """Await ``awaitable``; ``TimeoutError`` after ``seconds``."""
    if _timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with _timeout(seconds):
        return await awaitable


class _HTTPError(Exception):
    def __init__(self, code, msg, headers=None):
        super().__init__(msg)
        self.code, self.msg, self.headers = code, msg, headers


def _sample_row(pool):
    coded = pool.coded
    if coded is not None and hasattr(coded, "pad_query_"):
        return np.asarray(coded.pad_query_, dtype=np.float64).reshape(1, -1)
    n = pool.n_features_in_
    return None if n is None else np.zeros((1, int(n)))


class _ServerState:
    """What the routes share: the pool, limits, counters and metrics."""

    def __init__(self, pool, model_name, max_body, max_rows, max_concurrency,
                 request_timeout, body_timeout, auth_token, close_pool, micro_batch):
        from dartboost.coded import raw_gives_proba

        self.pool = pool
        self.model_name = model_name
        self.max_body = int(max_body)
        self.max_rows = int(max_rows)
        self.max_concurrency = int(max_concurrency)
        self.request_timeout = float(request_timeout if request_timeout is not None
                                     else pool.request_timeout)
        self.body_timeout = float(body_timeout)
        self.auth_token = auth_token.encode() if auth_token else None
        self.close_pool = close_pool
        self.inflight = 0
        self.errors = {}
        names = getattr(pool.base, "feature_names_in_", None)
        self.feature_names = None if names is None else [str(n) for n in names]
        self.n_features = pool.n_features_in_
        self.labels = pool.labels  # label columns: their values are sent on as codes
        row = _sample_row(pool)
        if row is not None and self.labels is not None:
            row = CodesRawOutput(None, self.labels, self.feature_names).decode(row)
        self.proba = row is not None and raw_gives_proba(pool.base, row)
        self.classes = getattr(pool.base, "classes_", None)
        self.metrics = _Metrics(pool)
        self.batcher = None
        if micro_batch:
            from ._microbatch import MicroBatcher

            # Merged requests of up to one pool batch each, as many in the pool as
            # there are base workers plus one (so a worker never waits for the next).
            self.batcher = MicroBatcher(pool, max_rows=max(1, int(pool.batch_size)),
                                        max_inflight=int(pool.n_base) + 1)

    def count_error(self, code):
        self.errors[str(code)] = self.errors.get(str(code), 0) + 1


class _Metrics:
    """Prometheus metrics in a registry of this server (several servers may share a process)."""

    def __init__(self, pool):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("dartboost_http_requests", "HTTP requests by endpoint and code",
                                ["endpoint", "code"], registry=self.registry)
        self.latency = Histogram(
            "dartboost_http_request_duration_seconds", "Time to answer an HTTP request",
            ["endpoint"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))
        self.inflight = Gauge("dartboost_http_inflight_requests", "Requests being answered",
                              registry=self.registry)
        self.registry.register(_PoolCollector(pool))

    def render(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _PoolCollector:
    """Exports the pool's counters and latency percentiles at scrape time."""

    def __init__(self, pool):
        self.pool = pool

    def describe(self):
        return []  # collected lazily: the pool's counters are read at scrape time

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.pool.stats()
        for name in self.pool.metrics.COUNTERS:
            yield CounterMetricFamily(f"dartboost_pool_{name}", f"pool counter {name}",
                                      value=float(st.get(name, 0)))
        lat = st.get("latency_ms", {})
        g = GaugeMetricFamily("dartboost_pool_latency_seconds",
                              "pool request latency percentiles (recent window)",
                              labels=["quantile"])
        for q in ("p50", "p90", "p99", "p99.9"):
            if q in lat:
                g.add_metric([q[1:]], lat[q] / 1e3)
        yield g
        up = GaugeMetricFamily("dartboost_pool_ready", "1 while the pool serves")
        up.add_metric([], 1.0 if self.pool.health()["ready"] else 0.0)
        yield up


def make_app(pool, *, model_name="model", max_body=MAX_BODY, max_rows=MAX_ROWS,
             max_concurrency=256, request_timeout=None, body_timeout=10.0, auth_token=None,
             close_pool=True, micro_batch=True):
    """A Starlette (ASGI) app answering predictions from ``pool``.

    Parameters
    ----------
    pool : CodedPool
    model_name : str, default="model"
        Name under ``/v2/models/{name}``.
    max_body : int, default=16 MiB
        Largest request body in bytes (413 above).
    max_rows : int, default=4096
        Most rows in one request (400 above): a huge request would hold the
        pool's queue ahead of everyone else's small ones.
    max_concurrency : int, default=256
        Requests answered at once; more get 429 with ``Retry-After: 1``
        (backpressure instead of an unbounded queue).
    request_timeout : float, default=None
        Deadline per request in seconds (504 after it); ``None``: the pool's.
        A request may ask for a shorter one with ``?timeout=seconds``.
    body_timeout : float, default=10.0
        Seconds to receive a request body (408 after it): a client trickling
        its body cannot hold a request slot.
    auth_token : str, default=None
        If set, every endpoint but the health probes needs
        ``Authorization: Bearer <token>`` (401 otherwise).
    close_pool : bool, default=True
        Close the pool when the app shuts down (lifespan).
    micro_batch : bool, default=True
        Merge small requests that arrive together into one pool request
        (:class:`~dartboost.serving._microbatch.MicroBatcher`: no added wait;
        each request is validated alone, and a model failure is retried per
        request, so one client's bad request still fails only its own).
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    state = _ServerState(pool, model_name, max_body, max_rows, max_concurrency,
                         request_timeout, body_timeout, auth_token, close_pool, micro_batch)

    def error(code, msg, headers=None):
        state.count_error(code)
        return JSONResponse({"error": msg}, status_code=code, headers=headers)

    def endpoint(name, method):
        """Wrap a handler: method, auth, concurrency, deadlines, errors, metrics."""

        def wrap(fn):
            async def handler(request):
                t0 = time.perf_counter()
                code = 500
                try:
                    if request.method != method:
                        raise _HTTPError(405, f"use {method} for {request.url.path}")
                    if state.auth_token is not None and request.url.path not in _OPEN_PATHS:
                        _check_auth(request, state.auth_token)
                    resp = await fn(request)
                except _HTTPError as exc:
                    resp = error(exc.code, exc.msg, exc.headers)
                except Exception as exc:  # noqa: BLE001 - a bug must not drop the connection
                    resp = error(500, f"internal error: {exc!r}")
                code = resp.status_code
                state.metrics.requests.labels(name, str(code)).inc()
                state.metrics.latency.labels(name).observe(time.perf_counter() - t0)
                return resp

            return Route(path_of[name], handler, methods=["GET", "POST"], name=name)

        return wrap

    async def read_json(request):
        length = request.headers.get("content-length")
        if length is None and "chunked" not in request.headers.get("transfer-encoding", ""):
            raise _HTTPError(411, "Content-Length required")
        if length is not None:
            if not length.isdigit():
                raise _HTTPError(400, "bad Content-Length")
            if int(length) > state.max_body:
                raise _HTTPError(413, f"body must be at most {state.max_body} bytes")

        async def receive_all():
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > state.max_body:
                    raise _HTTPError(413, f"body must be at most {state.max_body} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            body = await _within(receive_all(), state.body_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise _HTTPError(408, f"body not received within {state.body_timeout} s") from None
        try:
            return loads(body)
        except BadRequest as exc:
            raise _HTTPError(400, str(exc)) from None

    def deadline(request):
        t = request.query_params.get("timeout")
        if t is None:
            return state.request_timeout
        try:
            t = float(t)
        except ValueError:
            raise _HTTPError(400, "timeout must be a number of seconds") from None
        if not t > 0:
            raise _HTTPError(400, "timeout must be positive")
        return min(t, state.request_timeout)

    async def serve(request, X, proba):
        """Submit X to the pool within the concurrency limit and the deadline."""
        if proba and not state.proba:
            raise _HTTPError(400, "this model's raw outputs are not logits, so it cannot "
                                  "serve probabilities")
        if state.inflight >= state.max_concurrency:
            raise _HTTPError(429, f"more than {state.max_concurrency} requests in flight",
                             {"Retry-After": "1"})
        timeout = deadline(request)
        state.inflight += 1
        state.metrics.inflight.inc()
        try:
            try:
                if state.batcher is not None:
                    fut = state.batcher.submit(X)
                else:
                    # shield: a deadline must not cancel the pool's future (the pool
                    # answers it anyway, and drops answers nobody waits for).
                    fut = asyncio.shield(asyncio.wrap_future(pool.submit(X)))
            except (PoolClosedError, PoolBrokenError) as exc:
                raise _HTTPError(503, str(exc)) from None
            except ValueError as exc:
                raise _HTTPError(400, str(exc)) from None
            try:
                res = await _within(fut, timeout)
            except QueryTimeout as exc:  # the pool's own deadline (a TimeoutError too)
                raise _HTTPError(504, str(exc)) from None
            except (asyncio.TimeoutError, TimeoutError):
                raise _HTTPError(504, f"no answer within {timeout} s") from None
            except (PoolClosedError, PoolBrokenError) as exc:
                raise _HTTPError(503, str(exc)) from None
            except ModelError as exc:
                raise _HTTPError(500, str(exc)) from None
            except QueryError as exc:
                raise _HTTPError(500, str(exc)) from None
        finally:
            state.inflight -= 1
            state.metrics.inflight.dec()
        probs = None
        if proba:
            from dartboost.coded import proba_from_raw

            probs = proba_from_raw(res.raw)
        return res, probs

    path_of = {
        "predict": "/predict", "health": "/health", "metrics": "/metrics", "stats": "/stats",
        "v2_live": "/v2/health/live", "v2_ready": "/v2/health/ready", "v2_server": "/v2",
        "v2_model": "/v2/models/{name}", "v2_model_ready": "/v2/models/{name}/ready",
        "v2_infer": "/v2/models/{name}/infer",
    }
    routes = []

    def check_model(request):
        if request.path_params["name"] != state.model_name:
            raise _HTTPError(404, f"no model named {request.path_params['name']!r:.80}; "
                                  f"this server has {state.model_name!r}")

    @endpoint("predict", "POST")
    async def predict(request):
        doc = await read_json(request)
        if not isinstance(doc, dict) or not ({"instances", "X"} & doc.keys()):
            raise _HTTPError(400, 'body must be a JSON object with "instances": [[...], ...]')
        proba = doc.get("proba", False)
        if type(proba) is not bool:
            raise _HTTPError(400, '"proba" must be true or false')
        try:
            X = rows_to_array(doc.get("instances", doc.get("X")), state.n_features,
                              state.feature_names, state.max_rows, state.labels)
        except BadRequest as exc:
            raise _HTTPError(400, str(exc)) from None
        res, probs = await serve(request, X, proba)
        out = {"predictions": np.asarray(res.values).tolist(),
               "approximate": res.approximate.tolist(), "latency_ms": res.latency * 1e3}
        if probs is not None:
            out["probabilities"] = probs.tolist()
            out["classes"] = np.asarray(state.classes).tolist()
        return JSONResponse(out)

    routes.append(predict)

    @endpoint("health", "GET")
    async def health(request):
        h = pool.health()
        doc = {"status": h["status"], "ready": h["ready"], "mode": pool.mode, "k": pool.k,
               "r": pool.r, "workers": pool.n_base + pool.n_extra,
               "worker_pids": sorted(pool.worker_pids().values()),
               "worker_restarts": pool.stats()["worker_restarts"]}
        if "error" in h:
            doc["error"] = h["error"]
        return JSONResponse(doc, status_code=200 if h["ready"] else 503)

    routes.append(health)

    @endpoint("metrics", "GET")
    async def metrics(request):
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    routes.append(metrics)

    @endpoint("stats", "GET")
    async def stats(request):
        st = pool.stats()
        st["http_errors"] = dict(state.errors)
        if state.batcher is not None:  # pool requests that carried several HTTP requests
            st["http_merged_requests"] = state.batcher.merged_requests
        return JSONResponse(st)

    routes.append(stats)

    @endpoint("v2_live", "GET")
    async def v2_live(request):
        return JSONResponse({"live": True})

    routes.append(v2_live)

    @endpoint("v2_ready", "GET")
    async def v2_ready(request):
        ready = pool.health()["ready"]
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    routes.append(v2_ready)

    @endpoint("v2_server", "GET")
    async def v2_server(request):
        import dartboost

        return JSONResponse({"name": "dartboost", "version": dartboost.__version__,
                             "extensions": []})

    routes.append(v2_server)

    @endpoint("v2_model", "GET")
    async def v2_model(request):
        check_model(request)
        p = -1 if state.n_features is None else int(state.n_features)
        outputs = [{"name": "predict", "datatype": "FP64" if state.classes is None else
                    v2_outputs(np.asarray(state.classes)[:1], [False])[0]["datatype"],
                    "shape": [-1]},
                   {"name": "approximate", "datatype": "BOOL", "shape": [-1]}]
        if state.proba:
            outputs.append({"name": "predict_proba", "datatype": "FP64",
                            "shape": [-1, len(state.classes)]})
        meta = {"name": state.model_name, "versions": ["1"], "platform": "dartboost",
                "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, p]}],
                "outputs": outputs,
                "parameters": {"mode": pool.mode, "k": pool.k, "r": pool.r}}
        if state.feature_names is not None:
            meta["parameters"]["feature_names"] = state.feature_names
        return JSONResponse(meta)

    routes.append(v2_model)

    @endpoint("v2_model_ready", "GET")
    async def v2_model_ready(request):
        check_model(request)
        ready = pool.health()["ready"]
        return JSONResponse({"name": state.model_name, "ready": ready},
                            status_code=200 if ready else 503)

    routes.append(v2_model_ready)

    @endpoint("v2_infer", "POST")
    async def v2_infer(request):
        check_model(request)
        doc = await read_json(request)
        try:
            X = v2_inputs_to_array(doc, state.n_features, state.feature_names, state.max_rows,
                                   state.labels)
            proba = wants_proba(doc)
        except BadRequest as exc:
            raise _HTTPError(400, str(exc)) from None
        res, probs = await serve(request, X, proba)
        out = {"model_name": state.model_name, "model_version": "1",
               "outputs": v2_outputs(res.values, res.approximate, probs),
               "parameters": {"approximate_rows": int(res.approximate.sum()),
                              "latency_ms": res.latency * 1e3}}
        if isinstance(doc.get("id"), str):
            out["id"] = doc["id"][:256]
        return JSONResponse(out)

    routes.append(v2_infer)

    async def not_found(request, exc):
        code = getattr(exc, "status_code", 404)
        return error(code, f"no such endpoint: {request.url.path[:200]}" if code == 404
                     else str(getattr(exc, "detail", "error")))

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        if state.close_pool:
            # Graceful: uvicorn has stopped accepting and waited for the
            # requests in flight; now the workers go.
            await asyncio.get_running_loop().run_in_executor(None, pool.close)

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found},
                    lifespan=lifespan)
    app.state.serving = state
    return app


def _check_auth(request, token):
    got = request.headers.get("authorization", "")
    scheme, _, value = got.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token):
        raise _HTTPError(401, "missing or wrong bearer token",
                         {"WWW-Authenticate": 'Bearer realm="dartboost"'})


class PredictionServer:
    """A uvicorn server for :func:`make_app`, bound at construction (port 0: any free one).

    Parameters
    ----------
    pool : CodedPool
    host : str, default="127.0.0.1"
        Bind address (loopback by default).
    port : int, default=8000
    close_pool : bool, default=True
        :meth:`stop` (or a SIGTERM under :meth:`run`) also closes the pool.
    verbose : bool, default=False
        Access log on stderr.
    timeout_keep_alive : float, default=5.0
        Idle keep-alive connections are closed after this many seconds.
    limit_concurrency : int, default=1024
        Open connections at most (uvicorn answers 503 beyond).
    graceful_timeout : float, default=30.0
        On shutdown, seconds to let requests in flight finish.
    loop : {"auto", "asyncio", "uvloop"}, default="auto"
        Event loop: uvicorn's "auto" takes uvloop when it is installed (a
        faster loop written in C; the server is bound by the loop's per-request
        work at high request rates) and asyncio's otherwise.
    **app_kwargs
        Passed to :func:`make_app` (limits, deadlines, auth, model name).
    """

    def __init__(self, pool, host="127.0.0.1", port=8000, close_pool=True, verbose=False,
                 timeout_keep_alive=5.0, limit_concurrency=1024, graceful_timeout=30.0,
                 loop="auto", **app_kwargs):
        import uvicorn

        self.pool = pool
        self.app = make_app(pool, close_pool=close_pool, **app_kwargs)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets
        # whose proto says TCP, and accepted sockets inherit the listener's.
        # Without it every keep-alive response waits ~40 ms for a delayed ACK
        # (Nagle). NODELAY on the listener is inherited on Linux as well.
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self.server_address = self._sock.getsockname()[:2]
        config = uvicorn.Config(
            self.app, log_level="info" if verbose else "warning", access_log=verbose,
            timeout_keep_alive=timeout_keep_alive, limit_concurrency=limit_concurrency,
            timeout_graceful_shutdown=graceful_timeout, lifespan="on", http="auto", loop=loop,
            # No X-Forwarded-* rewriting: one middleware less per request; put a
            # proxy's own access log in front if client addresses matter.
            proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread = None

    @property
    def url(self):
        host, port = self.server_address
        return f"http://{host}:{port}"

    def start(self):
        """Serve in a background thread; returns self once it accepts connections."""
        self._server.config.install_signal_handlers = False  # not the main thread
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]},
                                        name="dartboost-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start within 30 s")
            time.sleep(0.005)
        return self

    def run(self):
        """Serve in this thread until SIGINT/SIGTERM (graceful shutdown), then return.

        uvicorn re-raises the signal it shut down on to the handler it found
        installed; a handler of ours that only records it lets the caller
        finish its own clean-up and exit with status 0.
        """
        import signal

        prev = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                prev[sig] = signal.signal(sig, lambda signum, frame: None)
        try:
            self._server.run(sockets=[self._sock])
        finally:
            for sig, handler in prev.items():
                signal.signal(sig, handler)

    def stop(self):
        """Stop accepting, let requests in flight finish, close the pool (if owned)."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(60)
            self._thread = None
        try:
            self._sock.close()
        except OSError:
            pass
        if self.app.state.serving.close_pool:
            self.pool.close()  # idempotent; the lifespan may already have closed it


def make_server(pool, host="127.0.0.1", port=8000, **kwargs):
    """Create a :class:`PredictionServer` for ``pool`` (bound, not yet serving)."""
    return PredictionServer(pool, host=host, port=port, **kwargs)
