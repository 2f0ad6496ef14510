"""Monotonic and interaction constraints: parameter resolution.

The grower enforces them (:class:`~dartboost._grower.TreeGrower`): bounds on
node values for ``monotonic_cst``, the features a path may still use for
``interaction_cst``; both follow scikit-learn's HistGradientBoosting.
"""
import itertools
import numbers

import numpy as np


def resolve_monotonic(spec, n_features, feature_names):
    """``monotonic_cst`` as an int8 array of -1/0/1 per feature, or None.

    Parameters
    ----------
    spec : None, array-like of int of length n_features, or dict
        A dict maps feature names (fit on a DataFrame) to -1/0/1; features it
        does not name are unconstrained.
    """
    if spec is None:
        return None
    cst = np.zeros(n_features, dtype=np.int8)
    if isinstance(spec, dict):
        if feature_names is None:
            raise ValueError("monotonic_cst as a dict names features, but X has no feature "
                             "names (fit on a pandas DataFrame to use names).")
        index = {str(n): i for i, n in enumerate(feature_names)}
        for name, value in spec.items():
            if name not in index:
                raise ValueError(f"monotonic_cst: {name!r} is not a feature name of X.")
            cst[index[name]] = _sign(value, name)
        return cst if cst.any() else None
    values = np.asarray(spec)
    if values.shape != (n_features,):
        raise ValueError(f"monotonic_cst has shape {values.shape}; expected ({n_features},) "
                         "(one of -1, 0, 1 per feature).")
    for j, value in enumerate(values.tolist()):
        cst[j] = _sign(value, j)
    return cst if cst.any() else None


def _sign(value, where):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value not in (-1, 0, 1):
        raise ValueError(f"monotonic_cst[{where!r}] = {value!r}; must be -1, 0 or 1.")
    return int(value)


def resolve_interactions(spec, n_features):
    """``interaction_cst`` as a list of feature-index groups, or None.

    ``"pairwise"``: every pair; ``"no_interactions"``: every feature alone;
    else a list of groups of feature indices. Features in no group form one
    more group together (scikit-learn's rule).
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec == "pairwise":
            return [[a, b] for a, b in itertools.combinations(range(n_features), 2)] \
                or [[0]]
        if spec == "no_interactions":
            return [[j] for j in range(n_features)]
        raise ValueError(f"interaction_cst={spec!r}: expected 'pairwise', "
                         "'no_interactions' or a list of feature groups.")
    groups = []
    for k, group in enumerate(spec):
        try:
            members = list(group)
        except TypeError:
            raise ValueError(f"interaction_cst[{k}] = {group!r} is not a group of feature "
                             "indices.") from None
        for j in members:
            if isinstance(j, bool) or not isinstance(j, numbers.Integral) \
                    or not 0 <= j < n_features:
                raise ValueError(f"interaction_cst[{k}] holds {j!r}, not a feature index "
                                 f"in [0, {n_features}).")
        groups.append(sorted({int(j) for j in members}))
    rest = sorted(set(range(n_features)) - {j for g in groups for j in g})
    if rest:
        groups.append(rest)
    return groups


def plain(value):
    """A parameter value as plain JSON-able data (arrays, tuples and sets to
    lists, numpy scalars to Python), for the model header."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [plain(v) for v in items]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value
