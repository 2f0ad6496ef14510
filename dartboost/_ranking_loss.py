"""LambdaMART objective for NDCG: query groups, gradients and evaluation.

Raw scores keep the engine's ``(1, n)`` layout; the targets are a
:class:`RankingTarget` (relevance grades plus query boundaries) instead of an
array, so the boosting loop can hand them to the loss unchanged and take row
subsets of them (validation split) through ``DartRanker._take_y``.
"""
import numpy as np

from ._cext import _lambdarank
from ._common import threads_for
from ._losses import BaseLoss

_NO_WEIGHTS = np.empty(0, dtype=np.float64)


def discounts(n):
    """``1 / log2(r + 2)`` for ranks ``r = 0 .. n-1`` (rank 0 is the top)."""
    return 1.0 / np.log2(np.arange(n, dtype=np.float64) + 2.0)


def label_gains(labels, label_gain="exponential"):
    """Gain of each relevance grade: ``2**label - 1`` or ``label``."""
    if label_gain == "exponential":
        return np.exp2(labels) - 1.0
    if label_gain == "linear":
        return labels.astype(np.float64, copy=True)
    raise ValueError(f"label_gain must be 'exponential' or 'linear', got {label_gain!r}.")


def query_offsets(n_samples, group=None, qid=None):
    """Row offsets ``(n_queries + 1,)`` of contiguous query groups.

    Parameters
    ----------
    n_samples : int
    group : array-like of int, optional
        Query sizes in row order (LightGBM's ``group``); must sum to
        ``n_samples``.
    qid : array-like of shape (n_samples,), optional
        Query id of each row (XGBoost's ``qid``); the rows of a query must be
        contiguous.

    Returns
    -------
    offsets : ndarray of intp
        Query ``q`` owns rows ``offsets[q]:offsets[q + 1]``.
    """
    if group is not None and qid is not None:
        raise ValueError("Pass the query structure once: either group= (query sizes) or "
                         "qid= (a query id per row), not both.")
    if group is None and qid is None:
        raise ValueError("Ranking needs query groups: pass group= (the size of each query, "
                         "rows in query order; LightGBM's convention) or qid= (a query id "
                         "per row, each query's rows contiguous; XGBoost's convention).")
    if group is not None:
        sizes = np.asarray(group)
        if sizes.ndim != 1 or sizes.size == 0:
            raise ValueError(f"group must be a non-empty 1-D array of query sizes, got shape "
                             f"{sizes.shape}.")
        if sizes.dtype.kind not in "iuf" or not np.all(np.isfinite(sizes)) or \
                np.any(sizes != np.round(sizes)):
            raise ValueError("group must hold integer query sizes.")
        sizes = sizes.astype(np.intp)
        if np.any(sizes <= 0):
            raise ValueError(f"group sizes must be positive; found {int(np.sum(sizes <= 0))} "
                             "empty or negative group(s).")
        total = int(sizes.sum())
        if total != n_samples:
            raise ValueError(f"group sizes sum to {total} but there are {n_samples} rows; "
                             "they must be equal (one size per query, in row order).")
        offsets = np.zeros(sizes.size + 1, dtype=np.intp)
        np.cumsum(sizes, out=offsets[1:])
        return offsets
    qid = np.asarray(qid)
    if qid.ndim != 1 or qid.shape[0] != n_samples:
        raise ValueError(f"qid must be 1-D with one entry per row ({n_samples}), got shape "
                         f"{qid.shape}.")
    if qid.dtype.kind == "f" and not np.all(np.isfinite(qid)):
        raise ValueError("qid contains NaN or infinity.")
    if qid.dtype.kind == "O":
        qid = qid.astype(str)
    starts = np.concatenate([[0], np.flatnonzero(qid[1:] != qid[:-1]) + 1]).astype(np.intp)
    first_ids = qid[starts]
    uniq, counts = np.unique(first_ids, return_counts=True)
    if np.any(counts > 1):
        bad = uniq[counts > 1][0]
        raise ValueError(
            f"qid is not grouped: the rows of query {bad!r} are not contiguous. Sort the "
            "rows by query first (e.g. order = np.argsort(qid, kind='stable'); "
            "X, y, qid = X[order], y[order], qid[order]).")
    return np.append(starts, n_samples).astype(np.intp)


class RankingTarget:
    """Relevance grades with their query structure (the ranker's ``y``).

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Non-negative relevance grades.
    offsets : ndarray of shape (n_queries + 1,)
    query_weight : ndarray of shape (n_queries,) or None
    label_gain : {"exponential", "linear"}
    """

    def __init__(self, labels, offsets, query_weight=None, label_gain="exponential"):
        self.labels = np.ascontiguousarray(labels, dtype=np.float64)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.intp)
        self.query_weight = (None if query_weight is None
                             else np.ascontiguousarray(query_weight, dtype=np.float64))
        self.label_gain = label_gain
        self.gains = label_gains(self.labels, label_gain)
        sizes = np.diff(self.offsets)
        self.max_query_size = int(sizes.max()) if sizes.size else 0
        self.discount = discounts(max(self.max_query_size, 1))
        self._max_dcg = {}
        self._work = None

    @property
    def n_samples(self):
        return self.labels.shape[0]

    @property
    def n_queries(self):
        return self.offsets.shape[0] - 1

    @property
    def shape(self):
        # the boosting loop only reads the number of rows from targets
        return (1, self.n_samples)

    def query_index(self):
        """Query number of each row."""
        return np.repeat(np.arange(self.n_queries), np.diff(self.offsets))

    def take(self, rows):
        """The target restricted to ``rows`` (sorted indices of whole queries)."""
        rows = np.asarray(rows)
        q = self.query_index()[rows]
        starts = np.concatenate([[0], np.flatnonzero(q[1:] != q[:-1]) + 1])
        offsets = np.append(starts, rows.shape[0])
        qw = None if self.query_weight is None else self.query_weight[q[starts]]
        return RankingTarget(self.labels[rows], offsets, qw, self.label_gain)

    def max_dcg(self, k):
        """Ideal DCG@k of each query (``k <= 0``: whole list); cached."""
        key = int(k) if k else 0
        if key not in self._max_dcg:
            q = self.query_index()
            order = np.lexsort((-self.gains, q))  # by query, best grade first
            rank = np.arange(self.n_samples) - self.offsets[q[order]]
            keep = rank < key if key > 0 else np.ones(self.n_samples, dtype=bool)
            contrib = self.gains[order][keep] * self.discount[rank[keep]]
            self._max_dcg[key] = np.bincount(q[order][keep], weights=contrib,
                                             minlength=self.n_queries)
        return self._max_dcg[key]

    def work_buffers(self):
        """Scratch arrays of the kernels, allocated once per target."""
        if self._work is None:
            n = self.n_samples
            self._work = (np.empty(n, dtype=np.intp), np.empty(n, dtype=np.intp),
                          np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64))
        return self._work

    def ndcg_per_query(self, scores, k, n_threads=1):
        """NDCG@k of each query ranked by ``scores``; a query without any
        relevant document scores 1 (LightGBM's and XGBoost's convention)."""
        scores = np.ascontiguousarray(scores, dtype=np.float64)
        idx, tmp, _, _ = self.work_buffers()
        dcg = np.empty(self.n_queries, dtype=np.float64)
        _lambdarank.dcg_at_k(self.gains, scores, self.offsets, self.discount, int(k or 0),
                             threads_for(self.n_samples * 8, n_threads), idx, tmp, dcg)
        ideal = self.max_dcg(k)
        out = np.ones(self.n_queries)
        pos = ideal > 0
        out[pos] = dcg[pos] / ideal[pos]
        return out

    def ndcg(self, scores, k, n_threads=1):
        """Mean NDCG@k over queries (weighted by query weight)."""
        per_query = self.ndcg_per_query(scores, k, n_threads)
        return float(np.average(per_query, weights=self.query_weight))


class LambdaRankLoss(BaseLoss):
    """LambdaMART for NDCG in the engine's loss interface.

    ``loss`` returns ``-NDCG@eval_at``, so the boosting loop's scores
    (``-loss``) are the NDCG itself and early stopping maximises it.

    Parameters
    ----------
    eval_at : int or None
        ``k`` of the NDCG used for ``loss`` (``None``: whole list).
    truncation_level : int or None
        Only pairs with a document in the current top ``truncation_level``
        get a gradient, and the ideal DCG is taken at that depth (LightGBM's
        ``lambdarank_truncation_level``); ``None``: all pairs, full NDCG.
    sigma : float
    norm : bool
    n_threads : int
    """

    # BaseLoss supplies the engine's defaults for any other loss attribute
    name = "lambdarank"
    refits_leaves = False
    is_multiclass = False
    unit_hessians = False

    def __init__(self, eval_at=10, truncation_level=None, sigma=1.0, norm=True, n_threads=1):
        super().__init__(1)
        self.eval_at = eval_at
        self.truncation_level = truncation_level
        self.sigma = sigma
        self.norm = norm
        self.n_threads = n_threads

    def baseline(self, y, sample_weight):
        # NDCG is invariant to a constant shift of the scores
        return np.zeros(1)

    def prepare(self, y, raw, sample_weight):
        pass

    def gradients(self, y, raw, sample_weight, n_threads, gradients, hessians):
        """Fill float32 ``gradients``/``hessians`` of shape ``(1, n)``.

        ``sample_weight`` is ignored here: query weights travel in ``y``.
        """
        trunc = int(self.truncation_level or 0)
        ideal = y.max_dcg(trunc)
        inv = np.zeros_like(ideal)
        np.divide(1.0, ideal, out=inv, where=ideal > 0)
        idx, tmp, gbuf, hbuf = y.work_buffers()
        qw = _NO_WEIGHTS if y.query_weight is None else y.query_weight
        work = y.n_samples * max(1, min(y.max_query_size, trunc or y.max_query_size))
        _lambdarank.lambdarank_gradients(
            y.labels, y.gains, np.ascontiguousarray(raw[0]), y.offsets, inv, qw, y.discount,
            trunc, float(self.sigma), bool(self.norm), threads_for(work, n_threads),
            idx, tmp, gbuf, hbuf, gradients[0], hessians[0])

    def loss(self, y, raw, sample_weight=None):
        return -y.ndcg(raw[0], self.eval_at, self.n_threads)

    def predict(self, raw):
        return raw

