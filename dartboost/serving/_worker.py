"""Code that runs inside a serving worker process (loky or Dask).

A worker holds the models once, in module state set when it starts (loky
initializer or Dask worker plugin), and answers small tasks that name which
model to run: the base model, parity model ``j`` or the cheap backup. Nothing
model-sized travels with a task, only the query batch.
"""

import os
import time

import numpy as np

from ._faults import WorkerFaults


def compute_task(payload, kind, index, X):
    """Raw output (n, d) of one task: the base, parity ``index`` or backup model on ``X``.

    The one definition of a task's computation, shared by worker processes and
    the in-process backends.
    """
    if kind == "base":
        raw = payload["raw_output"](payload["base"], X)
    elif kind == "parity":
        raw = payload["coded"].parity_predict(X, index)
    elif kind == "backup":
        raw = payload["raw_output"](payload["backup"], X)
    else:
        raise ValueError(f"unknown task kind {kind!r}")
    raw = np.asarray(raw, dtype=np.float64)
    return raw[:, None] if raw.ndim == 1 else raw

# Per-process state. One process serves one pool (loky), or, on Dask, possibly
# several pools that registered under different names.
_STATE = {}


def init_worker(payload, slot=None, spec=None, name="default", threads=None, parent_pid=None):
    """Install a pool's models (and, on loky, this worker's faults) in this process.

    Parameters
    ----------
    payload : dict
        ``raw_output`` (callable), ``base`` (fitted estimator), ``coded``
        (fitted CodedPredictor or None), ``backup`` (fitted estimator or None).
    slot : int or None
        This process's slot (loky); None on Dask.
    spec : FaultSpec or None
        Faults of this process (loky).
    name : str
        Pool name; lets one Dask worker hold several pools.
    threads : int or None
        Cap OpenMP/BLAS threads in this process (one process per instance
        already uses the cores; more threads would oversubscribe them).
    parent_pid : int or None
        Exit when this process (the pool's) is gone, even mid-task.
    """
    if parent_pid is not None:
        _watch_parent(parent_pid)
    if threads is not None:
        # Runtime cap (the libraries are already loaded, so environment
        # variables would come too late in a forked worker).
        try:
            from threadpoolctl import threadpool_limits

            st_limits = threadpool_limits(int(threads))
        except ImportError:  # pragma: no cover - threadpoolctl ships with sklearn
            st_limits = None
    else:
        st_limits = None
    st = {"payload": payload, "faults": {}, "limits": st_limits}
    if slot is not None:
        st["faults"][slot] = WorkerFaults(spec, slot)
    _STATE[name] = st


def _faults_for(st, slot, spec):
    # On Dask a process learns its slot (and faults) from its first task; a
    # restarted process starts again from the spec the pool sends now.
    f = st["faults"].get(slot)
    if f is None:
        f = WorkerFaults(spec, slot)
        st["faults"][slot] = f
    return f


def run_task(kind, index, X, slot, name="default", spec=None):
    """Run one serving task.

    Parameters
    ----------
    kind : {"base", "parity", "backup", "ping"}
        Which model answers; prefixed with ``"warm:"`` for the warm-up run
        (no injected faults).
    index : int
        Parity model index for ``kind="parity"``.
    X : ndarray of shape (n, p)
        A query batch (or a parity batch).
    slot : int
        The worker slot the task was sent to (selects the injected faults).
    name : str
        Pool name.
    spec : FaultSpec or None
        Faults for ``slot`` if this process has none installed yet (Dask).

    Returns
    -------
    raw : ndarray of shape (n, d) or None
        Raw model output (None for ``ping``).
    pid : int
        This worker's process id (the pool uses it to kill hung workers).
    """
    st = _STATE.get(name)
    if st is None:
        raise RuntimeError(f"serving worker has no pool {name!r} installed")
    if kind == "ping":
        return None, os.getpid()
    # "warm:<kind>" runs the model once before the pool serves: it neither
    # counts as a task for the injected faults nor triggers them.
    warm = kind.startswith("warm:")
    kind = kind[5:] if warm else kind
    faults = None if warm else _faults_for(st, slot, spec)
    t0 = time.perf_counter()
    if faults is not None:
        faults.before()
    raw = compute_task(st["payload"], kind, index, X)
    if faults is not None:
        faults.after(t0, X.shape[0])
    return raw, os.getpid()


def _watch_parent(parent_pid, period=1.0):
    """Exit when the pool's process is gone, even if a task is hanging.

    A worker blocked in a (possibly hung) task never reads the EOF its pipe
    would show after the pool died; this thread makes sure no worker outlives
    its pool, however the pool ended (SIGKILL included).
    """
    import threading

    def run():
        while True:
            time.sleep(period)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pragma: no cover - pid reused by another user
                os._exit(1)

    threading.Thread(target=run, name="dartboost-parent-watch", daemon=True).start()


def serve_loop(conn, payload, slot, spec, name, threads, parent_pid):
    """Main loop of a worker of the ``"process"`` backend.

    Receives ``(kind, index, X)`` on ``conn`` and answers ``("ok", raw)`` or
    ``("err", exception)``; ``None`` or a closed pipe ends the loop.
    """
    init_worker(payload, slot, spec, name, threads)
    _watch_parent(parent_pid)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        kind, index, X = msg
        try:
            raw = run_task(kind, index, X, slot, name)[0]
        except Exception as exc:  # noqa: BLE001 - sent back to the pool
            try:
                conn.send(("err", exc))
            except Exception:  # noqa: BLE001 - unpicklable exception
                conn.send(("err", RuntimeError(repr(exc))))
            continue
        try:
            conn.send(("ok", raw))
        except (BrokenPipeError, OSError):
            break
