"""Per-iteration callbacks for ``fit``.

A callback is any object with some of these methods:

- ``on_fit_begin(estimator)``
- ``on_iteration_end(estimator, iteration, logs) -> bool | None``: return
  ``True`` to stop training after this iteration. ``logs`` holds
  ``train_score`` and ``validation_score`` when early stopping is on.
- ``on_fit_end(estimator)``
"""
import sys
import time


class ProgressBar:
    """Text progress bar on stderr (``verbose=1``); ``verbose>=2`` prints one
    line per iteration instead.

    Parameters
    ----------
    verbose : int
    stream : file-like, default=sys.stderr
    width : int, default=30
    """

    def __init__(self, verbose=1, stream=None, width=30):
        self.verbose = verbose
        self.stream = stream
        self.width = width

    def _out(self):
        return self.stream if self.stream is not None else sys.stderr

    def on_fit_begin(self, estimator):
        self._start = time.perf_counter()
        self._first = getattr(estimator, "n_iter_", 0) if estimator.warm_start else 0

    def on_iteration_end(self, estimator, iteration, logs):
        total = estimator.n_estimators
        done = iteration + 1
        elapsed = time.perf_counter() - self._start
        rate = (done - self._first) / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        scores = "".join(f" {k}={v:.5g}" for k, v in logs.items())
        if self.verbose >= 2:
            print(f"[{done}/{total}] {elapsed:.1f}s{scores}", file=self._out())
            return None
        filled = int(self.width * done / total)
        bar = "#" * filled + "." * (self.width - filled)
        end = "\n" if done == total else ""
        print(f"\r[{bar}] {done}/{total} {elapsed:.1f}s eta {eta:.1f}s{scores}", end=end,
              file=self._out(), flush=True)
        return None

    def on_fit_end(self, estimator):
        if self.verbose < 2 and estimator.n_iter_ < estimator.n_estimators:
            print(f"\nstopped at iteration {estimator.n_iter_}", file=self._out())
