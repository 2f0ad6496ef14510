"""Which features are categorical, and category labels to numeric codes.

The engine sees categorical features as numbers: every finite value is a
category label (the binner keeps the most frequent ones, see
:mod:`dartboost._binning`). Columns whose labels are not numbers -- a pandas
``category`` column, a string or object column -- are encoded here, once per
fit, as the position of the label in the column's category list; the lists
are part of the model, so predictions on new frames encode the same way.

Conventions (documented in ``docs/categorical.md``):

* a missing label (NaN, None, ``pd.NA``) becomes NaN and follows the split's
  missing direction;
* a label not in the fitted list (an unseen category) becomes ``-1``, a code
  no tree has seen, so it goes right at every categorical split (with the
  rare categories pooled in training).
"""
import numbers

import numpy as np

from ._model_format import FormatError

#: Code of a label that was not seen in fit.
UNSEEN_CODE = -1.0
#: Longest stored category label (characters) and most levels of one
#: feature a model file may hold: a header must not make the loader allocate
#: without bound.
MAX_LABEL_CHARS = 1024
MAX_CATEGORIES = 10_000_000


def _is_frame(X):
    return hasattr(X, "columns") and hasattr(X, "dtypes") and hasattr(X, "iloc")


def _is_label_column(dtype):
    """A pandas column dtype whose values are labels, not numbers."""
    import pandas as pd
    return (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype))


def resolve_categorical(spec, X, n_features, feature_names):
    """Boolean mask of the categorical features.

    Parameters
    ----------
    spec : "from_dtype", None, or array-like of int, bool or str
        ``"from_dtype"``: a DataFrame's ``category``, string and object
        columns (none for arrays); ``None``: none; indices, a boolean mask
        of length ``n_features`` or feature names.
    X : the input given to fit
    n_features : int
    feature_names : ndarray of str or None

    Raises
    ------
    ValueError
        Naming the bad entry of ``spec``.
    """
    mask = np.zeros(n_features, dtype=bool)
    if spec is None:
        return mask
    if isinstance(spec, str):
        if spec != "from_dtype":
            raise ValueError(f"categorical_features={spec!r}: expected 'from_dtype', None, "
                             "indices, a boolean mask or feature names.")
        if _is_frame(X):
            mask[:] = [_is_label_column(dt) for dt in X.dtypes]
        return mask
    values = np.asarray(spec)
    if values.ndim != 1:
        raise ValueError(f"categorical_features must be 1-D, got shape {values.shape}.")
    if values.size == 0:
        return mask
    if values.dtype.kind == "b":
        if values.size != n_features:
            raise ValueError(f"categorical_features is a boolean mask of {values.size} "
                             f"entries; X has {n_features} features.")
        return values.copy()
    if values.dtype.kind in "iu":
        bad = values[(values < 0) | (values >= n_features)]
        if bad.size:
            raise ValueError(f"categorical_features has index {int(bad[0])} outside "
                             f"[0, {n_features}).")
        mask[values] = True
        return mask
    if values.dtype.kind in "UO":
        if feature_names is None:
            raise ValueError("categorical_features names features, but X has no feature "
                             "names (fit on a pandas DataFrame to use names).")
        names = {str(n): i for i, n in enumerate(feature_names)}
        for name in values:
            if not isinstance(name, str) or name not in names:
                raise ValueError(f"categorical_features: {name!r} is not a feature name "
                                 f"of X.")
            mask[names[name]] = True
        return mask
    raise ValueError(f"categorical_features of dtype {values.dtype} is not supported: "
                     "give indices, a boolean mask or feature names.")


def _column(X, j):
    return X.iloc[:, j] if _is_frame(X) else np.asarray(X)[:, j]


def _needs_codes(col):
    """A column whose labels must be encoded (not numbers)."""
    if hasattr(col, "dtype") and not isinstance(col.dtype, np.dtype):
        return _is_label_column(col.dtype)  # pandas extension dtypes
    return np.asarray(col).dtype.kind in "OUSb" or _is_label_column(getattr(col, "dtype",
                                                                           object))


def _labels_of(col):
    """Fitted category list of a label column: a pandas ``category`` column's
    categories (its own order), else the sorted distinct non-missing labels."""
    import pandas as pd
    if isinstance(getattr(col, "dtype", None), pd.CategoricalDtype):
        cats = list(col.dtype.categories)
    else:
        series = pd.Series(np.asarray(col, dtype=object))
        cats = series[series.notna()].unique().tolist()
        try:
            cats = sorted(cats)
        except TypeError:  # mixed types: order by their text
            cats = sorted(cats, key=lambda v: (type(v).__name__, str(v)))
    return [_plain(c) for c in cats]


def _plain(label):
    """A JSON-able label: str, int, float or bool (numpy scalars unwrapped)."""
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, (str, bool, numbers.Integral, numbers.Real)):
        return label
    return str(label)


def _encode(col, categories):
    """Codes of a label column against ``categories`` (float64)."""
    import pandas as pd
    if isinstance(getattr(col, "dtype", None), pd.CategoricalDtype):
        # look up the column's categories once, then gather by its codes (no
        # per-row label objects): the codes a label-by-label lookup would give
        cat = col.cat if isinstance(col, pd.Series) else pd.Series(col).cat
        lookup = pd.Index(categories, dtype=object).get_indexer(
            pd.Index(cat.categories, dtype=object)).astype(np.float64)
        lookup[lookup < 0] = UNSEEN_CODE
        row_codes = np.asarray(cat.codes, dtype=np.int64)
        codes = lookup[np.maximum(row_codes, 0)] if lookup.size else \
            np.full(row_codes.size, UNSEEN_CODE)
        codes[row_codes < 0] = np.nan
        return codes
    values = np.asarray(col.astype(object) if isinstance(col, pd.Series) else col, dtype=object)
    missing = pd.isna(values)
    # a hash lookup of every label at once (numpy scalars hash as Python's)
    codes = pd.Index(categories, dtype=object).get_indexer(values).astype(np.float64)
    codes[codes < 0] = UNSEEN_CODE
    codes[missing] = np.nan
    return codes


def fit_categories(X, mask):
    """Category lists of the categorical columns that hold labels (a list of
    length ``n_features``: ``None`` for columns used as numbers)."""
    out = [None] * len(mask)
    for j in np.flatnonzero(mask):
        col = _column(X, j)
        if _needs_codes(col):
            out[j] = _labels_of(col)
    return out


def encode(X, mask, categories):
    """``X`` with its label columns replaced by codes, ready for float
    conversion (a DataFrame stays a DataFrame, keeping its column names)."""
    if not any(c is not None for c in categories):
        return X
    if len(categories) != np.shape(X)[1]:
        return X  # the wrong width is reported by validate_data
    if _is_frame(X):
        X = X.copy()
        for j, cats in enumerate(categories):
            if cats is not None:
                X.isetitem(j, _encode(X.iloc[:, j], cats))
        return X
    X = np.array(X, dtype=object, copy=True)
    for j, cats in enumerate(categories):
        if cats is not None:
            X[:, j] = _encode(X[:, j], cats)
    return X.astype(np.float64)


def check_categories(value, n_features, is_categorical):
    """Stored category lists, bounded and consistent with the binner."""
    if value is None:
        return [None] * n_features
    if not (isinstance(value, list) and len(value) == n_features):
        raise FormatError(f"categories: must be null or a list of {n_features} entries")
    for j, cats in enumerate(value):
        if cats is None:
            continue
        if not is_categorical[j]:
            raise FormatError(f"categories: feature {j} has categories but is not "
                              "categorical")
        if not (isinstance(cats, list) and len(cats) <= MAX_CATEGORIES):
            raise FormatError(f"categories: entry {j} must be a list of at most "
                              f"{MAX_CATEGORIES} labels")
        for c in cats:
            if not isinstance(c, (str, numbers.Real)) or (isinstance(c, str)
                                                          and len(c) > MAX_LABEL_CHARS):
                raise FormatError(f"categories: entry {j} holds a label that is not a "
                                  f"number or a string of at most {MAX_LABEL_CHARS} "
                                  "characters")
        try:
            distinct = len(set(cats)) == len(cats)
        except TypeError:
            distinct = False
        if not distinct:
            raise FormatError(f"categories: entry {j} has repeated labels")
    return value
