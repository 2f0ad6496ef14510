"""Coded checkpoints during training, and resuming a fit from them.

:class:`CheckpointCallback` follows the dartboost callback contract
(``docs/contracts.md``): every ``every`` iterations it writes the estimator's
state into a :class:`~dartboost.store.ModelStore`. After the first checkpoint it
writes incrementally: the stable format keeps every array at a fixed offset, so
appended trees and rescaled DART weights change a few chunks, and only those
chunks plus the parity of their rows are written.

:func:`resume_fit` loads the latest checkpoint into an estimator and continues
with ``warm_start=True``. Because iteration ``t`` draws its randomness from
``(random_state, t)``, the resumed fit reaches the same model as an
uninterrupted one (integer ``random_state`` required).
"""
import warnings

from .._model_file import FormatError
from ._objects import ManifestError, ObjectNotFoundError, UnrecoverableError


class CheckpointCallback:
    """Checkpoint a fit into an erasure-coded store every N iterations.

    Parameters
    ----------
    store : ModelStore
        Where to write.
    name : str
        Object name of the checkpoints; each checkpoint is a new version.
    every : int, default=10
        Iterations between checkpoints. A final checkpoint is written when the
        fit ends.
    incremental : bool, default=True
        Write only changed chunks and update parity from their deltas.
    keep_last : int or None, default=None
        Keep only this many newest versions (older ones are deleted and their
        unshared chunks freed). None keeps all.
    chunk_size : int, default=16384
        Largest chunk size of the checkpoints (capped at the store's). Smaller
        chunks write fewer bytes per checkpoint but make a longer manifest;
        see ``docs/store.md`` for measurements.

    Attributes
    ----------
    history_ : list of dict
        Per checkpoint: iteration, version, bytes written, seconds, incremental.

    Examples
    --------
    >>> cb = CheckpointCallback(store, "run1", every=25)          # doctest: +SKIP
    >>> DartRegressor(n_estimators=500, random_state=0,
    ...               callbacks=[cb]).fit(X, y)                   # doctest: +SKIP
    """

    def __init__(self, store, name, every=10, incremental=True, keep_last=None,
                 chunk_size=16384):
        if int(every) < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if keep_last is not None and int(keep_last) < 1:
            raise ValueError(f"keep_last must be None or positive, got {keep_last!r}")
        self.store = store
        self.name = name
        self.every = int(every)
        self.incremental = incremental
        self.keep_last = keep_last
        self.chunk_size = chunk_size
        self.history_ = []
        self._last_saved = None

    def on_fit_begin(self, estimator):
        self._last_saved = None

    def on_iteration_end(self, estimator, iteration, logs=None):
        if (iteration + 1) % self.every == 0:
            self._save(estimator, iteration + 1, final=False)
        return None  # never asks to stop

    def on_fit_end(self, estimator):
        n_iter = getattr(estimator, "n_iter_", None)
        if n_iter is None or n_iter != self._last_saved:
            self._save(estimator, n_iter, final=True)

    def _save(self, estimator, iteration, final):
        meta = {"checkpoint": True, "iteration": iteration, "final": final}
        target = getattr(estimator, "n_estimators", None)
        growth = (target / iteration) if target and iteration else None
        chunk = min(int(self.chunk_size), self.store.chunk_size) if self.chunk_size else None
        version = self.store.put(self.name, estimator, metadata=meta,
                                 incremental=self.incremental, expected_growth=growth,
                                 chunk_size=chunk)
        stats = dict(self.store.last_put_stats or {})
        stats.update(iteration=iteration, version=version, final=final)
        self.history_.append(stats)
        self._last_saved = iteration
        if self.keep_last is not None:
            old = self.store.versions(self.name)[:-int(self.keep_last)]
            for v in old:
                self.store.delete(self.name, v)


def load_checkpoint(store, name, version=None):
    """Build the estimator stored in a checkpoint (latest by default).

    Returns
    -------
    estimator
        The model exactly as it was at the checkpoint.
    metadata : dict
        Includes ``iteration`` and ``final``.
    """
    header, _ = store.get_state(name, version)
    return store.get(name, version), header.get("metadata", {})


def resume_fit(estimator, store, name, X, y, **fit_params):
    """Fit ``estimator``, continuing from the newest intact checkpoint in ``store``.

    A checkpoint damaged beyond repair (more than r bad shards in a row, no
    valid manifest, a corrupt model) is skipped with a ``RuntimeWarning``
    naming it, and the next older one is used.

    If ``name`` has a checkpoint, its state is loaded into ``estimator``
    (whose parameters, e.g. ``n_estimators`` and ``callbacks``, are kept) and
    the fit continues with ``warm_start=True``; otherwise the fit starts from
    scratch. Either way the result equals an uninterrupted fit with the same
    integer ``random_state``.

    Parameters
    ----------
    estimator : dartboost estimator
        Configured as for the original fit (include the checkpoint callback
        to keep checkpointing).
    store : ModelStore
    name : str
        Checkpoint object name.
    X, y : array-like
        The training data of the original fit.
    **fit_params
        Passed to ``fit``.

    Returns
    -------
    estimator
        The fitted estimator.
    """
    try:
        header, arrays = _newest_intact(store, name)
    except ObjectNotFoundError:
        return estimator.fit(X, y, **fit_params)
    cls = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
    if header.get("kind") != "dartboost" or header.get("class") != cls:
        raise TypeError(f"checkpoint {name!r} holds a {header.get('class')}, not a {cls}")
    params = estimator.get_params(deep=False)
    user_warm_start = params.get("warm_start", False)
    estimator._set_state(header["state"], arrays)
    # the user's configuration (target n_estimators, callbacks, ...) wins over
    # the stored one; warm_start makes fit continue from the loaded trees
    params["warm_start"] = True
    estimator.set_params(**params)
    try:
        estimator.fit(X, y, **fit_params)
    finally:
        estimator.set_params(warm_start=user_warm_start)
    return estimator


def _newest_intact(store, name):
    """State of the newest checkpoint that reads back; warns about each damaged one."""
    versions = store.versions(name)
    if not versions:
        raise ObjectNotFoundError(f"no checkpoint named {name!r}")
    errors = []
    for v in reversed(versions):
        try:
            return store.get_state(name, v)
        except (UnrecoverableError, ManifestError, FormatError) as exc:
            errors.append(f"v{v}: {exc}")
            warnings.warn(f"checkpoint {name!r} v{v} is damaged and was skipped: {exc}",
                          RuntimeWarning, stacklevel=3)
    raise UnrecoverableError(f"no intact checkpoint of {name!r}: " + "; ".join(errors))
