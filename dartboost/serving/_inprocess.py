"""In-process backends: worker "slots" that run the models in this process.

``ThreadBackend`` (``CodedPool(backend="thread")``) runs each slot on a thread of
the serving process. There is no process isolation (a model that crashes the
interpreter takes the server with it) and the slots share the GIL, but for
small, fast models it saves the inter-process round trip of every batch.

``ManualBackend`` is the deterministic test double of ``CodedPool``'s
scheduling: a task stays "running" on its slot until the test finishes, fails
or kills it, so batching, groups, decode waits, retries and hangs can be driven
step by step together with an injected clock (``CodedPool(clock=...,
threaded=False)`` and :meth:`CodedPool.step`). Its answers are the real models'
outputs, computed in this process.

Both follow the backend protocol of :mod:`dartboost.serving._backends`.
"""

import itertools
import queue
import threading


from ._errors import WorkerLost
from ._worker import compute_task

__all__ = ["ThreadBackend", "ManualBackend", "ManualClock", "compute_task"]

_FAKE_PIDS = itertools.count(1_000_000)


class ManualClock:
    """A clock the test advances: ``clock()`` returns the current time."""

    def __init__(self, t=0.0):
        self.t = float(t)

    def __call__(self):
        return self.t

    def advance(self, dt):
        self.t += float(dt)
        return self.t


class ManualBackend:
    """Slots whose tasks end only when the test says so.

    Parameters
    ----------
    payload : dict
        The pool's models (set by the pool through :meth:`bind`).
    auto : bool, default=False
        Answer every task at once (inside ``submit``) instead of holding it.
    """

    name = "manual"

    def __init__(self, auto=False):
        self.auto = auto
        self.payload = None
        self.running = {}  # slot -> (kind, index, X, callback)
        self.log = []  # (slot, kind, index, n_rows) of every submitted task
        self.alive = {}
        self._pids = {}
        # Test hooks: output transform per (slot or kind) and errors per kind.
        self.output_hook = None  # fn(slot, kind, X, raw) -> raw
        self.error_hook = None  # fn(slot, kind, X) -> exception or None

    def bind(self, payload, specs, name):
        self.payload = payload
        return self

    def start(self, slots, timeout=None):
        for s in slots:
            self.alive[s] = True
            self._pids[s] = next(_FAKE_PIDS)
        return dict(self._pids)

    def warm_up(self, slot, kind, index, X, timeout=None):
        return compute_task(self.payload, kind, index, X)

    def _result(self, slot, kind, index, X):
        if self.error_hook is not None:
            exc = self.error_hook(slot, kind, X)
            if exc is not None:
                return False, exc
        try:
            raw = compute_task(self.payload, kind, index, X)
        except Exception as exc:  # noqa: BLE001 - reported like a worker's error
            return False, exc
        if self.output_hook is not None:
            raw = self.output_hook(slot, kind, X, raw)
        return True, (raw, self._pids[slot])

    def submit(self, slot, kind, index, X, callback):
        if slot in self.running:
            raise AssertionError(f"slot {slot} got a task while busy")
        self.log.append((slot, kind, index, X.shape[0]))
        if not self.alive.get(slot, False):
            callback(False, WorkerLost(f"worker {slot} is dead"))
            return
        if self.auto:
            callback(*self._result(slot, kind, index, X))
            return
        self.running[slot] = (kind, index, X, callback)

    def busy(self):
        """Slots holding a task, in slot order."""
        return sorted(self.running)

    def task(self, slot):
        kind, index, X, _ = self.running[slot]
        return kind, index, X

    def finish(self, slot):
        """Answer the task of ``slot`` with the model's real output."""
        kind, index, X, cb = self.running.pop(slot)
        cb(*self._result(slot, kind, index, X))

    def finish_all(self, kinds=None):
        for s in self.busy():
            if kinds is None or self.running[s][0] in kinds:
                self.finish(s)

    def fail(self, slot, exc):
        """End the task of ``slot`` with ``exc`` (the model raised)."""
        _, _, _, cb = self.running.pop(slot)
        cb(False, exc)

    def die(self, slot):
        """The worker of ``slot`` dies (its task, if any, fails as lost)."""
        self.alive[slot] = False
        item = self.running.pop(slot, None)
        if item is not None:
            item[3](False, WorkerLost(f"worker {slot} died"))

    def kill(self, slot):
        self.die(slot)
        return True

    def restart(self, slot, timeout=None):
        self.running.pop(slot, None)
        self.alive[slot] = True
        self._pids[slot] = next(_FAKE_PIDS)
        return self._pids[slot]

    def dead_slots(self):
        return [s for s, ok in self.alive.items() if not ok]

    def pids(self):
        return dict(self._pids)

    def shutdown(self, timeout=None):
        self.running.clear()


class ThreadBackend:
    """One thread per slot in the serving process (see module docstring)."""

    name = "thread"

    def __init__(self, payload, specs, name="default"):
        self.payload = payload
        self._queues = {}
        self._threads = {}
        self._pids = {}

    def _run(self, slot, q):
        while True:
            item = q.get()
            if item is None:
                return
            kind, index, X, cb = item
            try:
                raw = compute_task(self.payload, kind, index, X)
            except Exception as exc:  # noqa: BLE001 - reported to the pool
                cb(False, exc)
                continue
            cb(True, (raw, self._pids[slot]))

    def start(self, slots, timeout=None):
        for s in slots:
            q = queue.SimpleQueue()
            t = threading.Thread(target=self._run, args=(s, q), name=f"dartboost-slot-{s}",
                                 daemon=True)
            self._queues[s], self._threads[s] = q, t
            self._pids[s] = next(_FAKE_PIDS)
            t.start()
        return dict(self._pids)

    def warm_up(self, slot, kind, index, X, timeout=None):
        return compute_task(self.payload, kind, index, X)

    def submit(self, slot, kind, index, X, callback):
        self._queues[slot].put((kind, index, X, callback))

    def kill(self, slot):
        return False  # a thread cannot be killed; hang detection cannot recover it

    def restart(self, slot, timeout=None):
        return self._pids[slot]

    def dead_slots(self):
        return []

    def pids(self):
        return dict(self._pids)

    def shutdown(self, timeout=10.0):
        for q in self._queues.values():
            q.put(None)
        for t in self._threads.values():
            t.join(timeout)
