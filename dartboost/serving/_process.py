"""The ``"process"`` backend: one worker process per slot, one pipe each.

This is the default local backend. Compared with one loky executor per slot
(``backend="loky"``), it needs no queue-management and feeder threads per
worker: a task is one ``send`` on the slot's pipe and one receiver thread waits
on all pipes at once, so the dispatching process spends a fraction of the CPU
per task (it shares two cores with the workers on small hosts). A worker's
death shows as end-of-file on its pipe at once.
"""

import multiprocessing
import os
import sys
import threading
import time
from multiprocessing.connection import wait

from . import _worker
from ._backends import _pid_alive, _preload_modules
from ._errors import WorkerLost
from ._faults import kill_process

__all__ = ["ProcessBackend"]


def _lost(msg):
    return WorkerLost(msg)


class ProcessBackend:
    """Worker processes with a pipe each (see module docstring).

    Parameters
    ----------
    payload : dict
        Models, sent once to each worker when it starts.
    specs : dict
        slot -> FaultSpec.
    name : str
        Pool name.
    threads : int or None, default=1
        OpenMP/BLAS threads per worker.
    start_method : {"forkserver", "spawn"} or None
        Default ``"forkserver"`` on Linux (dartboost and the models' modules
        preloaded in the fork server, so workers start and restart in a
        fraction of a second), else ``"spawn"``.
    """

    name = "process"

    def __init__(self, payload, specs, name="default", threads=1, start_method=None):
        if start_method is None:
            start_method = ("forkserver" if sys.platform.startswith("linux")
                            and "forkserver" in multiprocessing.get_all_start_methods()
                            else "spawn")
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(_preload_modules(payload))
        self.start_method = start_method
        self.payload = payload
        self.specs = dict(specs)
        self.pool_name = name
        self.threads = threads
        self._lock = threading.Lock()
        self._procs = {}
        self._conns = {}
        self._pids = {}
        self._cbs = {}
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._stop = False
        self._receiver = None

    # ------------------------------------------------------------ processes
    def _spawn(self, slot, spec):
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(
            target=_worker.serve_loop,
            args=(child, self.payload, slot, spec, self.pool_name, self.threads, os.getpid()),
            name=f"dartboost-worker-{slot}", daemon=True,
        )
        p.start()
        child.close()
        return p, parent

    @staticmethod
    def _await_ready(p, conn, timeout):
        if not conn.poll(timeout):
            p.kill()
            raise TimeoutError(f"worker {p.name} did not start within {timeout} s")
        try:
            tag, pid = conn.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"worker {p.name} died while starting "
                               f"(exit code {p.exitcode})") from exc
        return pid

    def start(self, slots, timeout=120.0):
        started = {s: self._spawn(s, self.specs.get(s)) for s in slots}
        try:
            for s, (p, conn) in started.items():
                self._pids[s] = self._await_ready(p, conn, timeout)
                self._procs[s], self._conns[s] = p, conn
        except BaseException:
            for p, _ in started.values():
                p.kill()
            raise
        self._receiver = threading.Thread(target=self._receive, name="dartboost-receiver",
                                          daemon=True)
        self._receiver.start()
        return dict(self._pids)

    # ---------------------------------------------------------------- tasks
    def submit(self, slot, kind, index, X, callback):
        with self._lock:
            conn = self._conns.get(slot)
            self._cbs[slot] = callback
        try:
            conn.send((kind, index, X))
        except (OSError, ValueError, AttributeError) as exc:
            with self._lock:
                cb = self._cbs.pop(slot, None)
            if cb is not None:
                cb(False, _lost(f"worker {slot} is gone: {exc!r}"))

    def _receive(self):
        while not self._stop:
            with self._lock:
                by_conn = {c: s for s, c in self._conns.items() if c is not None}
            try:
                ready = wait(list(by_conn) + [self._wake_r], timeout=0.5)
            except OSError:
                continue  # a pipe was closed under us by restart(); rebuild the list
            for c in ready:
                if c is self._wake_r:
                    try:
                        self._wake_r.recv()
                    except (EOFError, OSError):
                        return
                    continue
                slot = by_conn[c]
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    with self._lock:
                        if self._conns.get(slot) is c:
                            self._conns[slot] = None  # dead; restart() installs a new one
                        cb = self._cbs.pop(slot, None)
                    if cb is not None:
                        cb(False, _lost(f"worker {slot} died"))
                    continue
                with self._lock:
                    cb = self._cbs.pop(slot, None)
                if cb is None:
                    continue
                if msg[0] == "ok":
                    cb(True, (msg[1], self._pids.get(slot)))
                else:
                    cb(False, msg[1])

    def _wake(self):
        try:
            self._wake_w.send(None)
        except OSError:
            pass

    # ---------------------------------------------------- faults / recovery
    def pid(self, slot):
        return self._pids.get(slot)

    def pids(self):
        return dict(self._pids)

    def kill(self, slot):
        pid = self._pids.get(slot)
        return pid is not None and kill_process(pid)

    def restart(self, slot, timeout=120.0):
        with self._lock:
            old_p, old_c = self._procs.get(slot), self._conns.get(slot)
            self._conns[slot] = None
            self._cbs.pop(slot, None)
        if old_p is not None:
            old_p.kill()
            old_p.join(5)
        if old_c is not None:
            old_c.close()
        spec = self.specs.get(slot)
        if spec is not None:
            spec = spec.healthy()
            self.specs[slot] = spec
        p, conn = self._spawn(slot, spec)
        pid = self._await_ready(p, conn, timeout)
        with self._lock:
            self._procs[slot], self._conns[slot], self._pids[slot] = p, conn, pid
        self._wake()
        return pid

    def dead_slots(self):
        with self._lock:
            procs = list(self._procs.items())
        return [s for s, p in procs if not p.is_alive()]

    def shutdown(self, timeout=10.0):
        with self._lock:
            conns = dict(self._conns)
            procs = dict(self._procs)
        for c in conns.values():
            if c is not None:
                try:
                    c.send(None)  # polite stop: finish nothing more, exit
                except OSError:
                    pass
        deadline = time.monotonic() + min(timeout, 2.0)
        for p in procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs.values():
            if p.is_alive():  # hung or busy: do not wait for it
                p.kill()
                p.join(timeout)
        for pid in self._pids.values():
            if _pid_alive(pid):
                kill_process(pid)
        self._stop = True
        self._wake()
        if self._receiver is not None:
            self._receiver.join(timeout)
        for c in conns.values():
            if c is not None:
                c.close()
