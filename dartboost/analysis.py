"""Over-specialisation: how much each tree of a fitted model still matters.

Rashmi & Gilad-Bachrach (2015) motivate DART by MART's *over-specialisation*:
the first trees explain most of the target and trees added later make tiny
corrections to a few examples, so late trees barely matter and the model is
sensitive to the early ones. :func:`tree_contributions` measures it for any
fitted dartboost estimator: per iteration, the mean ``|w_t f_t(x)|`` over a
data set (the tree's output times its *current* DART weight) and the share of
examples whose raw score that iteration moves by more than a threshold.
:func:`plot_tree_contributions` draws the numbers (matplotlib is imported only
there, so it stays an optional dependency).
"""
from dataclasses import dataclass

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._common import effective_n_threads

__all__ = ["TreeContributions", "tree_contributions", "plot_tree_contributions"]


@dataclass
class TreeContributions:
    """Per-iteration contribution numbers of a fitted model.

    Attributes
    ----------
    weight : ndarray of shape (n_iter,)
        Current weight of each iteration's trees.
    mean_abs : ndarray of shape (n_iter,)
        Mean over examples (and over the iteration's trees when there are
        several outputs) of ``|w_t f_t(x)|``.
    frac_changed : ndarray of shape (n_iter,)
        Share of examples for which some tree of the iteration moves the raw
        score by more than ``threshold``.
    threshold : float
        The absolute threshold used for ``frac_changed``.
    raw_scale : float
        Standard deviation of the model's raw scores on the data (averaged over
        outputs): the scale ``threshold`` is relative to by default.
    """

    weight: np.ndarray
    mean_abs: np.ndarray
    frac_changed: np.ndarray
    threshold: float
    raw_scale: float

    @property
    def n_iter(self):
        return self.weight.shape[0]

    @property
    def share(self):
        """``mean_abs`` normalised to sum to 1 (each iteration's share)."""
        total = self.mean_abs.sum()
        return self.mean_abs / total if total > 0 else self.mean_abs

    def late_share(self, fraction=0.5):
        """Share of the total contribution made by the last ``fraction`` of
        the iterations (MART: small; DART: closer to ``fraction``)."""
        start = int(np.floor(self.n_iter * (1 - fraction)))
        return float(self.share[start:].sum())


def tree_contributions(estimator, X, *, threshold=None, relative_threshold=0.01,
                       batch_size=8192):
    """Contribution of each boosting iteration of a fitted model on ``X``.

    Parameters
    ----------
    estimator : DartRegressor, DartClassifier or DartRanker, fitted
    X : array-like of shape (n_samples, n_features)
    threshold : float or None, default=None
        A tree "changes" an example's prediction when ``|w_t f_t(x)|`` exceeds
        this (raw-score units). ``None``: ``relative_threshold`` times the
        standard deviation of the model's raw scores on ``X``, so models of
        different scale (MART vs DART, regression vs ranking) compare fairly.
    relative_threshold : float, default=0.01
    batch_size : int, default=8192
        Rows traversed at a time (bounds memory at ``batch_size * n_trees``
        leaf indices).

    Returns
    -------
    TreeContributions
    """
    check_is_fitted(estimator, "booster_")
    X = estimator._validate_X_predict(X)
    booster = estimator.booster_
    weights = np.repeat(booster.weights, booster.n_trees_per_iteration)
    K = booster.n_trees_per_iteration
    n_trees = booster.n_trees
    n_iter = n_trees // K
    n = X.shape[0]
    if n == 0:
        raise ValueError("tree_contributions needs at least one example.")
    values = [t["value"] for t in booster.trees]
    n_threads = effective_n_threads(estimator.n_jobs)
    sum_abs = np.zeros(n_iter)
    # contributions of every tree are needed twice (the threshold may depend
    # on the raw-score scale), so keep per-iteration maxima in float32
    max_abs = np.empty((n, n_iter), dtype=np.float32)
    raw = np.tile(booster.baseline, (n, 1))
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        leaves = booster.predict_leaf(X[start:stop], n_threads)
        batch_max = np.zeros((stop - start, n_iter))
        for j in range(n_trees):
            contrib = weights[j] * values[j][leaves[:, j]]
            raw[start:stop, j % K] += contrib
            a = np.abs(contrib)
            sum_abs[j // K] += a.sum()
            np.maximum(batch_max[:, j // K], a, out=batch_max[:, j // K])
        max_abs[start:stop] = batch_max
    raw_scale = float(np.mean(np.std(raw, axis=0)))
    if threshold is None:
        threshold = relative_threshold * raw_scale
    weight = booster.weights
    return TreeContributions(weight=weight, mean_abs=sum_abs / (n * K),
                             frac_changed=np.mean(max_abs > threshold, axis=0),
                             threshold=float(threshold), raw_scale=raw_scale)


def _moving_average(values, window):
    """Centred moving average (shorter windows at the ends), so DART's
    alternating small/large weights do not hide the trend."""
    if window <= 1:
        return values
    kernel = np.ones(window)
    num = np.convolve(values, kernel, mode="same")
    den = np.convolve(np.ones_like(values), kernel, mode="same")
    return num / den


def plot_tree_contributions(contributions, *, axes=None, title=None, log=True, smooth=1):
    """Plot contribution against iteration index for one or several models.

    Parameters
    ----------
    contributions : dict of str -> TreeContributions, or TreeContributions
        E.g. ``{"MART": tree_contributions(mart, X), "DART": ...}``.
    axes : sequence of two matplotlib Axes, optional
        Where to draw; new figure with two panels if omitted.
    title : str, optional
        Figure title.
    log : bool, default=True
        Logarithmic y axis for the mean |contribution| panel (MART's decay
        spans orders of magnitude).
    smooth : int, default=1
        Width of a centred moving average drawn instead of the raw curves
        (``1``: no smoothing).

    Returns
    -------
    fig, axes
    """
    import matplotlib.pyplot as plt  # optional dependency: only needed here

    if isinstance(contributions, TreeContributions):
        contributions = {"model": contributions}
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    else:
        fig = axes[0].figure
    for name, c in contributions.items():
        it = np.arange(1, c.n_iter + 1)
        axes[0].plot(it, _moving_average(c.mean_abs, smooth), label=name, lw=1.2)
        axes[1].plot(it, _moving_average(c.frac_changed, smooth),
                     label=f"{name} (|Δ| > {c.threshold:.3g})", lw=1.2)
    axes[0].set_xlabel("tree (iteration) index")
    axes[0].set_ylabel("mean |weighted tree output|")
    if log:
        axes[0].set_yscale("log")
    axes[1].set_xlabel("tree (iteration) index")
    axes[1].set_ylabel("fraction of examples changed")
    axes[1].set_ylim(-0.02, 1.02)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes
