"""Baselines for coded serving, and one constructor for every mode.

ParM is judged against what an operator would otherwise do with the same
extra machines (ARCHITECTURE.md section 3):

* ``"none"`` - no redundancy: ``m`` workers, a late query waits.
* ``"equal"`` - equal resources: the ``r * ceil(m / k)`` machines a coded pool
  spends on parity serve as plain replicas sharing the load instead.
* ``"backup"`` - a cheap approximate backup model on ``ceil(m / k)`` extra
  workers answers every batch too; its answer is used (flagged approximate) if
  the base has not answered within the median base latency.
* ``"replication"`` - ``m`` extra workers, each batch runs twice, the first
  answer wins (twice the resources, the classic tail-cutting tool).
"""

import math

import numpy as np

from ._pool import MODES, CodedPool

__all__ = ["make_backup_model", "pool_for_mode"]


def make_backup_model(base_estimator, X, estimator=None, raw_output=None):
    """Distil a cheap backup model from a fitted base model.

    The backup is a regressor fitted to the base model's *raw* outputs
    (margins/logits or values) on unlabelled queries ``X``, so its answers live
    in the same space as the base's and go through the same
    ``outputs_to_prediction`` step in the pool.

    Parameters
    ----------
    base_estimator : fitted estimator
    X : array-like of shape (n_samples, n_features)
        Queries to distil on (no labels needed).
    estimator : regressor, optional
        Unfitted cheap regressor; default ``Ridge(alpha=1.0)`` (microseconds
        per batch: the cheapest sensible model).
    raw_output : callable, optional
        Default :func:`dartboost.coded.raw_output`.

    Returns
    -------
    backup : fitted regressor
        ``predict`` returns shape (n,) or (n, d) like the base's raw output.
    """
    if raw_output is None:
        from dartboost.coded import raw_output
    X = np.asarray(X, dtype=np.float64)
    raw = np.asarray(raw_output(base_estimator, X), dtype=np.float64)
    y = raw[:, 0] if raw.shape[1] == 1 else raw
    if estimator is None:
        from sklearn.linear_model import Ridge  # lazy: workers import this package

        estimator = Ridge(alpha=1.0)
    model = estimator
    return model.fit(X, y)


def pool_for_mode(mode, coded, *, n_workers, backup=None, base_faults=None,
                  extra_faults=None, **kwargs):
    """Build a :class:`CodedPool` for one serving mode with comparable resources.

    Parameters
    ----------
    mode : {"coded", "none", "equal", "backup", "replication"}
    coded : fitted CodedPredictor
        Supplies ``k``, ``r``, the base model and the output mapping (the same
        for every mode, so answers are comparable).
    n_workers : int
        Base model instances ``m``.
    backup : fitted estimator, optional
        Required for ``mode="backup"`` (see :func:`make_backup_model`).
    base_faults, extra_faults : FaultSpec, optional
        Faults of the base workers and of the extra workers (parity, backup or
        replica). Under ``"equal"`` the extra workers are base replicas and get
        ``base_faults``.
    **kwargs
        Passed to :class:`CodedPool`.

    Returns
    -------
    pool : CodedPool
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    n_par = coded.r * math.ceil(n_workers / coded.k)
    n_extra = {"coded": n_par, "equal": n_par, "backup": math.ceil(n_workers / coded.k),
               "replication": n_workers, "none": 0}[mode]
    n_base = n_workers + n_extra if mode == "equal" else n_workers
    faults = {}
    for s in range(n_base):
        faults[s] = base_faults
    for s in range(n_base, n_base + (0 if mode in ("equal", "none") else n_extra)):
        faults[s] = base_faults if mode == "replication" else extra_faults
    return CodedPool(coded, mode=mode, n_workers=n_workers, n_extra=n_extra, k=coded.k,
                     backup=backup, faults=faults, **kwargs)

