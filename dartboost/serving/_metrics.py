"""Latency and outcome accounting for a serving pool."""

import threading
from collections import deque

import numpy as np

__all__ = ["ServingMetrics"]


class ServingMetrics:
    """Thread-safe counters plus a sliding window of request latencies.

    Parameters
    ----------
    window : int, default=100_000
        How many recent request latencies the percentiles are computed over.
    """

    COUNTERS = (
        "requests",
        "requests_ok",
        "requests_failed",
        "rows_exact",
        "rows_reconstructed",
        "rows_backup",
        "rows_failed",
        "tasks_sent",
        "tasks_cancelled",
        "tasks_wasted",
        "task_failures",
        "retries",
        "worker_restarts",
        "groups",
        "groups_partial",
        "groups_unprotected",
        "decodes",
        "decode_errors",
        "batch_splits",
        "internal_errors",
        "busy_s_base",
        "busy_s_extra",
    )

    def __init__(self, window=100_000):
        self._lock = threading.Lock()
        self._lat = deque(maxlen=int(window))
        self.counts = dict.fromkeys(self.COUNTERS, 0)

    def add(self, name, n=1):
        with self._lock:
            self.counts[name] += n

    def record_latency(self, seconds):
        with self._lock:
            self._lat.append(float(seconds))

    def latencies(self):
        """Recent request latencies in seconds (oldest first)."""
        with self._lock:
            return np.array(self._lat, dtype=np.float64)

    def snapshot(self):
        """Counters plus latency percentiles (milliseconds) of the window."""
        lat = self.latencies()
        with self._lock:
            out = dict(self.counts)
        if lat.size:
            q = np.percentile(lat, [50, 90, 99, 99.9]) * 1e3
            out["latency_ms"] = {
                "count": int(lat.size),
                "mean": float(lat.mean() * 1e3),
                "p50": float(q[0]),
                "p90": float(q[1]),
                "p99": float(q[2]),
                "p99.9": float(q[3]),
                "max": float(lat.max() * 1e3),
            }
        else:
            out["latency_ms"] = {"count": 0}
        rows = out["rows_exact"] + out["rows_reconstructed"] + out["rows_backup"]
        out["degraded_rows"] = out["rows_reconstructed"] + out["rows_backup"]
        out["degraded_fraction"] = out["degraded_rows"] / rows if rows else 0.0
        return out
