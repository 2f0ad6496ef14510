"""Dask collections -> aligned row partitions (checked before any training).

X is a ``dask.array`` (2-D, known row chunks) or a ``dask.dataframe``; y and
sample_weight are 1-D arrays or Series (y may be 2-D for multi-output
regression) partitioned like X. The partitions stay where Dask computes
them; the client only keeps futures.
"""
import numpy as np


def _is_dask_collection(obj):
    from dask.base import is_dask_collection
    return is_dask_collection(obj)


def _is_dataframe(obj):
    # by module, not isinstance: dask.dataframe needs pyarrow, which array
    # users may not have
    return type(obj).__module__.startswith("dask.dataframe")


def _is_numpy_dtype(t):
    try:
        np.dtype(t)
    except TypeError:  # pandas extension dtypes (category, string, ...)
        return False
    return True


def as_dask_array(obj, what, lengths=True, numeric_only=False):
    """``(dask.array, column names or None)`` of a dask array or dataframe.

    ``lengths``: a dataframe's partition lengths when already known (else
    computed); ``numeric_only``: refuse label columns (training's X gets them
    encoded by :mod:`~dartboost.dask._categories`; prediction passes them on
    as objects for the model to encode)."""
    if not _is_dask_collection(obj):
        raise TypeError(f"{what} must be a dask.array or dask.dataframe collection, got a "
                        f"{type(obj).__name__}; use the local estimator (to_local()) for "
                        "in-memory data.")
    names = None
    if _is_dataframe(obj):
        if hasattr(obj, "columns"):
            names = np.asarray(obj.columns, dtype=object)
            dtypes = obj.dtypes if hasattr(obj.dtypes, "items") else {names[0]: obj.dtypes}
            non_numeric = [str(c) for c, t in dtypes.items()
                           if not (np.issubdtype(np.dtype(t), np.number)
                                   if _is_numpy_dtype(t) else False)]
            if non_numeric and numeric_only:
                raise TypeError(f"{what} has non-numeric columns {non_numeric[:5]}; "
                                "declare them categorical (categorical_features) or encode "
                                "them as numbers.")
        import warnings
        with warnings.catch_warnings():
            # label columns (prediction) become objects, as the model expects
            warnings.filterwarnings("ignore", "Dask currently has limited support for "
                                    "converting pandas extension dtypes", UserWarning)
            obj = obj.to_dask_array(lengths=list(lengths) if lengths is not True else True)
    import dask.array as da
    if not isinstance(obj, da.Array):
        raise TypeError(f"{what} must be a dask.array or dask.dataframe collection, got a "
                        f"{type(obj).__name__}.")
    return obj, names


def _row_chunks(arr, what):
    chunks = arr.chunks[0]
    if any(np.isnan(c) for c in chunks):
        raise ValueError(f"{what} has unknown chunk sizes; call {what}.compute_chunk_sizes() "
                         "(or use a dataframe, whose partition lengths are computed).")
    return tuple(int(c) for c in chunks)


def training_partitions(X, y, sample_weight, query=None, lengths=True):
    """Check and align the training collections.

    ``query`` is ``("qid", collection)`` (one id per row, partitioned like
    X) or ``("group", collection)`` (query sizes, one chunk per X partition;
    whether they sum to its rows is checked by :func:`check_queries`).
    ``lengths``: X's partition lengths when known (a dataframe's, else
    computed).

    Returns
    -------
    parts : list of (delayed X, delayed y, delayed sample_weight or None,
        delayed query array or None)
    row_counts : tuple of int
    n_features : int
    feature_names : ndarray or None
    """
    X, names = as_dask_array(X, "X", lengths, numeric_only=True)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got {X.ndim}-D.")
    rows = _row_chunks(X, "X")
    if 0 in rows:
        raise ValueError(f"X has empty partitions (row chunks {rows}); repartition so that "
                         "every partition has rows.")
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})  # one block per row partition
    y, _ = as_dask_array(y, "y")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, got {y.ndim}-D.")
    if _row_chunks(y, "y") != rows:
        raise ValueError(f"X and y are partitioned differently (row chunks {rows} vs "
                         f"{_row_chunks(y, 'y')}); rechunk y to X.chunks[0].")
    if y.ndim == 2 and len(y.chunks[1]) > 1:
        y = y.rechunk({1: -1})
    w_parts = [None] * len(rows)
    if sample_weight is not None:
        w, _ = as_dask_array(sample_weight, "sample_weight")
        if w.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D, got {w.ndim}-D.")
        if _row_chunks(w, "sample_weight") != rows:
            raise ValueError(f"X and sample_weight are partitioned differently (row chunks "
                             f"{rows} vs {_row_chunks(w, 'sample_weight')}).")
        w_parts = list(w.to_delayed().ravel())
    q_parts = [None] * len(rows)
    if query is not None:
        kind, q = query
        q, _ = as_dask_array(q, kind)
        if q.ndim != 1:
            raise ValueError(f"{kind} must be 1-D, got {q.ndim}-D.")
        if kind == "qid" and _row_chunks(q, "qid") != rows:
            raise ValueError(f"X and qid are partitioned differently (row chunks {rows} vs "
                             f"{_row_chunks(q, 'qid')}); a query must lie within one "
                             "partition of X.")
        if kind == "group" and len(q.chunks[0]) != len(rows):
            raise ValueError(f"group has {len(q.chunks[0])} chunks but X has {len(rows)} "
                             "partitions; give one chunk of query sizes per partition of X "
                             "(a query must lie within one partition).")
        q_parts = list(q.to_delayed().ravel())
    x_parts = list(X.to_delayed().ravel())
    y_parts = list(y.to_delayed().ravel())
    return (list(zip(x_parts, y_parts, w_parts, q_parts)), rows, int(X.shape[1]), names)


def _query_summary(kind, q):
    q = np.asarray(q)
    if kind == "group":
        return int(np.sum(q)) if q.dtype.kind in "iuf" else -1
    return np.unique(q)


def check_queries(client, kind, q_futures, row_counts, what="X"):
    """A query must not span partitions: with ``group``, each partition's
    sizes sum to its rows; with ``qid``, no id occurs in two partitions.
    ``what``: the data set named in errors."""
    summaries = client.gather([client.submit(_query_summary, kind, q, pure=False)
                               for q in q_futures])
    if kind == "group":
        for p, (total, n) in enumerate(zip(summaries, row_counts)):
            if total != n:
                raise ValueError(f"the query sizes of group chunk {p} sum to {total} but "
                                 f"partition {p} of {what} has {n} rows: a query must not span "
                                 "partitions (rechunk X, y and group at query boundaries).")
        return
    owner = {}
    for p, ids in enumerate(summaries):
        for qid in ids.tolist():
            if qid in owner:
                raise ValueError(f"query {qid!r} has rows in partitions {owner[qid]} and {p}: "
                                 "a query must not span partitions (rechunk X, y and qid at "
                                 "query boundaries).")
            owner[qid] = p


def as_blocks(X):
    """``(dask array of X with one block per row partition, a dataframe's
    column names or None)`` (for prediction)."""
    X, names = as_dask_array(X, "X") if _is_dataframe(X) else (X, None)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got {X.ndim}-D.")
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X, names
