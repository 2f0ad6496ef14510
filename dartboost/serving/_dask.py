"""Dask backend of the serving pool: one slot per Dask worker.

Models are installed on every worker once by a worker plugin (Dask runs the
plugin again on workers that join later, so a worker restarted by its nanny is
ready without models travelling with tasks). Tasks are pinned to their slot's
worker. A worker that leaves is noticed by :meth:`DaskBackend.dead_slots`; the
pool then fails the task it was running and calls :meth:`DaskBackend.restart`,
which adopts a worker that is not serving any slot yet (the nanny's
replacement, or a spare).
"""

import time

from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from . import _worker
from ._faults import kill_process

__all__ = ["DaskBackend"]


def _worker_lost(msg):
    from ._pool import WorkerLost

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
        return dict(self._pids)

    def _ping(self, slot, timeout):
        f = self._client.submit(
            _worker.run_task, "ping", 0, None, slot, self.pool_name,
            workers=[self._addr[slot]], allow_other_workers=False, pure=False,
        )
        return f.result(timeout=timeout)[1]

    def submit(self, slot, kind, index, X, callback):
        fut = self._client.submit(
            _worker.run_task, kind, index, X, slot, self.pool_name, self.specs.get(slot),
            workers=[self._addr[slot]], allow_other_workers=False, pure=False,
        )

        def done(f):
            # Runs in a client thread once the future is done; result() then
            # only fetches the finished value (no timeout: a zero time-out
            # makes distributed give up before the value arrives).
            try:
                if f.status == "cancelled":
                    raise _worker_lost(f"task on Dask slot {slot} was cancelled")
                value = f.result()
            except BaseException as exc:  # noqa: BLE001 - reported to the pool
                callback(False, exc)
                return
            callback(True, value)

        fut.add_done_callback(done)
        return fut

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
        try:
            if not self._own_client or self._cluster is None:
                c.unregister_worker_plugin(f"dartboost-serving-{self.pool_name}")
        except Exception:  # noqa: BLE001 - best effort on a foreign cluster
            pass
        if self._own_client:
            c.close(timeout=timeout)
        if self._cluster is not None:
            self._cluster.close(timeout=timeout)
        self._client = None
