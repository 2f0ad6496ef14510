"""The client's rounds of calls: one small actor call per worker.

A round that loses a worker (it left the scheduler while we waited, or the
connection to it broke) raises :class:`WorkerLost`, which the fit turns into a
resume from the last checkpoint. Results of every round are per partition
and come back in partition order.
"""
import itertools

import numpy as np

#: Seconds between checks that the workers of a round are still alive.
POLL_SECONDS = 0.5

_fit_ids = itertools.count()


class WorkerLost(RuntimeError):
    """A worker holding training state left during a round."""


class DataLost(RuntimeError):
    """A training partition can no longer be computed (scattered data whose
    only copy was on a lost worker)."""


def worker_address():
    from distributed import get_worker
    return get_worker().address


def new_fit_id():
    import os
    import uuid
    return f"{os.getpid()}-{next(_fit_ids)}-{uuid.uuid4().hex[:8]}"


def _is_worker_loss(exc):
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError
    return isinstance(exc, (KilledWorker, CommClosedError, OSError))


class Rounds:
    """Run per-worker calls over the partitions placed on each worker.

    Each worker of the fit gets one :class:`~dartboost.dask._worker.FitActor`,
    and a round is one actor call per worker: a direct client-to-worker
    message (about 2 ms here), where a task goes through the scheduler
    (about 20 ms); a tree needs one round per split, so this is most of a
    fit's time on small data.

    Parameters
    ----------
    client : distributed.Client
    fit_id : str
        Key of the workers' states.
    placement : dict
        ``{worker_address: [partition indices]}`` (indices ascending).
    """

    def __init__(self, client, fit_id, placement):
        self.client = client
        self.fit_id = fit_id
        self.placement = {addr: sorted(idx) for addr, idx in placement.items()}
        self.n_partitions = sum(len(idx) for idx in self.placement.values())
        self._actor_futures = []
        self.actors = {}
        if self.placement:
            self._start_actors()

    def _start_actors(self):
        from ._worker import FitActor
        self._actor_futures = [
            self.client.submit(FitActor, workers=[addr], allow_other_workers=False,
                               actor=True, pure=False)
            for addr in self.placement]
        try:
            for addr, future in zip(self.placement, self._actor_futures):
                self.actors[addr] = self._wait(future.result, addr, "starting an actor")
        except BaseException:
            self.close()
            raise

    def _wait(self, result, addr, what):
        """``result(timeout=...)`` until it returns; a worker that left the
        scheduler meanwhile (or a broken connection) is a :class:`WorkerLost`."""
        while True:
            try:
                return result(timeout=POLL_SECONDS)
            except TimeoutError:
                if addr not in set(self.client.nthreads()):
                    raise WorkerLost(f"worker {addr} left during {what}") from None
            except Exception as exc:
                from distributed.client import FutureCancelledError
                if _is_worker_loss(exc) or isinstance(exc, FutureCancelledError):
                    raise WorkerLost(f"{what} on {addr}: {exc!r}") from exc
                raise

    def run(self, fn, *args, per_worker=None):
        """``fn(fit_id, indices, *args)`` on every worker; returns the list
        of per-worker results in placement order, with the worker's indices.
        ``per_worker(indices)`` gives extra leading args per worker."""
        calls = []
        for addr, indices in self.placement.items():
            extra = per_worker(indices) if per_worker is not None else ()
            calls.append((addr, self.actors[addr].call(fn, self.fit_id, indices, *extra,
                                                       *args)))
        results = [self._wait(call.result, addr, fn.__name__) for addr, call in calls]
        return list(zip(self.placement.values(), results))

    def close(self):
        """Release the actors (their tasks end; the states stay until
        ``drop_fit``)."""
        if self._actor_futures:
            try:
                self.client.cancel(self._actor_futures)
            except Exception:  # a client or worker that is gone holds nothing
                pass
        self._actor_futures, self.actors = [], {}

    def by_partition(self, fn, *args, per_worker=None):
        """Like :meth:`run` for a ``fn`` returning one item per partition:
        the items in partition order."""
        out = [None] * self.n_partitions
        for indices, items in self.run(fn, *args, per_worker=per_worker):
            for index, item in zip(indices, items):
                out[index] = item
        return out


def sum_histograms(hists):
    """Sum per-partition histograms in partition order (the same floating
    point sums whatever the placement or timing)."""
    total = hists[0].copy()
    for hist in hists[1:]:
        for field in ("sum_gradients", "sum_hessians", "count"):
            total[field] += hist[field]
    return total


def split_by_partition(global_rows, offsets):
    """Sorted global row indices -> ``{partition: local uint32 rows}``."""
    bounds = np.searchsorted(global_rows, offsets)
    return {p: (global_rows[bounds[p]:bounds[p + 1]] - offsets[p]).astype(np.uint32)
            for p in range(len(offsets) - 1)}
