"""Per-iteration callbacks for ``fit``.

``callbacks=[...]`` takes two kinds, in any mix:

1. An object with some of these methods (dartboost's protocol):

   - ``on_fit_begin(estimator)``
   - ``on_iteration_end(estimator, iteration, logs) -> bool | None``: return
     ``True`` to stop training after this iteration. ``logs`` holds
     ``train_score`` and ``validation_score`` when early stopping is on, and
     ``"<set>_<metric>"`` for every metric of every eval set.
   - ``on_fit_end(estimator)``

2. A callable ``cb(env)`` (LightGBM's protocol), called after every
   iteration with a :class:`CallbackEnv`; one with a true attribute
   ``before_iteration`` is called before every iteration instead (then
   ``env.evaluation_result_list`` is ``None``). Raise
   :class:`EarlyStopException` to stop.

Anything else is rejected with a ``TypeError`` when ``fit`` starts.
"""
import collections
import sys
import time

#: What a callable callback receives.
#:
#: - ``model``: the estimator being fitted (its ``booster_`` holds the trees so
#:   far, so ``model.predict`` works inside a callback);
#: - ``params``: ``model.get_params()``;
#: - ``iteration``: 0-based index of the iteration just done (about to start,
#:   for ``before_iteration`` callbacks);
#: - ``begin_iteration``: first iteration of this ``fit`` (non-zero under
#:   ``warm_start``); ``end_iteration``: ``n_estimators``;
#: - ``evaluation_result_list``: ``[(set_name, metric_name, value,
#:   is_higher_better), ...]`` of this iteration, in eval-set then metric order.
CallbackEnv = collections.namedtuple(
    "CallbackEnv", ["model", "params", "iteration", "begin_iteration", "end_iteration",
                    "evaluation_result_list"])

_OBJECT_HOOKS = ("on_fit_begin", "on_iteration_end", "on_fit_end")


class EarlyStopException(Exception):
    """Raise from a callback to stop training (LightGBM's convention).

    Parameters
    ----------
    best_iteration : int or None
        0-based index of the iteration to keep the model of: the fitted model
        keeps the first ``best_iteration + 1`` iterations, with the weights
        they had then. ``None``: keep every iteration done so far.
    best_score : object, optional
        Informational (LightGBM passes its evaluation list here).
    """

    def __init__(self, best_iteration=None, best_score=None):
        super().__init__(best_iteration, best_score)
        self.best_iteration = best_iteration
        self.best_score = best_score


def check_callbacks(callbacks):
    """Split ``callbacks`` into ``(objects, before, after)``.

    Raises
    ------
    TypeError
        For an entry that is neither an object of the hook protocol nor a
        callable, or whose hooks are not callable.
    """
    objects, before, after = [], [], []
    for i, cb in enumerate(callbacks or []):
        hooks = [name for name in _OBJECT_HOOKS if hasattr(cb, name)]
        if hooks:
            for name in hooks:
                if not callable(getattr(cb, name)):
                    raise TypeError(f"callbacks[{i}].{name} is not callable.")
            objects.append(cb)
        elif callable(cb):
            (before if getattr(cb, "before_iteration", False) else after).append(cb)
        else:
            raise TypeError(
                f"callbacks[{i}] is a {type(cb).__name__}, which is neither a callable "
                f"cb(env) nor an object with any of {', '.join(_OBJECT_HOOKS)}.")
    return objects, before, after


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
