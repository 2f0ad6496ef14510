"""Categorical features on Dask: one category list per feature, agreed globally.

A local fit encodes a label column (pandas ``category``, string, object or
bool) as the position of each label in the column's category list
(:mod:`dartboost._categorical`); a distributed fit must use the lists a local
fit on the concatenated partitions (``X.compute()``) would find:

* a ``category`` column with *known* categories (the collection's dtype says
  them): those categories, in their order; a partition whose categories
  differ is an error (Dask's dtype would be wrong);
* a ``category`` column with *unknown* categories: the union of the
  partitions' categories in order of first appearance (what concatenating
  the partitions gives);
* a string, object or bool column: the sorted distinct labels of all rows
  (each partition sends its own distinct labels, never its rows).

The partitions are then encoded where they lie (a ``map_partitions`` step,
so Dask recomputes an encoded partition lost with its worker), and the
binner keeps the frequent levels and pools the rest from its row sample,
exactly as a local fit does.
"""
import numpy as np

from .. import _categorical


def _kind(col):
    """``"category"``, ``"labels"`` (string/object/bool) or ``"numbers"``."""
    import pandas as pd
    if isinstance(col.dtype, pd.CategoricalDtype):
        return "category"
    return "labels" if _categorical._needs_codes(col) else "numbers"


def partition_summary(df, columns, label_columns):
    """What one partition says about its label columns (runs on a worker).

    Returns
    -------
    (n_rows, columns, {j: (kind, labels)})
        ``labels``: a ``category`` column's categories (its order), or the
        sorted distinct labels of a string/object column.
    """
    found = [str(c) for c in df.columns]
    if found != columns:
        return len(df), found, {}
    out = {}
    for j in label_columns:
        col = df.iloc[:, j]
        kind = _kind(col)
        if kind == "category":
            out[j] = (kind, [_categorical._plain(c) for c in col.dtype.categories])
        elif kind == "labels":
            out[j] = (kind, _categorical._labels_of(col))
        else:
            out[j] = (kind, None)
    return len(df), found, out


def encode_partition(df, categories, partition_info=None):
    """A partition with its label columns as category codes, all float64
    (``partition_info``: Dask's, to name the partition in an error)."""
    try:
        return _categorical.encode(df, None, categories).astype(np.float64)
    except (TypeError, ValueError) as exc:
        where = ("a partition" if not partition_info
                 else f"partition {partition_info.get('number')}")
        raise ValueError(f"{where} of X has values that are neither numbers nor labels of a "
                         f"categorical column: {exc}") from None


def _union_in_order(lists):
    seen, out = set(), []
    for labels in lists:
        for label in labels:
            if label not in seen:
                seen.add(label)
                out.append(label)
    return out


def resolve_mask(spec, X, n_features, names):
    """The categorical features of a dask collection (its dtypes for
    ``"from_dtype"``: the meta frame of a dataframe; none for an array)."""
    meta = getattr(X, "_meta", None) if _is_dask_dataframe(X) else None
    return _categorical.resolve_categorical(spec, meta, n_features, names)


def _is_dask_dataframe(obj):
    return type(obj).__module__.startswith("dask.dataframe") and hasattr(obj, "columns")


def prepare(client, X, spec):
    """Categorical features of ``X`` and ``X`` ready for training.

    Returns
    -------
    X : collection
        ``X`` itself, or (a dataframe with label columns) its partitions
        encoded as float64 codes.
    mask : ndarray of bool
    categories : list or None
        Per feature, the category list of a label column (else ``None``);
        ``None`` when no feature has labels.
    lengths : tuple of int or None
        Row counts of the encoded partitions (known from the summaries).
    held : collection or list
        X persisted, to keep until the fit has computed its own partitions.

    Raises
    ------
    ValueError
        A label column that is not categorical, a column whose kind (category
        or labels) differs between partitions, partitions whose columns
        differ, or known categories that a partition contradicts.
    """
    if not _is_dask_dataframe(X):
        if getattr(X, "ndim", 2) != 2:
            return X, np.zeros(0, dtype=bool), None, None, []  # the shape error comes later
        mask = resolve_mask(spec, X, int(X.shape[1]), None)
        return X, mask, None, None, []
    meta = X._meta
    names = np.asarray(meta.columns, dtype=object)
    mask = resolve_mask(spec, X, len(names), names)
    kinds = [_kind(meta.iloc[:, j]) for j in range(len(names))]
    stray = [str(names[j]) for j, k in enumerate(kinds) if k != "numbers" and not mask[j]]
    if stray:
        raise TypeError(f"X has non-numeric columns {stray[:5]} that are not categorical "
                        f"features (categorical_features={spec!r}); declare them categorical "
                        "or encode them as numbers.")
    label_columns = [j for j in np.flatnonzero(mask) if kinds[j] != "numbers"]
    if not label_columns:
        return X, mask, None, None, []
    columns = [str(c) for c in names]
    # X is persisted first: its partitions are read once (the summaries and
    # the encoding read the same ones), and until the fit has computed its
    # encoded partitions (``held``); Dask recomputes a lost one from its graph
    import dask
    X = client.persist(X)
    summarise = dask.delayed(partition_summary, pure=False)
    summaries = client.gather(client.compute(
        [summarise(part, columns, label_columns) for part in X.to_delayed()]))
    for p, (_, found, _) in enumerate(summaries):
        if found != columns:
            raise ValueError(f"partition {p} of X has columns {found[:8]}, the collection "
                             f"declares {columns[:8]}; all partitions need the same columns.")
    categories = [None] * len(names)
    for j in label_columns:
        categories[j] = _agree(str(names[j]), kinds[j], meta.iloc[:, j],
                               [s[2][j] for s in summaries])
    lengths = tuple(int(s[0]) for s in summaries)
    float_meta = meta.astype(dict.fromkeys(meta.columns, np.float64))
    encoded = X.map_partitions(encode_partition, categories, meta=float_meta)
    return encoded, mask, categories, lengths, X


def _agree(name, kind, meta_col, reports):
    """The category list of label column ``name`` from its partitions'
    ``(kind, labels)`` reports (partition order)."""
    import pandas as pd
    for p, report in enumerate(reports):
        if report[0] != kind:
            raise ValueError(f"column {name!r} is {_what(kind)} in the collection's dtypes "
                             f"but {_what(report[0])} in partition {p} of X; give it one "
                             "dtype in every partition (e.g. astype('category')).")
    if kind == "labels":
        merged = [label for _, labels in reports for label in labels]
        return _categorical._labels_of(pd.Series(merged, dtype=object))
    if _has_known_categories(meta_col):
        declared = _categorical._labels_of(meta_col)
        for p, (_, labels) in enumerate(reports):
            if labels != declared:
                raise ValueError(f"partition {p} of X has categories {labels[:8]} for column "
                                 f"{name!r}, but the collection declares {declared[:8]}; "
                                 "call X[...].cat.as_unknown() or fix the partitions' "
                                 "categories.")
        return declared
    return _union_in_order(labels for _, labels in reports)


def _has_known_categories(meta_col):
    """Whether a meta column's categories are real (Dask marks unknown ones
    with a placeholder category)."""
    from dask.dataframe.utils import UNKNOWN_CATEGORIES
    return UNKNOWN_CATEGORIES not in meta_col.dtype.categories


def _what(kind):
    return {"category": "a category column", "labels": "a string/object column",
            "numbers": "numeric"}[kind]


def encode_like(X, categories, names):
    """``(collection, lengths)``: eval data ``X`` encoded with the training
    fit's category lists (a dataframe's columns must be the training ones)."""
    if not _is_dask_dataframe(X):
        return X, True
    found = [str(c) for c in X.columns]
    if names is not None and found != [str(c) for c in names]:
        raise ValueError(f"its columns {found[:8]} differ from the training X's "
                         f"{[str(c) for c in names][:8]}.")
    if categories is None:
        return X, True
    float_meta = X._meta.astype(dict.fromkeys(X._meta.columns, np.float64))
    return X.map_partitions(encode_partition, categories, meta=float_meta), True
