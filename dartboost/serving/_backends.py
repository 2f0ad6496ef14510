"""Worker backends of the serving pool: local processes (loky) and Dask.

A backend owns the worker processes and nothing else: it starts one worker per
*slot*, sends a task to a named slot, kills and restarts a slot, and shuts
everything down. All scheduling (queues, coding groups, time-outs) lives in
:mod:`dartboost.serving._pool`, which talks to backends through four calls:

``start(slots)``, ``submit(slot, kind, index, X, callback)``, ``kill(slot)``,
``restart(slot)``, plus ``dead_slots()`` and ``shutdown()``.

``callback(ok, value)`` is invoked from a backend thread when a task ends, with
``(True, (raw, pid))`` or ``(False, exception)``.
"""

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from joblib.externals.loky.process_executor import ProcessPoolExecutor

from . import _worker
from ._faults import kill_process

__all__ = ["LokyBackend", "make_backend"]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's pid
        return True
    # A killed child stays a zombie until reaped; loky reaps its own, but be
    # exact on Linux.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class LokyBackend:
    """One single-process loky executor per slot.

    Why one executor per worker rather than one shared executor: a shared
    process pool is *broken* as a whole when one worker dies (every pending
    future fails), and tasks cannot be addressed to a particular worker, so a
    slow or hung worker could not be singled out. With one executor per slot a
    crash only fails that slot's task, and the slot is restarted alone.

    Parameters
    ----------
    payload : dict
        Models, shipped once to each worker as initializer arguments.
    specs : dict
        slot -> FaultSpec.
    name : str
        Pool name (for the worker-side state).
    threads : int or None, default=1
        OpenMP/BLAS threads per worker process. Serving runs one process per
        instance, so intra-op threads would only oversubscribe the cores.
        None leaves the libraries' defaults.
    start_method : {"forkserver", "loky", "spawn"} or None
        How worker processes start. Default: ``"forkserver"`` where available,
        with dartboost and the payload's modules preloaded in the fork server,
        so a new or restarted worker is forked from a warm interpreter
        (seconds faster than importing numpy/scikit-learn afresh, which matters
        when a crashed worker must come back). Otherwise loky's own start.
    """

    name = "loky"

    def __init__(self, payload, specs, name="default", threads=1, start_method=None):
        self.threads = threads
        if start_method is None:
            start_method = ("forkserver" if sys.platform.startswith("linux")
                            and "forkserver" in multiprocessing.get_all_start_methods()
                            else "loky")
        self.start_method = start_method
        self._context = None
        if start_method in ("forkserver", "spawn"):
            self._context = multiprocessing.get_context(start_method)
            if start_method == "forkserver":
                self._context.set_forkserver_preload(_preload_modules(payload))
        elif start_method != "loky":
            raise ValueError(f"start_method must be forkserver, spawn or loky, "
                             f"got {start_method!r}")
        self.payload = payload
        self.specs = dict(specs)
        self.pool_name = name
        self._ex = {}
        self._pids = {}
        self._lock = threading.Lock()

    def _new_executor(self, slot, spec):
        return ProcessPoolExecutor(
            max_workers=1,
            initializer=_worker.init_worker,
            initargs=(self.payload, slot, spec, self.pool_name, self.threads, os.getpid()),
            context=self._context,
        )

    def start(self, slots, timeout=120.0):
        """Start a worker per slot (in parallel) and wait until each answers a ping."""
        futs = {}
        for s in slots:
            ex = self._new_executor(s, self.specs.get(s))
            self._ex[s] = ex
            futs[s] = ex.submit(_worker.run_task, "ping", 0, None, s, self.pool_name)
        for s, f in futs.items():
            self._pids[s] = f.result(timeout=timeout)[1]
        return dict(self._pids)

    def submit(self, slot, kind, index, X, callback):
        """Send one task to ``slot``; ``callback(ok, value)`` fires when it ends."""
        with self._lock:
            ex = self._ex[slot]
        try:
            fut = ex.submit(_worker.run_task, kind, index, X, slot, self.pool_name)
        except Exception as exc:  # executor already broken (worker died idle)
            callback(False, exc)
            return None

        def done(f):
            exc = f.exception()
            if exc is None:
                callback(True, f.result())
            else:
                callback(False, exc)

        fut.add_done_callback(done)
        return fut

    def pid(self, slot):
        return self._pids.get(slot)

    def kill(self, slot):
        """SIGKILL the slot's worker process (fault injection / hang recovery)."""
        pid = self._pids.get(slot)
        return pid is not None and kill_process(pid)

    def restart(self, slot, timeout=120.0):
        """Replace the slot's worker with a fresh process (healthy faults)."""
        with self._lock:
            old = self._ex.get(slot)
        if old is not None:
            self.kill(slot)
            old.shutdown(wait=False, kill_workers=True)
        spec = self.specs.get(slot)
        if spec is not None:
            spec = spec.healthy()
            self.specs[slot] = spec
        ex = self._new_executor(slot, spec)
        pid = ex.submit(_worker.run_task, "ping", 0, None, slot, self.pool_name).result(
            timeout=timeout
        )[1]
        with self._lock:
            self._ex[slot] = ex
            self._pids[slot] = pid
        return pid

    def dead_slots(self):
        """Slots whose process is gone (loky also fails their futures itself)."""
        return [s for s, pid in list(self._pids.items()) if not _pid_alive(pid)]

    def pids(self):
        return dict(self._pids)

    def shutdown(self, timeout=10.0):
        """Stop every worker; kill what does not exit within ``timeout``."""
        with self._lock:
            exs = list(self._ex.items())
            self._ex.clear()
        # kill_workers=True: a hung or busy worker must not hold shutdown up.
        with ThreadPoolExecutor(max_workers=max(1, len(exs))) as tp:
            list(tp.map(lambda item: item[1].shutdown(wait=True, kill_workers=True), exs))
        deadline = time.monotonic() + timeout
        for pid in self._pids.values():
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if _pid_alive(pid):
                kill_process(pid)


def _preload_modules(payload):
    """Modules a worker needs: ours plus those defining the payload's models."""
    mods = ["dartboost.serving._worker"]
    objs = [payload.get("base"), payload.get("backup"), payload.get("coded")]
    coded = payload.get("coded")
    objs += list(getattr(coded, "parity_estimators_", []) or [])
    for o in objs:
        if o is not None:
            mods.append(type(o).__module__)
    fn = payload.get("raw_output")
    if fn is not None and getattr(fn, "__module__", None):
        mods.append(fn.__module__)
    # Only importable top-level code; a test module or __main__ is loaded by
    # the worker itself when it unpickles the payload.
    return sorted({m for m in mods if m and m != "__main__" and not m.startswith("test")})


def make_backend(backend, payload, specs, name, client=None, address=None, threads=1,
                 start_method=None):
    """Build the backend named ``backend`` (process, loky, thread, dask) or bind an object."""
    if backend == "process":
        from ._process import ProcessBackend

        return ProcessBackend(payload, specs, name, threads=threads, start_method=start_method)
    if backend == "loky":
        return LokyBackend(payload, specs, name, threads=threads, start_method=start_method)
    if backend == "thread":
        from ._inprocess import ThreadBackend

        return ThreadBackend(payload, specs, name)
    if hasattr(backend, "submit") and hasattr(backend, "bind"):
        return backend.bind(payload, specs, name)  # a backend object (tests: ManualBackend)
    if backend == "dask":
        from ._dask import DaskBackend

        return DaskBackend(payload, specs, name, client=client, address=address)
    raise ValueError(f"backend must be 'process', 'loky', 'thread', 'dask' or a backend "
                     f"object, got {backend!r}")
