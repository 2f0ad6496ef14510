"""Dask backend of the serving pool: one slot per Dask worker.

Models are installed on every worker once by a worker plugin (Dask runs the
plugin again on workers that join later, so a worker restarted by its nanny is
ready without models travelling with tasks). Tasks are pinned to their slot's
worker. A worker that leaves is noticed by :meth:`DaskBackend.dead_slots`; the
pool then fails the task it was running and calls :meth:`DaskBackend.restart`,
which adopts a worker that is not serving any slot yet (the nanny's
replacement, or a spare).
"""

import threading
import time

from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin

from . import _worker
from ._faults import kill_process

__all__ = ["DaskBackend"]


def _worker_lost(msg):
    from ._errors import WorkerLost

    return WorkerLost(msg)


class _ServingPlugin(WorkerPlugin):
    """Installs a pool's models in the worker process (see module docstring)."""

    def __init__(self, payload, name):
        self.payload = payload
        self.pool_name = name
        self.name = f"dartboost-serving-{name}"

    def setup(self, worker):
        _worker.init_worker(self.payload, name=self.pool_name)

    def teardown(self, worker):
        st = _worker._STATE.pop(self.pool_name, None)
        for f in (st or {}).get("faults", {}).values():
            f.close()


class DaskBackend:
    """Serving workers on a Dask cluster.

    Parameters
    ----------
    payload : dict
        Models (see :func:`dartboost.serving._worker.init_worker`).
    specs : dict
        slot -> FaultSpec; sent with each task, applied on the worker.
    name : str
        Pool name (plugin name on the cluster).
    client : distributed.Client, optional
        Use this client (the cluster is not shut down by the pool).
    address : str, optional
        Scheduler address to connect to. With neither ``client`` nor
        ``address`` a ``LocalCluster`` with one single-threaded worker process
        per slot is started on 127.0.0.1 and owned by the pool.
    """

    name = "dask"

    def __init__(self, payload, specs, name="default", client=None, address=None):
        self.payload = payload
        self.specs = dict(specs)
        self.pool_name = name
        self._client = client
        self._address = address
        self._cluster = None
        self._own_client = False
        self._addr = {}
        self._pids = {}
        self._callbacks = {}
        self._ac = None
        self._ac_lock = threading.Lock()
        self._ac_event = threading.Event()
        self._ac_stop = threading.Event()
        self._collector = None

    def start(self, slots, timeout=120.0):
        slots = list(slots)
        if self._client is None:
            if self._address is None:
                self._cluster = LocalCluster(
                    n_workers=len(slots),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
                self._client = Client(self._cluster)
            else:
                self._client = Client(self._address)
            self._own_client = True
        c = self._client
        c.wait_for_workers(len(slots), timeout=timeout)
        c.register_plugin(_ServingPlugin(self.payload, self.pool_name))
        addrs = sorted(c.nthreads())
        for s, a in zip(slots, addrs):
            self._addr[s] = a
        for s in slots:
            self._pids[s] = self._ping(s, timeout)
        self._ac = as_completed(with_results=True, raise_errors=False)
        self._collector = threading.Thread(target=self._collect, name="dartboost-dask-collect",
                                           daemon=True)
        self._collector.start()
        return dict(self._pids)

    def _ping(self, slot, timeout):
        f = self._client.submit(
            _worker.run_task, "ping", 0, None, slot, self.pool_name,
            workers=[self._addr[slot]], allow_other_workers=False, pure=False,
        )
        return f.result(timeout=timeout)[1]

    def submit(self, slot, kind, index, X, callback):
        # Pinned to the slot's worker, but allowed elsewhere: if that worker
        # dies, the scheduler reruns the task on another one instead of
        # leaving it waiting for a worker that will never come back.
        fut = self._client.submit(
            _worker.run_task, kind, index, X, slot, self.pool_name, self.specs.get(slot),
            workers=[self._addr[slot]], allow_other_workers=True, pure=False,
        )
        with self._ac_lock:
            self._callbacks[fut.key] = callback
            self._ac.add(fut)
            self._ac_event.set()
        return fut

    def _collect(self):
        # One thread gathers finished results in batches through
        # ``as_completed``. Calling ``future.result()`` in per-future done
        # callbacks instead would serialise them on one client thread, and a
        # result lost with its worker would block every callback behind it.
        while not self._ac_stop.is_set():
            with self._ac_lock:
                empty = self._ac.is_empty()
                if empty:
                    self._ac_event.clear()
            if empty:
                self._ac_event.wait(0.1)
                continue
            try:
                batch = self._ac.next_batch(block=True)
            except StopIteration:
                continue
            except Exception:  # noqa: BLE001 - client closing
                if self._ac_stop.is_set():
                    return
                continue
            for fut, value in batch:
                with self._ac_lock:
                    cb = self._callbacks.pop(fut.key, None)
                if cb is None:
                    continue
                if fut.status == "finished":
                    cb(True, value)
                elif fut.status == "cancelled":
                    cb(False, _worker_lost(f"task {fut.key} was cancelled"))
                else:
                    cb(False, value if isinstance(value, BaseException)
                       else _worker_lost(f"task {fut.key} ended as {fut.status}"))

    def pid(self, slot):
        return self._pids.get(slot)

    def kill(self, slot):
        pid = self._pids.get(slot)
        # Only processes on this host can be killed by pid; a remote worker is
        # retired through the scheduler instead.
        if self._cluster is not None and pid is not None:
            return kill_process(pid)
        self._client.retire_workers([self._addr[slot]], close_workers=True)
        return True

    def dead_slots(self):
        live = set(self._client.nthreads())
        return [s for s, a in self._addr.items() if a not in live]

    def restart(self, slot, timeout=120.0):
        spec = self.specs.get(slot)
        if spec is not None:
            self.specs[slot] = spec.healthy()
        deadline = time.monotonic() + timeout
        while True:
            live = set(self._client.nthreads())
            if self._addr.get(slot) in live:
                break  # still (or again) there: a failed ping, not a lost worker
            used = {a for s, a in self._addr.items() if s != slot}
            spare = sorted(live - used)
            if spare:
                self._addr[slot] = spare[0]
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Dask worker came back for slot {slot}")
            time.sleep(0.1)
        self._pids[slot] = self._ping(slot, max(1.0, deadline - time.monotonic()))
        return self._pids[slot]

    def pids(self):
        return dict(self._pids)

    def shutdown(self, timeout=10.0):
        c = self._client
        if c is None:
            return
        self._ac_stop.set()
        self._ac_event.set()
        try:
            if not self._own_client or self._cluster is None:
                c.unregister_worker_plugin(f"dartboost-serving-{self.pool_name}")
        except Exception:  # noqa: BLE001 - best effort on a foreign cluster
            pass
        if self._own_client:
            c.close(timeout=timeout)
        if self._cluster is not None:
            self._cluster.close(timeout=timeout)
        if self._collector is not None:
            self._collector.join(timeout)
        self._client = None
