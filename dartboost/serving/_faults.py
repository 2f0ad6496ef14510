"""Fault injection for serving workers: emulated service time, slowdowns, death, hangs.

Every worker process of a :class:`~dartboost.serving.CodedPool` runs its tasks
through a :class:`WorkerFaults` built from a :class:`FaultSpec`. The spec is
plain data (picklable, shipped once when the worker starts) so the same faults
can be injected on the local (loky) and the distributed (Dask) backend.

Three kinds of trouble are modelled, after the ParM evaluation and the issue:

* **Slowdowns.** A heavy-tailed process: with probability ``slow_prob`` a task
  is stretched by ``service_time * slow_scale * Pareto(slow_alpha)`` seconds;
  and, optionally, *background load*: a thread in the worker that spins on the
  CPU with a given duty cycle, so the model competes for the interpreter and a
  core exactly as it would with a noisy neighbour.
* **Death.** ``kill_after=n`` makes the worker SIGKILL itself while running its
  n-th task (a crash mid-run); :func:`kill_process` kills one from outside.
* **Hangs.** ``hang_after=n`` makes the n-th task block forever (well,
  ``hang_seconds``), as a worker stuck on a lock or a dead NFS mount would.

``service_time`` is the *emulated* cost of one batch: a task that finished its
real computation early sleeps until ``service_time`` has passed. Benchmarks on
small machines use it so that end-to-end latency is dominated by a controlled,
documented model cost instead of by the host's core count.
"""

import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = ["FaultSpec", "WorkerFaults", "BackgroundLoad", "kill_process"]


@dataclass(frozen=True)
class FaultSpec:
    """What to inject into one worker.

    Parameters
    ----------
    service_time : float, default=0.0
        Emulated seconds per batch (a floor: real compute time counts towards it).
    per_row_time : float, default=0.0
        Extra emulated seconds per row of the batch.
    slow_prob : float, default=0.0
        Probability that a task is slowed down.
    slow_scale : float, default=1.0
        Scale of a slowdown, in units of ``service_time`` (or seconds when
        ``service_time`` is 0).
    slow_alpha : float, default=1.5
        Shape of the Pareto tail of slowdowns; smaller is heavier.
    slow_max : float, default=2.0
        Upper bound of one slowdown in seconds, so benchmarks end.
    background_load : float, default=0.0
        Duty cycle in [0, 1) of a CPU-spinning thread started in the worker.
    kill_after : int or None, default=None
        Kill the worker (SIGKILL to itself) while it runs its ``kill_after``-th task.
    hang_after : int or None, default=None
        Block the ``hang_after``-th task for ``hang_seconds``.
    hang_seconds : float, default=3600.0
        How long a hang lasts.
    seed : int or None, default=None
        Seed of the slowdown process; the worker mixes in its slot index so
        workers do not slow down in lock-step.
    """

    service_time: float = 0.0
    per_row_time: float = 0.0
    slow_prob: float = 0.0
    slow_scale: float = 1.0
    slow_alpha: float = 1.5
    slow_max: float = 2.0
    background_load: float = 0.0
    kill_after: int = None
    hang_after: int = None
    hang_seconds: float = 3600.0
    seed: int = None

    def __post_init__(self):
        for name in ("service_time", "per_row_time", "slow_scale", "slow_max", "hang_seconds"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"FaultSpec.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.slow_prob <= 1.0:
            raise ValueError(f"FaultSpec.slow_prob must be in [0, 1], got {self.slow_prob!r}")
        if not self.slow_alpha > 0:
            raise ValueError(f"FaultSpec.slow_alpha must be > 0, got {self.slow_alpha!r}")
        if not 0.0 <= self.background_load < 1.0:
            raise ValueError(
                f"FaultSpec.background_load must be in [0, 1), got {self.background_load!r}"
            )
        for name in ("kill_after", "hang_after"):
            v = getattr(self, name)
            if v is not None and (int(v) != v or v < 1):
                raise ValueError(f"FaultSpec.{name} must be a positive integer or None, got {v!r}")

    def to_dict(self):
        """Plain-dict form (for JSON results)."""
        return asdict(self)

    def healthy(self):
        """The same spec without the one-shot kill/hang, for a restarted worker."""
        return replace(self, kill_after=None, hang_after=None)


class BackgroundLoad:
    """A daemon thread that burns CPU for ``duty`` of every ``period`` seconds.

    It holds the GIL while it spins (pure-Python loop), so a model running in the
    same process is delayed as by a CPU-bound neighbour.
    """

    def __init__(self, duty, period=0.01):
        self.duty = float(duty)
        self.period = float(period)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dartboost-bgload", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()

    def _run(self):
        busy = self.duty * self.period
        while not self._stop.is_set():
            t_end = time.perf_counter() + busy
            x = 0
            while time.perf_counter() < t_end:
                x += 1
            self._stop.wait(self.period - busy)


class WorkerFaults:
    """Runtime state of the faults of one worker process.

    Parameters
    ----------
    spec : FaultSpec or None
        What to inject; ``None`` injects nothing and adds no service time.
    slot : int
        The worker's index in its pool (mixed into the seed).
    """

    def __init__(self, spec, slot=0):
        self.spec = spec if spec is not None else FaultSpec()
        seed = None if self.spec.seed is None else (int(self.spec.seed), int(slot))
        self._rng = np.random.default_rng(seed)
        self.n_tasks = 0
        self._bg = None
        if self.spec.background_load > 0:
            self._bg = BackgroundLoad(self.spec.background_load).start()

    def before(self):
        """Called when a task starts; may kill or hang the worker."""
        self.n_tasks += 1
        s = self.spec
        if s.kill_after is not None and self.n_tasks >= s.kill_after:
            # SIGKILL, not sys.exit: no clean-up handlers run, exactly like an
            # OOM kill or a lost machine.
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)  # pragma: no cover - the signal arrives first
        if s.hang_after is not None and self.n_tasks == s.hang_after:
            time.sleep(s.hang_seconds)

    def service_seconds(self, n_rows):
        """Emulated duration of a task of ``n_rows`` rows, slowdown included."""
        s = self.spec
        t = s.service_time + s.per_row_time * n_rows
        if s.slow_prob > 0 and self._rng.random() < s.slow_prob:
            unit = s.service_time if s.service_time > 0 else 1.0
            # numpy's pareto is the Lomax form (support from 0); the slowdown
            # is added on top of the normal service time.
            t += min(s.slow_max, unit * s.slow_scale * self._rng.pareto(s.slow_alpha))
        return t

    def after(self, t_start, n_rows):
        """Sleep out the remainder of the emulated service time."""
        remaining = self.service_seconds(n_rows) - (time.perf_counter() - t_start)
        if remaining > 0:
            time.sleep(remaining)

    def close(self):
        if self._bg is not None:
            self._bg.stop()


def kill_process(pid):
    """SIGKILL a worker process by id; returns False if it was already gone."""
    try:
        os.kill(int(pid), signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
