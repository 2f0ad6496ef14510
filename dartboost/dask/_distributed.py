"""The client's rounds of tasks: one small task per worker, pinned to it.

A round that loses a worker (it left the scheduler while we waited, or the
task died with it) raises :class:`WorkerLost`, which the fit turns into a
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
    """Run per-worker tasks over the partitions placed on each worker.

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

    def run(self, fn, *args, per_worker=None):
        """``fn(fit_id, indices, *args)`` on every worker; returns the list
        of per-worker results in placement order, with the worker's indices.
        ``per_worker(indices)`` gives extra leading args per worker."""
        from distributed import wait
        from distributed.client import FutureCancelledError
        futures = []
        for addr, indices in self.placement.items():
            extra = per_worker(indices) if per_worker is not None else ()
            futures.append(self.client.submit(
                fn, self.fit_id, indices, *extra, *args, workers=[addr],
                allow_other_workers=False, pure=False))
        try:
            while True:
                try:
                    wait(futures, timeout=POLL_SECONDS)
                    break
                except TimeoutError:
                    alive = set(self.client.nthreads())
                    gone = [addr for addr in self.placement if addr not in alive]
                    if gone:
                        raise WorkerLost(f"worker(s) {gone} left during {fn.__name__}")
            try:
                results = self.client.gather(futures)
            except (FutureCancelledError, Exception) as exc:
                if _is_worker_loss(exc) or isinstance(exc, FutureCancelledError):
                    raise WorkerLost(f"{fn.__name__}: {exc!r}") from exc
                raise
        finally:
            self.client.cancel(futures)
        return list(zip(self.placement.values(), results))

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
