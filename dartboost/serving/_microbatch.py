"""Micro-batching of small concurrent HTTP requests into one pool request.

The pool already packs the rows of concurrent requests into shared model
batches, but it pays per *request*: a future, an event for the dispatcher
thread, bookkeeping there, and a cross-thread wake-up of the event loop for
each answer. At thousands of single-row requests per second on two cores
that per-request work, and the GIL hand-offs between the event loop, the
dispatcher and the model thread, are most of the server's CPU. Requests whose
handlers run in the same event-loop iteration are therefore merged here, in
the event loop, into one pool request, and its answer is split back; no
request waits for a timer (a merge is flushed at the end of the current loop
iteration), and while ``max_inflight`` merged requests are in the pool, new
ones accumulate instead of queueing as many separate requests.

Isolation is kept: every request is validated on its own before it is merged
(a malformed one fails alone, with ``ValueError``), and if the model fails on
a merged request, its members are resubmitted one by one, so only the request
at fault gets the error (the pool then splits that one further).
"""

import asyncio
import time

import numpy as np

from ._errors import ModelError, QueryError

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Merge small concurrent requests to ``pool`` into one (runs in one event loop).

    Parameters
    ----------
    pool : CodedPool
    max_rows : int
        Rows of one merged request at most; a request with more rows is
        submitted on its own.
    max_inflight : int
        Merged requests in the pool at once; while that many are out, new
        requests wait here and are merged into the next one.
    """

    def __init__(self, pool, max_rows, max_inflight):
        if max_rows < 1 or max_inflight < 1:
            raise ValueError("max_rows and max_inflight must be at least 1")
        self.pool = pool
        self.max_rows = int(max_rows)
        self.max_inflight = int(max_inflight)
        self._pending = []  # (X, future, t0) in arrival order
        self._pending_rows = 0
        self._inflight = 0
        self._scheduled = False
        self.merged_requests = 0  # pool requests made by merging (for tests and /stats)

    def submit(self, X):
        """Queue ``X``; returns an asyncio future of its :class:`ServeResult`.

        Cancelling the returned future (a client's deadline) only drops this
        request's answer; it never cancels other requests or the pool's work.

        Raises ``ValueError`` at once for a malformed ``X``, and the pool's
        closed/broken errors, as :meth:`CodedPool.submit` does.
        """
        X = self.pool.check_input(X)
        loop = asyncio.get_running_loop()
        if len(X) > self.max_rows:
            # shield: a deadline cancels the caller's wait, never the pool's future.
            return asyncio.shield(asyncio.wrap_future(self.pool.submit(X)))
        self.pool.raise_if_unavailable()
        fut = loop.create_future()
        self._pending.append((X, fut, time.perf_counter()))
        self._pending_rows += len(X)
        if self._pending_rows >= self.max_rows:
            self._flush_while_free()
        if self._pending and not self._scheduled:
            # End of this loop iteration: the handlers that are ready now merge.
            self._scheduled = True
            loop.call_soon(self._on_tick)
        return fut

    def _on_tick(self):
        self._scheduled = False
        self._flush_while_free()

    def _flush_while_free(self):
        while self._pending and self._inflight < self.max_inflight:
            self._flush_one()

    def _take(self):
        batch, rows = [], 0
        while self._pending and (not batch or rows + len(self._pending[0][0]) <= self.max_rows):
            item = self._pending.pop(0)
            batch.append(item)
            rows += len(item[0])
        self._pending_rows -= rows
        return batch

    def _flush_one(self):
        batch = self._take()
        batch = [item for item in batch if not item[1].done()]  # e.g. a client gone
        if not batch:
            return
        X = batch[0][0] if len(batch) == 1 else np.concatenate([item[0] for item in batch])
        try:
            cf = self.pool.submit(X)
        except Exception as exc:  # noqa: BLE001 - closed/broken: every member's answer
            for _, fut, _ in batch:
                _set(fut, exception=exc)
            return
        self._inflight += 1
        self.merged_requests += len(batch) > 1
        asyncio.wrap_future(cf).add_done_callback(lambda f: self._done(batch, f))

    def _done(self, batch, fut):
        self._inflight -= 1
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled():
            for _, f, _ in batch:
                f.cancel()
        elif exc is not None:
            if isinstance(exc, (ModelError, QueryError)) and len(batch) > 1:
                self._resubmit_alone(batch)
            else:
                for _, f, _ in batch:
                    _set(f, exception=exc)
        else:
            res, now, start = fut.result(), time.perf_counter(), 0
            for X, f, t0 in batch:
                stop = start + len(X)
                _set(f, result=type(res)(res.values[start:stop], res.raw[start:stop],
                                         res.approximate[start:stop], now - t0))
                start = stop
        self._flush_while_free()

    def _resubmit_alone(self, batch):
        """The model failed on the merged rows: each member on its own, so only the bad one fails."""
        for X, f, _ in batch:
            if f.done():
                continue
            try:
                cf = self.pool.submit(X)
            except Exception as exc:  # noqa: BLE001
                _set(f, exception=exc)
                continue
            asyncio.wrap_future(cf).add_done_callback(lambda g, f=f: _chain(g, f))


def _chain(src, dst):
    if src.cancelled():
        dst.cancel()
    elif src.exception() is not None:
        _set(dst, exception=src.exception())
    else:
        _set(dst, result=src.result())


def _set(fut, result=None, exception=None):
    if fut.done():  # the client's deadline passed, or it went away
        return
    if exception is not None:
        fut.set_exception(exception)
    else:
        fut.set_result(result)
