"""CodedPool: resilient prediction serving on worker processes.

Design (after ParM on Clipper, ARCHITECTURE.md section 3)
--------------------------------------------------------
* One *dispatcher thread* owns all scheduling state; callers and backend
  threads only post events to it, so there is no locking in the logic below.
* **Single shared queue.** Requests are cut into batches of at most
  ``batch_size`` rows. A batch goes straight to the shared *base* queue; any
  idle base worker takes the oldest batch. Workers hold one task at a time, so
  a task still in the queue can be cancelled for free.
* **Coding groups** (``mode="coded"``). Consecutive batches form a group of
  ``k``; when the group is full (or ``group_timeout`` after its first batch) it
  is encoded into ``r`` parity batches that go to the *parity* queue, served
  by the parity workers. Every query is answered by its own batch as soon as
  that returns (exact). A batch is answered by decoding (flagged approximate)
  only when it is *lost* (its worker died or hung) or *late* (outstanding
  longer than ``late_factor`` times the 99th percentile of the observed base
  latencies; never before enough latencies are observed), and only when the
  outputs in hand determine it well (the code's ``can_decode``: enough
  answered outputs, decoding amplification within its guard); otherwise the
  pool waits for more. ``decode_wait=0`` is ParM's policy instead (decode as
  soon as any k of the k + r outputs are in).
* **Isolation.** Inputs are checked at ``submit`` (shape, feature count,
  infinities; NaN unless the base accepts it), so a bad query fails alone.
  A batch the model fails on (an exception or non-finite outputs) is split
  into one batch per request and retried, so one bad query never fails
  another. The dispatcher contains every exception: it becomes the error of
  the requests concerned, and an error it cannot attribute marks the pool
  broken (``health()``), failing what is outstanding, never hanging it.
* **Partial groups** (time-out before ``k`` batches came) and batches of
  unequal size are padded with a *filler* row whose base output is known: the
  coded predictor's ``pad_query_`` (training feature means). Filler slots count
  as available, so a partial group is protected like a full one. Groups the
  encoder refuses (e.g. NaN features) are served unprotected (counted in
  ``groups_unprotected``).
* **Failures.** A worker that dies fails its running task; the slot is
  restarted in the background and the batch is retried (at the head of the
  queue, at most ``max_retries`` times) unless decoding answers it first. A
  task running longer than ``hang_timeout`` has its worker killed, then the
  same path applies. Every request also has a deadline (``request_timeout``)
  after which it fails with :class:`QueryTimeout`. So every submitted request
  ends exact, reconstructed-and-flagged, or with an explicit exception.

Baselines share this harness (``mode``): ``"none"`` (no redundancy),
``"equal"`` (the extra workers serve as plain replicas sharing the load),
``"backup"`` (each batch also goes to a cheap backup model; its answer is used,
flagged, if the base has not answered within the median base latency) and
``"replication"`` (each batch runs twice, first response wins).
"""

import heapq
import itertools
import math
import queue
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from dartboost.coded._base import accepts_nan

from ._backends import make_backend
from ._errors import (ModelError, PoolBrokenError, PoolClosedError, QueryError, QueryTimeout,
                      WorkerLost)
from ._faults import FaultSpec
from ._labels import CodesRawOutput, encode_frame, label_columns
from ._metrics import ServingMetrics

__all__ = ["CodedPool", "ServeResult", "QueryError", "QueryTimeout", "PoolClosedError",
           "PoolBrokenError", "ModelError", "MODES"]

MODES = ("coded", "none", "equal", "backup", "replication")
_POOL_IDS = itertools.count()


class ServeResult:
    """Answer to one request.

    Attributes
    ----------
    values : ndarray
        Predictions in the model's label/value space (as ``estimator.predict``).
    raw : ndarray of shape (n, d)
        Raw outputs (margins / regression values) behind ``values``.
    approximate : ndarray of shape (n,), bool
        True for rows answered by reconstruction (coded) or by the backup model.
    latency : float
        Seconds from ``submit`` to the answer.
    """

    __slots__ = ("values", "raw", "approximate", "latency")

    def __init__(self, values, raw, approximate, latency):
        self.values = values
        self.raw = raw
        self.approximate = approximate
        self.latency = latency

    @property
    def degraded(self):
        """True if any row is approximate."""
        return bool(self.approximate.any())

    def __repr__(self):
        return (
            f"ServeResult(n={len(self.approximate)}, approximate={int(self.approximate.sum())}, "
            f"latency={self.latency * 1e3:.2f} ms)"
        )


class _Request:
    __slots__ = ("X", "future", "t0", "n", "raw", "approx", "left", "done")

    def __init__(self, X, t0):
        self.X = X
        self.future = Future()
        self.t0 = t0
        self.n = X.shape[0]
        self.raw = None
        self.approx = np.zeros(self.n, dtype=bool)
        self.left = self.n
        self.done = False


class _Batch:
    __slots__ = ("id", "segs", "X", "t0", "resolved", "group", "pos", "tasks",
                 "attempts", "backup_raw", "deadline", "lost")

    def __init__(self, bid, segs, X, t0):
        self.id = bid
        self.segs = segs  # [(request, start, stop), ...] in row order
        self.X = X
        self.t0 = t0
        self.resolved = False
        self.group = None
        self.pos = 0
        self.tasks = []
        self.attempts = 0
        self.backup_raw = None
        self.deadline = None
        self.lost = False  # a worker died or hung on it: decodable at once


class _Group:
    __slots__ = ("id", "batches", "closed", "done", "t0", "n_max", "fill_x", "fill_raw",
                 "base_out", "par_out", "avail", "tasks", "protected")

    def __init__(self, gid, k, r, t0):
        self.id = gid
        self.batches = []
        self.closed = False
        self.done = False
        self.t0 = t0
        self.n_max = 0
        self.fill_x = None
        self.fill_raw = None
        self.base_out = [None] * k
        self.par_out = [None] * r
        self.avail = np.zeros(k + r, dtype=bool)
        self.tasks = []
        self.protected = False


class _Task:
    __slots__ = ("kind", "index", "X", "batch", "group", "state", "slot", "t_start")

    def __init__(self, kind, X, batch=None, group=None, index=0):
        self.kind = kind  # "base", "parity", "backup", "replica"
        self.index = index
        self.X = X
        self.batch = batch
        self.group = group
        self.state = "queued"  # queued, running, done, failed, cancelled
        self.slot = None
        self.t_start = None

    def obsolete(self):
        if self.kind == "parity":
            return self.group.done
        return self.batch.resolved


def _settle(future, result=None, exc=None):
    """Set a request's future unless its caller cancelled it (then the answer is dropped)."""
    if future.done():  # cancelled by the caller (e.g. an HTTP deadline): nobody waits
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except Exception:  # noqa: BLE001 - InvalidStateError: cancelled concurrently
        pass


def _default_raw_output():
    from dartboost.coded import raw_output

    return raw_output


def _to_prediction_default(estimator, raw):
    """Label/value space from raw outputs, for baselines served without a CodedPredictor."""
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        if raw.shape[1] == 1:
            return np.asarray(classes)[(raw[:, 0] > 0).astype(np.intp)]
        return np.asarray(classes)[np.argmax(raw, axis=1)]
    return raw[:, 0] if raw.shape[1] == 1 else raw


class CodedPool:
    """A pool of worker processes serving one model, with coded redundancy.

    Parameters
    ----------
    model : CodedPredictor or estimator
        A fitted :class:`dartboost.coded.CodedPredictor` (required for
        ``mode="coded"``; its ``k``, ``r``, base estimator and output mapping
        are used in every mode, so baselines answer in the same space) or a
        fitted estimator (baseline modes only).
    mode : {"coded", "none", "equal", "backup", "replication"}, default="coded"
        Redundancy scheme (see module docstring).
    n_workers : int, default=None
        Number of base model instances ``m`` (default: ``k``).
    n_extra : int, default=None
        Extra workers. Defaults: coded ``r * ceil(m / k)`` parity workers;
        equal the same number of plain replicas; backup ``ceil(m / k)``;
        replication ``m``; none 0.
    k : int, default=None
        Group size for ``"equal"``/``"backup"`` sizing when ``model`` is not a
        CodedPredictor (default 2).
    backend : {"process", "loky", "dask"}, default="process"
        Local worker processes with a pipe each (the leanest dispatch), local
        processes each behind a single-worker loky executor, or a Dask cluster.
    client, address : optional
        Dask client or scheduler address (see :class:`~dartboost.serving._dask.DaskBackend`).
    backup : estimator, optional
        Fitted cheap model for ``mode="backup"`` (same raw-output space).
    backup_timeout : "auto", "median" or float, default="auto"
        How long a batch waits for the base before a backup answer is used.
        ``"auto"`` is the coded mode's lateness rule (lost, or later than
        ``late_factor`` x the observed p99), so a healthy pool answers
        exactly; ``"median"`` (the running median latency) or seconds.
    batch_size : int, default=8
        Most rows per batch.
    max_batch_delay : float, default=0.0
        Seconds a partial batch waits for more rows (0: send what is there).
    group_timeout : float, default=0.01
        Seconds a coding group waits for ``k`` batches before it is padded.
    hang_timeout : float, default=10.0
        A task running longer has its worker killed and restarted.
    request_timeout : float, default=60.0
        A request unanswered for longer fails with :class:`QueryTimeout`.
    max_retries : int, default=2
        Retries of a batch whose worker died.
    decode_wait : "auto", float or "median", default="auto"
        Coded mode: when a batch may be answered by decoding. ``"auto"``: once
        it is lost, or late against the observed latency distribution
        (outstanding longer than ``late_factor`` x the 99th percentile of the
        recent base latencies, from batch creation to answer; with fewer than
        20 latencies observed only lost batches are decoded), so a healthy
        pool answers exactly. ``0`` is ParM's policy (decode as soon as any k
        of the k + r outputs are in, trading approximate answers for latency);
        a number of seconds or ``"median"`` (the running median latency) is a
        fixed wait. Lost batches are decodable at once under every setting.
    late_factor : float, default=2.0
        Lateness threshold of ``decode_wait="auto"``, in multiples of the
        observed 99th-percentile latency.
    faults : FaultSpec, list or dict, optional
        Injected faults: one spec for every worker, or per slot (list index /
        dict key = slot; slots ``0..m-1`` are base workers, then extras).
    raw_output : callable, optional
        ``raw_output(estimator, X) -> (n, d)``; default
        :func:`dartboost.coded.raw_output`.
    worker_threads : int or None, default=1
        OpenMP/BLAS threads per local worker (one process per instance already
        uses the cores); None leaves the libraries' defaults.
    start_method : {"forkserver", "loky", "spawn"}, optional
        How local workers start (default: forkserver on Linux, see
        :class:`~dartboost.serving._backends.LokyBackend`).
    start_timeout : float, default=120.0
        Seconds to wait for the workers to start and warm up (every slot runs
        its model once on a filler row before the pool accepts requests, so no
        early request meets a cold worker).
    clock : callable, optional
        ``clock() -> seconds`` for every time-out and latency (default
        :func:`time.perf_counter`). Tests inject a manual clock.
    threaded : bool, default=True
        Run the dispatcher on its own thread. ``False`` (tests): nothing runs
        until :meth:`step` is called, so scheduling is deterministic; blocking
        calls (:meth:`predict`) would wait forever and must not be used.

    Notes
    -----
    The pool starts its workers in the constructor and must be closed
    (:meth:`close` or ``with``); a finaliser kills the workers if it is
    garbage-collected unclosed.
    """

    def __init__(self, model, *, mode="coded", n_workers=None, n_extra=None, k=None,
                 backend="process", client=None, address=None, backup=None,
                 backup_timeout="auto", batch_size=8, max_batch_delay=0.0,
                 group_timeout=0.01, hang_timeout=10.0, request_timeout=60.0,
                 max_retries=2, decode_wait="auto", late_factor=2.0, faults=None,
                 raw_output=None, worker_threads=1, start_method=None, start_timeout=120.0,
                 clock=None, threaded=True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        is_coded = hasattr(model, "parity_predict") and hasattr(model, "decode")
        if mode == "coded" and not is_coded:
            raise TypeError("mode='coded' needs a fitted dartboost.coded.CodedPredictor as model")
        if mode == "backup" and backup is None:
            raise ValueError("mode='backup' needs a fitted cheap model as backup=")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        for nm, v in (("max_batch_delay", max_batch_delay), ("group_timeout", group_timeout),
                      ("hang_timeout", hang_timeout), ("request_timeout", request_timeout)):
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"{nm} must be a non-negative number, got {v!r}")
        if not (decode_wait in ("median", "auto") or
                (isinstance(decode_wait, (int, float)) and decode_wait >= 0)):
            raise ValueError(
                f"decode_wait must be 'auto', 'median' or seconds, got {decode_wait!r}")
        if not (isinstance(late_factor, (int, float)) and late_factor > 0):
            raise ValueError(f"late_factor must be a positive number, got {late_factor!r}")
        if not (backup_timeout in ("median", "auto") or
                (isinstance(backup_timeout, (int, float)) and backup_timeout >= 0)):
            raise ValueError(
                f"backup_timeout must be 'auto', 'median' or seconds, got {backup_timeout!r}")

        self.mode = mode
        self.coded = model if is_coded else None
        self.base = model.base_estimator if is_coded else model
        self.k = int(model.k) if is_coded else int(k or 2)
        self.r = int(model.r) if is_coded else 1
        m = int(n_workers) if n_workers is not None else self.k
        if m < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers!r}")
        if n_extra is None:
            n_extra = {
                "coded": self.r * math.ceil(m / self.k),
                "equal": self.r * math.ceil(m / self.k),
                "backup": math.ceil(m / self.k),
                "replication": m,
                "none": 0,
            }[mode]
        self.n_base = m + n_extra if mode == "equal" else m
        self.n_extra = 0 if mode in ("equal", "none") else int(n_extra)
        if mode in ("coded", "backup", "replication") and self.n_extra < 1:
            raise ValueError(f"mode={mode!r} needs at least one extra worker")
        self.n_features_in_ = getattr(self.base, "n_features_in_", None)
        self.batch_size = batch_size
        self.max_batch_delay = float(max_batch_delay)
        self.group_timeout = float(group_timeout)
        self.hang_timeout = float(hang_timeout)
        self.request_timeout = float(request_timeout)
        self.max_retries = int(max_retries)
        self.backup_timeout = backup_timeout
        self.decode_wait = decode_wait
        self.late_factor = float(late_factor)
        self.backend_name = getattr(backend, "name", backend)
        self.metrics = ServingMetrics()
        self._clock = clock if clock is not None else time.perf_counter
        self._threaded = bool(threaded)
        self._allow_nan = accepts_nan(self.base)
        self._broken = None  # the exception that broke the dispatcher, if any
        self._ready = False

        slots = list(range(self.n_base + self.n_extra))
        self._roles = {s: ("base" if s < self.n_base else "extra") for s in slots}
        specs = self._fault_specs(faults, slots)
        raw_fn = raw_output if raw_output is not None else _default_raw_output()
        # a model with label (string) columns gets them as codes (the HTTP
        # front end encodes them; _labels.py says why); its workers decode
        self.labels = label_columns(self.base)
        if self.labels is not None:
            if mode == "coded":
                raise ValueError(
                    "mode='coded' needs numeric features: parity models sum queries, and "
                    f"this model reads columns {sorted(self.labels)} as labels; serve it "
                    "with mode='replication', 'backup', 'equal' or 'none'")
            raw_fn = CodesRawOutput(raw_fn, self.labels,
                                    getattr(self.base, "feature_names_in_", None))
        payload = {"raw_output": raw_fn, "base": self.base, "backup": backup,
                   "coded": self.coded if mode == "coded" else None}
        name = f"pool{next(_POOL_IDS)}"
        self._backend = make_backend(backend, payload, specs, name, client=client,
                                     address=address, threads=worker_threads,
                                     start_method=start_method)

        # Scheduling state, owned by the dispatcher thread.
        self._events = queue.SimpleQueue()
        self._timers = []
        self._tseq = itertools.count()
        self._queues = {"base": deque(), "extra": deque()}
        self._idle = {"base": deque(), "extra": deque()}
        self._slot_state = {}
        self._running = {}
        self._pending = deque()
        self._pending_rows = 0
        self._flush_at = None
        self._open_group = None
        self._ids = itertools.count()
        self._requests = set()
        # Requests in submit order, for their request_timeout. Every request has
        # the same timeout, so deadlines come in this order: answered ones leave
        # from the front at once. (A heap timer per request kept every answered
        # request, its rows, future and result, alive for the whole timeout: at
        # thousands of requests per second, 10^5 live objects that each garbage
        # collection scanned, and tail latency that grew with the server's uptime.)
        self._expiry = deque()
        # Filler for partial groups: the coded predictor's pad query (training
        # feature means) with its known base output; without one, the most
        # recent exactly answered row (set in _on_result).
        self._fixed_filler = None
        if self.coded is not None and hasattr(self.coded, "pad_query_"):
            self._fixed_filler = (
                np.asarray(self.coded.pad_query_, dtype=np.float64).reshape(1, -1),
                np.asarray(self.coded.pad_output_, dtype=np.float64).reshape(1, -1),
            )
        self._filler = self._fixed_filler
        self._base_lat = deque(maxlen=2000)
        self._median = None
        self._late_after = None  # late_factor x p99 of _base_lat, once known
        self._n_lat = 0
        self._closed = False
        self._next_hang_check = 0.0
        self._submit_lock = threading.Lock()
        self._stop = threading.Event()

        try:
            self._pids = self._backend.start(slots, timeout=start_timeout)
            self._warm_up(slots, start_timeout)
        except BaseException:
            self._backend.shutdown()
            raise
        for s in slots:
            self._slot_state[s] = "idle"
            self._idle[self._roles[s]].append(s)
        self._thread = self._monitor = None
        if self._threaded:
            self._thread = threading.Thread(target=self._loop, name="dartboost-serving",
                                            daemon=True)
            self._monitor = threading.Thread(target=self._watch, name="dartboost-watch",
                                             daemon=True)
            self._thread.start()
            self._monitor.start()
        self._ready = True
        self._finalizer = weakref.finalize(self, CodedPool._finalize, self._backend, self._stop)

    # ------------------------------------------------------------------ API
    @staticmethod
    def _fault_specs(faults, slots):
        if faults is None:
            return {}
        if isinstance(faults, FaultSpec):
            return {s: faults for s in slots}
        if isinstance(faults, dict):
            return {int(s): f for s, f in faults.items() if f is not None}
        return {s: f for s, f in enumerate(faults) if f is not None}

    def _warm_up(self, slots, timeout):
        """Run every slot's model once on a filler row before accepting requests.

        A cold worker (first call: lazily built predictors, page faults, BLAS
        start-up) answers far slower than a warm one; without a warm-up the
        first requests would look late and be decoded approximately.
        """
        if self._fixed_filler is not None:
            row = self._fixed_filler[0]
        elif self.n_features_in_ is not None:
            row = np.zeros((1, int(self.n_features_in_)))
        else:
            return
        tasks = {}
        for s in slots:
            if self._roles[s] == "base" or self.mode == "replication":
                tasks[s] = ("base", 0, row)
            elif self.mode == "backup":
                tasks[s] = ("backup", 0, row)
            elif self.mode == "coded":
                j = (s - self.n_base) % self.r
                try:
                    P = self.coded.encode(np.repeat(row[None], self.k, axis=0))
                except ValueError:
                    continue
                tasks[s] = ("parity", j, np.ascontiguousarray(P[j]))
        warm = getattr(self._backend, "warm_up", None)
        if warm is not None:
            for s, (kind, j, X) in tasks.items():
                warm(s, kind, j, X, timeout)
            return
        done = threading.Event()
        left = [len(tasks)]
        lock = threading.Lock()

        def cb(ok, value):
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
            if not ok:
                self.metrics.add("task_failures")

        if not tasks:
            return
        for s, (kind, j, X) in tasks.items():
            self._backend.submit(s, "warm:" + kind, j, X, cb)
        if not done.wait(timeout):
            raise TimeoutError(f"the workers did not warm up within {timeout} s")

    def _check_X(self, X):
        if self.labels is not None and (hasattr(X, "iloc")
                                        or np.asarray(X).dtype.kind in "OUS"):
            X = encode_frame(X, self.labels, getattr(self.base, "feature_names_in_", None))
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"X must be a numeric array: {exc}") from None
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("X has no rows")
        if self.n_features_in_ is not None and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but the model expects {self.n_features_in_}"
            )
        bad = np.isinf(X) if self._allow_nan else ~np.isfinite(X)
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            what = "infinite values" if self._allow_nan else "NaN or infinite values"
            raise ValueError(f"X contains {what} (first at row {i}, column {j}); "
                             "the model needs finite features")
        return np.ascontiguousarray(X)

    def check_input(self, X):
        """``X`` as the pool's checked float64 2-D array; ``ValueError`` naming the problem.

        What :meth:`submit` checks first, for callers that merge requests
        (the HTTP server's micro-batcher validates each one on its own).
        """
        return self._check_X(X)

    def raise_if_unavailable(self):
        """Raise :class:`PoolClosedError` / :class:`PoolBrokenError` as :meth:`submit` would."""
        if self._closed:
            raise PoolClosedError("the pool is closed")
        if self._broken is not None:
            raise PoolBrokenError(f"the pool is broken: {self._broken!r}")

    def submit(self, X):
        """Queue a request; returns a ``concurrent.futures.Future`` of a :class:`ServeResult`.

        Raises ``ValueError`` at once for a malformed ``X`` and
        :class:`PoolClosedError` after :meth:`close`. The future ends with a
        result or with a :class:`QueryError`, never silently.
        """
        X = self._check_X(X)
        req = _Request(X, self._clock())
        # Checked and queued under the lock close() takes to set _closed, so
        # no request can slip in after close() has drained the event queue.
        with self._submit_lock:
            if self._closed:
                raise PoolClosedError("the pool is closed")
            if self._broken is not None:
                raise PoolBrokenError(f"the pool is broken: {self._broken!r}")
            self._events.put(("submit", req))
        self.metrics.add("requests")
        return req.future

    def predict(self, X, return_result=False):
        """Predict ``X`` through the pool (blocking).

        Returns the predictions, or the whole :class:`ServeResult` with
        ``return_result=True`` (to see which rows are approximate).
        """
        res = self.submit(X).result(timeout=self.request_timeout + 5.0)
        return res if return_result else res.values

    def worker_pids(self):
        """Process id of each slot's worker (slot -> pid)."""
        return dict(self._pids)

    def wait_ready(self, timeout=60.0):
        """Wait until no worker is restarting; returns True if so within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._closed:
                return False
            if "restarting" not in list(self._slot_state.values()) and \
                    not self._backend.dead_slots():
                return True
            time.sleep(0.02)
        return False

    def roles(self):
        """Role of each slot: ``"base"`` or ``"extra"`` (parity / backup / replica)."""
        return dict(self._roles)

    def kill_worker(self, slot):
        """Fault injection: SIGKILL the worker of ``slot`` (it is restarted)."""
        return self._backend.kill(slot)

    def health(self):
        """State of the pool: ``{"status": ..., ...}``.

        ``status`` is ``"ok"`` (serving; all workers up), ``"degraded"``
        (serving while some workers restart), ``"broken"`` (the dispatcher
        hit an error it could not contain; requests fail at once),
        ``"closed"``, or ``"starting"``. ``ready`` is True only for ``"ok"``
        and ``"degraded"``.
        """
        if self._closed:
            status = "closed"
        elif self._broken is not None or (self._thread is not None
                                          and not self._thread.is_alive()):
            status = "broken"
        elif not self._ready:
            status = "starting"
        elif "restarting" in list(self._slot_state.values()):
            status = "degraded"
        else:
            status = "ok"
        out = {"status": status, "ready": status in ("ok", "degraded")}
        if self._broken is not None:
            out["error"] = repr(self._broken)
        return out

    def stats(self):
        """Counters and latency percentiles (see :class:`ServingMetrics`)."""
        out = self.metrics.snapshot()
        out.update(mode=self.mode, k=self.k, r=self.r, n_base=self.n_base,
                   n_extra=self.n_extra, backend=self.backend_name,
                   backup_timeout_ms=None if self._median is None else self._median * 1e3,
                   late_after_ms=None if self._late_after is None else self._late_after * 1e3,
                   status=self.health()["status"])
        return out

    def close(self, timeout=10.0):
        """Fail unanswered requests with :class:`PoolClosedError`, stop all workers."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
        self._events.put(("stop",))
        if self._thread is not None:
            self._thread.join(timeout)
        # A submit that raced with close() is answered too, never dropped;
        # without a dispatcher thread, close() drains the queue itself.
        while True:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                break
            if ev[0] == "submit" and not ev[1].done:
                self._fail_request(ev[1], PoolClosedError("the pool was closed"))
        if self._thread is None or not self._thread.is_alive():
            self._shutdown_requests()
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout)
        self._backend.shutdown(timeout=timeout)
        self._finalizer.detach()

    @staticmethod
    def _finalize(backend, stop):
        stop.set()
        try:
            backend.shutdown()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------- event plumbing
    def _watch(self):
        # Separate thread: on Dask dead_slots() is a scheduler round trip.
        while not self._stop.wait(0.2):
            try:
                dead = self._backend.dead_slots()
            except Exception:  # noqa: BLE001 - e.g. scheduler busy; try again
                continue
            for s in dead:
                self._events.put(("dead", s))

    def _at(self, t, fn, *args):
        heapq.heappush(self._timers, (t, next(self._tseq), fn, args))

    def _loop(self):
        try:
            while True:
                now = self._clock()
                wait = 0.05
                if self._timers:
                    wait = min(wait, max(0.0, self._timers[0][0] - now))
                if self._expiry:
                    wait = min(wait, max(0.0, self._expiry[0].t0 + self.request_timeout - now))
                if self._flush_at is not None and self._flush_at > now:
                    wait = min(wait, self._flush_at - now)
                try:
                    ev = self._events.get(timeout=wait) if wait > 0 else self._events.get_nowait()
                except queue.Empty:
                    ev = None
                if not self._run_once(ev):
                    return
        except BaseException as exc:  # noqa: BLE001 - never die silently
            self._break(exc)

    def step(self, max_rounds=1000):
        """Run the dispatcher until nothing is left to do now (``threaded=False`` only).

        Handles queued events, due timers, batching and dispatch, repeatedly
        while handling them creates more events (bounded by ``max_rounds``).
        Returns the number of rounds run.
        """
        if self._threaded:
            raise RuntimeError("step() is for pools built with threaded=False")
        for s in self._backend.dead_slots():
            self._events.put(("dead", s))
        rounds = 0
        while rounds < max_rounds:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                ev = None
            if ev is None and rounds and not self._work_due():
                break  # (the first round always runs: it also checks for hangs)
            rounds += 1
            try:
                if not self._run_once(ev):
                    break
            except BaseException as exc:  # noqa: BLE001
                self._break(exc)
                break
        return rounds

    def _work_due(self):
        now = self._clock()
        return bool((self._timers and self._timers[0][0] <= now)
                    or (self._expiry and (self._expiry[0].done or
                                          self._expiry[0].t0 + self.request_timeout <= now))
                    or (self._pending and self._queue_open() and (
                        self.max_batch_delay == 0 or self._pending_rows >= self.batch_size
                        or (self._flush_at is not None and now >= self._flush_at)))
                    or any(self._queues[r] and self._idle[r] for r in self._queues))

    def _run_once(self, ev):
        """One dispatcher round; False once a stop event is seen."""
        n = 0
        while ev is not None:
            if ev[0] == "stop":
                self._shutdown_requests()
                return False
            self._guarded(self._handle, ev)
            n += 1
            if n >= 256:
                break
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                ev = None
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn, args = heapq.heappop(self._timers)
            self._guarded(fn, *args)
        self._expire_requests(now)
        if self._pending_rows >= self.batch_size:
            self._flush(force=False)  # full batches held back while the queue was full
        if self._pending and (self.max_batch_delay == 0 or
                              (self._flush_at is not None and now >= self._flush_at)):
            # Adaptive batching: a partial batch leaves only when a base
            # worker would take it at once; while all are busy, rows keep
            # accumulating into fuller batches (they would wait anyway).
            if self.max_batch_delay == 0 or \
                    len(self._queues["base"]) < len(self._idle["base"]):
                self._flush(force=True)
        if now >= self._next_hang_check:
            self._check_hangs(now)
            self._next_hang_check = now + 0.05
        self._dispatch()
        return True

    def _guarded(self, fn, *args):
        """Run a handler; an exception fails the requests it concerns, not the pool."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - contained here, by design
            self.metrics.add("internal_errors")
            reqs = self._affected(fn, args)
            if reqs is None:
                raise  # nothing to attribute it to: the pool is broken
            err = QueryError(f"internal error while serving this request: {exc!r}")
            err.__cause__ = exc
            for req in reqs:
                if not req.done:
                    self._fail_request(req, err)

    @staticmethod
    def _affected(fn, args):
        """Requests an exception in ``fn(*args)`` concerns, or None if unknown."""
        objs = list(args)
        if args and isinstance(args[0], tuple):  # an event
            objs = list(args[0][1:])
        reqs = []
        for o in objs:
            if isinstance(o, _Request):
                reqs.append(o)
            elif isinstance(o, _Task):
                objs += [o.batch] if o.batch is not None else [o.group]
            elif isinstance(o, _Batch):
                reqs += [seg[0] for seg in o.segs]
            elif isinstance(o, _Group):
                reqs += [seg[0] for b in o.batches for seg in b.segs]
        return reqs or None

    def _break(self, exc):
        """The dispatcher cannot go on: fail everything outstanding, refuse new work."""
        self._broken = exc
        err = PoolBrokenError(f"the serving pool's dispatcher failed: {exc!r}")
        for req in list(self._requests):
            if not req.done:
                self._fail_request(req, err)
        for item in list(self._pending):
            if not item[0].done:
                self._fail_request(item[0], err)
        while True:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                break
            if ev[0] == "submit" and not ev[1].done:
                self._fail_request(ev[1], err)

    def _handle(self, ev):
        kind = ev[0]
        if kind == "submit":
            self._on_submit(ev[1])
        elif kind == "done":
            self._on_done(*ev[1:])
        elif kind == "dead":
            self._on_dead(ev[1])
        elif kind == "restarted":
            self._on_restarted(*ev[1:])

    # -------------------------------------------------------------- batching
    def _on_submit(self, req):
        self._requests.add(req)
        self._expiry.append(req)
        self._pending.append([req, 0])
        self._pending_rows += req.n
        self._flush(force=False)

    def _queue_open(self):
        """Whether the base queue takes another batch now.

        Batches are cut only while fewer than one per base worker wait: rows
        beyond that stay pending, where a large request cannot get ahead of
        later small ones (see :meth:`_flush`), and where they accumulate into
        fuller batches while every worker is busy.
        """
        return len(self._queues["base"]) < max(1, self.n_base)

    def _flush(self, force):
        while self._queue_open() and (self._pending_rows >= self.batch_size
                                      or (force and self._pending_rows)):
            take = min(self.batch_size, self._pending_rows)
            segs, parts = [], []
            while take:
                item = self._pending[0]
                req, start = item
                n = min(take, req.n - start)
                segs.append((req, start, start + n))
                parts.append(req.X[start:start + n])
                take -= n
                self._pending_rows -= n
                if start + n == req.n:
                    self._pending.popleft()
                else:
                    item[1] = start + n
                    # Round robin: a request with rows left after filling a
                    # batch goes behind the requests that wait, so one huge
                    # request does not hold small ones back by its whole size.
                    self._pending.rotate(-1)
            X = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self._new_batch(_Batch(next(self._ids), segs, X, self._clock()))
        # The delay runs from the oldest row still waiting, not the newest:
        # a steady trickle of arrivals must not hold a partial batch back.
        self._flush_at = (min(item[0].t0 for item in self._pending) + self.max_batch_delay
                          if self._pending else None)

    def _new_batch(self, b):
        base = _Task("base", b.X, batch=b)
        b.tasks.append(base)
        self._queues["base"].append(base)
        if self.mode == "coded":
            g = self._open_group
            if g is None:
                g = self._open_group = _Group(next(self._ids), self.k, self.r, b.t0)
                self.metrics.add("groups")
                self._at(b.t0 + self.group_timeout, self._group_timeout, g)
            b.group, b.pos = g, len(g.batches)
            g.batches.append(b)
            if len(g.batches) == self.k:
                self._close_group(g)
        elif self.mode == "replication":
            rep = _Task("replica", b.X, batch=b)
            b.tasks.append(rep)
            self._queues["extra"].append(rep)
        elif self.mode == "backup":
            bk = _Task("backup", b.X, batch=b)
            b.tasks.append(bk)
            self._queues["extra"].append(bk)
            b.deadline = b.t0 + self._backup_wait()
            if np.isfinite(b.deadline):
                self._at(b.deadline, self._backup_deadline, b)

    def _backup_wait(self):
        if self.backup_timeout == "auto":
            return self._late_after if self._late_after is not None else np.inf
        return self._wait_for(self.backup_timeout)

    def _wait_for(self, setting):
        if setting != "median":
            return float(setting)
        if self._median is None:
            # No base latency observed yet: wait for the base (a long
            # deadline) rather than guess a time-out.
            return self.request_timeout
        return self._median

    # --------------------------------------------------------- coding groups
    def _group_timeout(self, g):
        if not g.closed and self._open_group is g:
            self.metrics.add("groups_partial")
            self._close_group(g)

    def _close_group(self, g):
        g.closed = True
        if self._open_group is g:
            self._open_group = None
        n_max = max(b.X.shape[0] for b in g.batches)
        need_fill = len(g.batches) < self.k or any(b.X.shape[0] < n_max for b in g.batches)
        if need_fill and self._filler is None:
            # Nothing known to pad with yet: serve this group unprotected.
            self.metrics.add("groups_unprotected")
            g.done = all(b.resolved for b in g.batches)
            return
        g.n_max = n_max
        if self._filler is not None:
            g.fill_x, g.fill_raw = self._filler
        Xs = []
        for j in range(self.k):
            if j < len(g.batches):
                X = g.batches[j].X
                if X.shape[0] < n_max:
                    X = np.concatenate([X, np.repeat(g.fill_x, n_max - X.shape[0], axis=0)])
            else:
                X = np.repeat(g.fill_x, n_max, axis=0)
                g.base_out[j] = np.repeat(g.fill_raw, n_max, axis=0)
                g.avail[j] = True
            Xs.append(X)
        try:
            P = np.asarray(self.coded.encode(np.stack(Xs)))
        except ValueError:
            # e.g. a query with NaN features: the base may accept missing
            # values, the encoder does not. Serve the group unprotected.
            self.metrics.add("groups_unprotected")
            g.done = all(b.resolved for b in g.batches)
            return
        g.protected = True
        for j in range(self.r):
            t = _Task("parity", np.ascontiguousarray(P[j]), group=g, index=j)
            g.tasks.append(t)
            self._queues["extra"].append(t)
        # Batches that already came back exact are available for decoding.
        for j, b in enumerate(g.batches):
            if g.base_out[j] is not None:
                g.base_out[j] = self._pad(g, g.base_out[j])
        self._check_group(g)

    def _pad(self, g, raw):
        if raw.shape[0] == g.n_max:
            return raw
        return np.concatenate([raw, np.repeat(g.fill_raw, g.n_max - raw.shape[0], axis=0)])

    def _decode_due(self, b, now):
        """When batch ``b`` may be answered by decoding (inf: not yet known)."""
        if b.lost or self.decode_wait == 0:
            return now
        if self.decode_wait == "auto":
            return b.t0 + self._late_after if self._late_after is not None else np.inf
        return b.t0 + self._wait_for(self.decode_wait)

    def _check_group(self, g):
        if g.done:
            return
        if all(b.resolved for b in g.batches):
            self._finish_group(g)
            return
        if not g.protected or not self.coded.can_decode(g.avail):
            return  # the outputs in hand do not determine the missing ones well: wait
        now = self._clock()
        dues = [self._decode_due(b, now) for b in g.batches if not b.resolved]
        if min(dues) > now:
            if np.isfinite(min(dues)):
                self._at(min(dues), self._check_group, g)
            return
        k, r, n, d = self.k, self.r, g.n_max, g.fill_raw.shape[1] if g.fill_raw is not None else None
        if d is None:
            d = next(o for o in g.base_out + g.par_out if o is not None).shape[1]
        base = np.full((k, n, d), np.nan)
        for j in range(k):
            if g.avail[j]:
                base[j] = g.base_out[j]
        par = np.full((r, n, d), np.nan)
        for j in range(r):
            if g.avail[k + j]:
                par[j] = g.par_out[j]
        try:
            outs, rec, status = self.coded.decode(base, par, g.avail.copy(), return_status=True)
        except Exception:  # noqa: BLE001 - the batches' own answers still come
            self.metrics.add("decode_errors")
            g.protected = False
            return
        self.metrics.add("decodes")
        for j, b in enumerate(g.batches):
            if b.resolved or self._decode_due(b, now) > now:
                continue
            if rec[j] and status[j] != 1:
                continue  # never answer with a default-filled slot; wait instead
            self._resolve(b, np.asarray(outs[j][: b.X.shape[0]]), approx=bool(rec[j]),
                          source="rows_reconstructed" if rec[j] else "rows_exact")
        if all(b.resolved for b in g.batches):
            self._finish_group(g)
        else:
            later = [self._decode_due(b, now) for b in g.batches if not b.resolved]
            if later and np.isfinite(min(later)) and min(later) > now:
                self._at(min(later), self._check_group, g)

    def _finish_group(self, g):
        g.done = True
        for t in g.tasks:
            if t.state == "queued":
                t.state = "cancelled"
        for b in g.batches:
            self._cancel_batch_tasks(b)

    # ------------------------------------------------------------- dispatch
    def _dispatch(self):
        for role in ("base", "extra"):
            q, idle = self._queues[role], self._idle[role]
            while q and idle:
                t = q.popleft()
                if t.state != "queued":
                    continue
                if t.obsolete():
                    t.state = "cancelled"
                    self.metrics.add("tasks_cancelled")
                    continue
                slot = idle.popleft()
                self._start(t, slot)

    def _start(self, t, slot):
        t.state, t.slot, t.t_start = "running", slot, self._clock()
        self._slot_state[slot] = "busy"
        self._running[slot] = t
        self.metrics.add("tasks_sent")
        kind = "base" if t.kind == "replica" else t.kind
        ev = self._events

        def cb(ok, value, t=t, slot=slot):
            ev.put(("done", t, slot, ok, value))

        self._backend.submit(slot, kind, t.index, t.X, cb)

    def _release(self, slot):
        if self._slot_state.get(slot) == "busy":
            self._slot_state[slot] = "idle"
            self._idle[self._roles[slot]].append(slot)
        self._running.pop(slot, None)

    # ----------------------------------------------------------- completion
    def _on_done(self, t, slot, ok, value):
        if t.state != "running" or self._running.get(slot) is not t:
            return  # already failed over (dead/hung worker); a late echo
        t.state = "done" if ok else "failed"
        self.metrics.add("busy_s_" + self._roles[slot], self._clock() - t.t_start)
        if ok:
            self._release(slot)
            raw = np.asarray(value[0], dtype=np.float64)
            if raw.ndim == 1:
                raw = raw[:, None]
            if raw.ndim == 2 and raw.shape[0] == t.X.shape[0] and np.isfinite(raw).all():
                self._on_result(t, raw)
                return
            # A model output that is not a finite (n, d) array is this
            # task's failure (its rows' fault), never an answer.
            ok, value = False, ModelError(
                f"the model gave a non-finite or mis-shaped output {raw.shape} for a "
                f"batch of {t.X.shape[0]} rows")
        self.metrics.add("task_failures")
        worker_lost = isinstance(value, (BrokenProcessPool, WorkerLost)) or \
            type(value).__name__ in ("KilledWorker", "CommClosedError", "CancelledError")
        if worker_lost:
            self._running.pop(slot, None)
            self._restart(slot)
        else:
            self._release(slot)
        self._on_failure(t, value, worker_lost)

    def _on_result(self, t, raw):
        now = self._clock()
        if t.kind == "parity":
            g = t.group
            if not g.done:
                g.par_out[t.index] = raw
                g.avail[self.k + t.index] = True
                self._check_group(g)
            else:
                self.metrics.add("tasks_wasted")
            return
        b = t.batch
        if t.kind == "backup":
            if b.resolved:
                self.metrics.add("tasks_wasted")
            elif now >= b.deadline or b.lost:
                self._resolve(b, raw, approx=True, source="rows_backup")
            else:
                b.backup_raw = raw
            return
        # base or replica: an exact answer
        self._base_lat.append(now - b.t0)
        self._n_lat += 1
        if self._n_lat >= 20 and (self._median is None or self._n_lat % 20 == 0):
            lat = np.asarray(self._base_lat)
            self._median = float(np.median(lat))
            self._late_after = self.late_factor * float(np.quantile(lat, 0.99))
        if self._fixed_filler is None:
            self._filler = (b.X[-1:].copy(), raw[-1:].copy())
        g = b.group
        if g is not None and not g.done:
            g.base_out[b.pos] = self._pad(g, raw) if g.protected else raw
            g.avail[b.pos] = True
        if b.resolved:
            self.metrics.add("tasks_wasted")
        else:
            self._resolve(b, raw, approx=False, source="rows_exact")
        if g is not None and g.closed:
            self._check_group(g)

    def _on_failure(self, t, exc, worker_lost):
        if t.kind == "parity":
            return  # the group decodes from base outputs or not at all
        b = t.batch
        if b.resolved:
            return
        if t.kind == "backup":
            return
        if worker_lost:
            b.lost = True
            if b.backup_raw is not None:
                self._resolve(b, b.backup_raw, approx=True, source="rows_backup")
                return
            g = b.group
            if g is not None and g.closed:
                self._check_group(g)  # a lost batch may be decoded at once
                if b.resolved:
                    return
        others = [o for o in b.tasks if o is not t and o.kind in ("base", "replica")
                  and o.state in ("queued", "running")]
        if others:
            return  # the replica / a retry may still answer
        if worker_lost and b.attempts < self.max_retries:
            b.attempts += 1
            self.metrics.add("retries")
            nt = _Task("base", b.X, batch=b)
            b.tasks.append(nt)
            self._queues["base"].appendleft(nt)
            return
        if b.backup_raw is not None:
            self._resolve(b, b.backup_raw, approx=True, source="rows_backup")
            return
        if len(b.segs) > 1:
            # Several requests share the batch and one of them may be what the
            # model fails on: retry each request on its own, so one bad query
            # never fails another's.
            self._split_batch(b)
            return
        g = b.group
        if worker_lost and g is not None and g.protected and not g.done and any(
                pt.state in ("queued", "running") for pt in g.tasks):
            return  # reconstruction may still come; the request deadline bounds the wait
        if isinstance(exc, QueryError) and not worker_lost:
            err = ModelError(str(exc))
        elif worker_lost:
            err = QueryError(f"batch failed after {b.attempts} retries: {exc!r}")
        else:
            err = ModelError(f"the model failed on this request: {exc!r}")
        self._fail_batch(b, err)

    def _split_batch(self, b):
        """Replace a failed multi-request batch by one unprotected batch per request."""
        self.metrics.add("batch_splits")
        b.resolved = True  # answered through its parts; its group no longer waits on it
        self._cancel_batch_tasks(b)
        row = 0
        for req, start, stop in b.segs:
            n = stop - start
            part = _Batch(next(self._ids), [(req, start, stop)], b.X[row:row + n], b.t0)
            row += n
            if req.done:
                continue
            task = _Task("base", part.X, batch=part)
            part.tasks.append(task)
            self._queues["base"].appendleft(task)
        if b.group is not None:
            self._check_group(b.group)

    def _backup_deadline(self, b):
        if not b.resolved and b.backup_raw is not None:
            self._resolve(b, b.backup_raw, approx=True, source="rows_backup")

    # ------------------------------------------------------ faults / timers
    def _check_hangs(self, now):
        for slot, t in list(self._running.items()):
            if now - t.t_start > self.hang_timeout:
                self._backend.kill(slot)
                self._on_done(t, slot, False, WorkerLost(f"worker {slot} hung for "
                                                          f"{now - t.t_start:.1f} s"))

    def _on_dead(self, slot):
        state = self._slot_state.get(slot)
        if state in (None, "restarting"):
            return
        t = self._running.get(slot)
        if t is not None:
            self._on_done(t, slot, False, WorkerLost(f"worker {slot} died"))
        else:
            try:
                self._idle[self._roles[slot]].remove(slot)
            except ValueError:
                pass
            self._restart(slot)

    def _restart(self, slot):
        self._slot_state[slot] = "restarting"
        self.metrics.add("worker_restarts")
        ev, backend = self._events, self._backend

        def work():
            try:
                ev.put(("restarted", slot, backend.restart(slot), None))
            except Exception as exc:  # noqa: BLE001 - reported to the dispatcher
                ev.put(("restarted", slot, None, exc))

        if not self._threaded:
            work()  # deterministic: the restarted event is handled on the next step
            return
        threading.Thread(target=work, name=f"dartboost-restart-{slot}", daemon=True).start()

    def _on_restarted(self, slot, pid, exc):
        if exc is not None or pid is None:
            if not self._closed:
                self._restart(slot)  # keep trying; requests are bounded by their deadline
            return
        self._pids[slot] = pid
        self._slot_state[slot] = "idle"
        self._idle[self._roles[slot]].append(slot)

    def _expire_requests(self, now):
        """Drop answered requests from the front of the expiry queue; time out late ones."""
        q = self._expiry
        while q and (q[0].done or q[0].t0 + self.request_timeout <= now):
            req = q.popleft()
            if not req.done:
                self._guarded(self._expire, req)

    def _expire(self, req):
        if not req.done:
            self._fail_request(req, QueryTimeout(
                f"no answer within request_timeout={self.request_timeout} s"))

    # ------------------------------------------------------------ answering
    def _cancel_batch_tasks(self, b):
        for t in b.tasks:
            if t.state == "queued":
                t.state = "cancelled"
                self.metrics.add("tasks_cancelled")

    def _resolve(self, b, raw, approx, source):
        b.resolved = True
        self._cancel_batch_tasks(b)
        self.metrics.add(source, b.X.shape[0])
        row = 0
        for req, start, stop in b.segs:
            n = stop - start
            if not req.done:
                if req.raw is None:
                    req.raw = np.empty((req.n, raw.shape[1]), dtype=np.float64)
                req.raw[start:stop] = raw[row:row + n]
                req.approx[start:stop] = approx
                req.left -= n
                if req.left == 0:
                    self._complete(req)
            row += n

    def _complete(self, req):
        req.done = True
        self._requests.discard(req)
        try:
            if self.coded is not None:
                values = self.coded.outputs_to_prediction(req.raw)
            else:
                values = _to_prediction_default(self.base, req.raw)
        except Exception as exc:  # noqa: BLE001 - surfaced to the caller
            self._fail_request(req, QueryError(f"could not convert outputs: {exc!r}"))
            return
        lat = self._clock() - req.t0
        self.metrics.record_latency(lat)
        self.metrics.add("requests_ok")
        _settle(req.future, result=ServeResult(values, req.raw, req.approx, lat))

    def _fail_batch(self, b, exc):
        b.resolved = True
        self._cancel_batch_tasks(b)
        self.metrics.add("rows_failed", b.X.shape[0])
        for req, _, _ in b.segs:
            if not req.done:
                self._fail_request(req, exc)

    def _fail_request(self, req, exc):
        req.done = True
        self._requests.discard(req)
        self.metrics.add("requests_failed")
        _settle(req.future, exc=exc)

    def _shutdown_requests(self):
        for req in list(self._requests):
            if not req.done:
                self._fail_request(req, PoolClosedError("the pool was closed before answering"))
        for item in self._pending:
            if not item[0].done:
                self._fail_request(item[0], PoolClosedError("the pool was closed"))
