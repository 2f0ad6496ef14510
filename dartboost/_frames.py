"""pyarrow Tables and polars DataFrames as input.

Both are turned into the pandas DataFrame the rest of the input path knows
(:mod:`dartboost._categorical`), one column at a time and without a row of
Python objects:

* numeric and boolean columns become float64 NumPy columns (nulls: NaN);
* dictionary columns (pyarrow ``dictionary``, polars ``Categorical`` and
  ``Enum``) become pandas ``category`` columns built from their codes, with
  the dictionary as the categories (in its order, as ``to_pandas()`` does;
  the chunks of a column are unified first);
* string columns become ``category`` columns whose categories are their
  sorted distinct labels -- the list a pandas ``object`` column gets -- so a
  fit on the table and on ``table.to_pandas()`` learns the same model.

Column names are kept, so ``feature_names_in_`` and ``categorical_features``
by name work as with pandas. Neither library is imported unless the input
is one of its objects (both are optional dependencies).
"""
import numpy as np


def _module_of(X):
    return type(X).__module__.split(".")[0]


def is_arrow_table(X):
    """A ``pyarrow.Table`` or ``pyarrow.RecordBatch``."""
    return _module_of(X) == "pyarrow" and hasattr(X, "schema") and hasattr(X, "column_names")


def is_polars_frame(X):
    """A polars ``DataFrame`` (a ``LazyFrame`` is refused: collect it first)."""
    if _module_of(X) != "polars":
        return False
    if type(X).__name__ == "LazyFrame":
        raise TypeError("X is a polars LazyFrame; call .collect() first.")
    return hasattr(X, "to_arrow") and hasattr(X, "columns")


def as_frame(X):
    """``X`` as a pandas DataFrame when it is a pyarrow Table/RecordBatch or
    a polars DataFrame; any other ``X`` unchanged."""
    if is_polars_frame(X):
        names = list(X.columns)
        columns = [X.to_series(j).to_arrow() for j in range(X.width)]
    elif is_arrow_table(X):
        names = list(X.column_names)
        columns = [X.column(j) for j in range(X.num_columns)]
    else:
        _check_pandas_columns(X)
        return X
    import pandas as pd
    data = {j: _column(col, name) for j, (name, col) in enumerate(zip(names, columns))}
    frame = pd.DataFrame(data, index=pd.RangeIndex(len(columns[0]) if columns else 0))
    frame.columns = pd.Index(names, dtype=object)
    return frame


def _check_pandas_columns(X):
    """Refuse a pandas frame's columns that are neither numbers, booleans nor
    labels (dates, durations, periods, intervals, complex numbers), naming
    them: NumPy's own error on converting the frame names no column."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(X, "iloc") or not hasattr(dtypes, "items"):
        return
    import pandas as pd
    for name, dtype in dtypes.items():
        kind = getattr(dtype, "kind", "O")
        if kind in "mMc" or isinstance(dtype, (pd.PeriodDtype, pd.IntervalDtype)):
            raise TypeError(f"column {name!r} has dtype {dtype}; give numbers, booleans, "
                            "strings or categories (e.g. convert dates to numbers or to "
                            "their components first).")


def _column(col, name):
    """One Arrow column (Array or ChunkedArray) as a NumPy or pandas column."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if isinstance(col, pa.ChunkedArray) and not pa.types.is_dictionary(col.type):
        col = col.combine_chunks()
    kind = col.type
    if pa.types.is_dictionary(kind):
        return _from_dictionary(col, sort=False)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or \
            str(kind) == "string_view":
        if str(kind) == "string_view":
            col = col.cast(pa.large_string())
        return _from_dictionary(pc.dictionary_encode(col), sort=True)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
            or pa.types.is_decimal(kind):
        return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False),
                          dtype=np.float64)
    if pa.types.is_null(kind):
        return np.full(len(col), np.nan)
    raise TypeError(f"column {name!r} has Arrow type {kind}; give numbers, booleans, "
                    "strings or dictionary (categorical) columns.")


def _from_dictionary(col, sort):
    """A dictionary-encoded Arrow column as a pandas Categorical, from its
    codes; ``sort``: the categories in sorted order (a string column's)."""
    import pandas as pd
    import pyarrow as pa
    if isinstance(col, pa.ChunkedArray):
        col = col.unify_dictionaries()
        chunks = col.chunks
        dictionary = chunks[0].dictionary if chunks else pa.array([], pa.string())
        indices = (pa.chunked_array([c.indices for c in chunks], type=col.type.index_type)
                   .combine_chunks() if chunks else pa.array([], col.type.index_type))
    else:
        dictionary, indices = col.dictionary, col.indices
    codes = np.asarray(indices.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False))
    # distinct non-null labels in dictionary order (Arrow does not require a
    # dictionary to be unique or null-free; pandas categories must be)
    position, labels = {}, []
    remap = np.full(len(dictionary) + 1, -1, dtype=np.int64)  # the last: code -1
    for i, label in enumerate(dictionary.to_pylist()):
        if label is None:
            continue
        if label not in position:
            position[label] = len(labels)
            labels.append(label)
        remap[i] = position[label]
    if sort and labels:
        order = sorted(range(len(labels)), key=labels.__getitem__)
        rank = np.empty(len(labels), dtype=np.int64)
        rank[order] = np.arange(len(labels))
        labels = [labels[i] for i in order]
        remap[remap >= 0] = rank[remap[remap >= 0]]
    return pd.Categorical.from_codes(remap[codes], categories=pd.Index(labels, dtype=object))
