"""Request bodies -> query arrays, and answers -> response bodies.

Everything here treats its input as untrusted: a body that is not what the
endpoint expects raises :class:`BadRequest` (an HTTP 400) with a message
naming the problem, never another exception. Two request formats:

* ``/predict``: ``{"instances": [[f1, f2, ...], ...]}`` (``"X"`` also), rows as
  lists or as objects keyed by feature name; ``"proba": true`` asks for
  probabilities.
* The Open Inference Protocol v2 (KServe, Triton, MLServer):
  ``{"inputs": [{"name", "shape", "datatype", "data"}], "outputs": [...]}``
  with one ``[n, p]`` tensor, or one ``[n]`` (or ``[n, 1]``) tensor per
  named feature.
"""

import itertools
import json
import math

import numpy as np

__all__ = ["BadRequest", "loads", "rows_to_array", "v2_inputs_to_array", "v2_outputs",
           "wants_proba"]

# JSON numbers with more digits than this are refused before conversion (a
# float64 holds ~17 significant digits; 400-digit integers are an attack, not
# data).
_MAX_NUMBER_CHARS = 64
_NUMERIC = (int, float)
_ALLOWED = {int, float, type(None)}
_V2_NUMERIC = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
               "INT64", "FP16", "FP32", "FP64"}


class BadRequest(ValueError):
    """The request body is malformed (HTTP 400)."""


def _bad_constant(name):
    raise BadRequest(f"{name} is not a finite number; send finite feature values "
                     "(null for a missing value)")


def _parse_int(s):
    if len(s) > _MAX_NUMBER_CHARS:
        raise BadRequest(f"integer with {len(s)} digits is too long")
    return int(s)


def loads(body):
    """Parse a JSON body strictly: no NaN/Infinity literals, bounded integers and nesting.

    Floats are parsed at C speed (a Python callback per number would cost more
    than the model); one that overflows (``1e999``) becomes ``inf`` and is
    refused when the rows are converted (:func:`rows_to_array`).
    """
    try:
        return json.loads(body, parse_constant=_bad_constant, parse_int=_parse_int)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def _value(v, where):
    if v is None:
        return math.nan  # a missing value; the pool refuses it unless the model takes NaN
    if type(v) not in _NUMERIC:  # bool is an int subclass: type(), not isinstance()
        raise BadRequest(f"{where}: feature values must be numbers or null, got {v!r:.40}")
    return v


def _object_row(row, i, names):
    """Row ``i`` given as an object keyed by feature name -> its values in
    the model's feature order."""
    if not isinstance(row, dict):
        raise BadRequest(f"row {i}: mixes objects and lists")
    if len(row) != len(names) or any(n not in row for n in names):
        missing = [n for n in names if n not in row][:5]
        extra = [n for n in row if n not in set(names)][:5]
        raise BadRequest(f"row {i}: features must be exactly the model's "
                         f"{len(names)}; missing {missing}, unknown {extra}")
    return [row[n] for n in names]


def _label_value(v, where):
    """A value of a label column: a JSON scalar (its label) or null (missing)."""
    if v is None or type(v) in (str, int, float, bool):
        return v
    raise BadRequest(f"{where}: a categorical feature's value must be a label (string, "
                     f"number or boolean) or null, got {v!r:.40}")


def _rows_with_labels(rows, n_features, feature_names, labels):
    """Rows of a model with label columns -> float64 codes (n, p): label
    columns take any JSON scalar, encoded as the model encodes them
    (:mod:`dartboost.serving._labels`); the others take numbers or null."""
    from ._labels import encode_labels

    if isinstance(rows[0], dict):
        if feature_names is None:
            raise BadRequest("rows given as objects, but the model has no feature names; "
                             "send rows as lists")
        names = list(feature_names)
        table = [_object_row(row, i, names) for i, row in enumerate(rows)]
    else:
        table = rows
        for i, row in enumerate(table):
            if not isinstance(row, list):
                raise BadRequest(f"instances must be a rectangular array: row {i} is not a list")
            if len(row) != len(table[0]):
                raise BadRequest(f"instances must be a rectangular array: row {i} has "
                                 f"{len(row)} values, row 0 has {len(table[0])}")
        if n_features is not None and len(table[0]) != n_features:
            raise BadRequest(f"rows have {len(table[0])} features, the model expects "
                             f"{n_features}")
    p = len(table[0])
    names = feature_names if feature_names is not None else [str(j) for j in range(p)]
    X = np.empty((len(table), p))
    for j in range(p):
        column = [row[j] for row in table]
        if j in labels:
            X[:, j] = encode_labels([_label_value(v, f"row {i}, {names[j]!r}")
                                     for i, v in enumerate(column)], labels[j])
        else:
            X[:, j] = [_value(v, f"row {i}, {names[j]!r}") for i, v in enumerate(column)]
    _check_finite(X)
    return X


def rows_to_array(rows, n_features, feature_names, max_rows, labels=None):
    """``instances`` (rows as lists or name -> value objects) -> float64 array (n, p).

    ``labels``: ``{column: category list}`` of a model's label columns
    (:func:`dartboost.serving._labels.label_columns`); their values may be
    strings and are sent on as the model's codes.
    """
    if not isinstance(rows, list) or not rows:
        raise BadRequest('"instances" must be a non-empty list of rows')
    if len(rows) > max_rows:
        raise BadRequest(f"{len(rows)} rows in one request; at most {max_rows} are accepted")
    if labels:
        return _rows_with_labels(rows, n_features, feature_names, labels)
    if isinstance(rows[0], dict):
        if feature_names is None:
            raise BadRequest("rows given as objects, but the model has no feature names; "
                             "send rows as lists of numbers")
        names = list(feature_names)
        out = np.empty((len(rows), len(names)))
        for i, row in enumerate(rows):
            values = _object_row(row, i, names)
            out[i] = [_value(v, f"row {i}, {n!r}") for n, v in zip(names, values)]
        return out
    width = None
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise BadRequest(f"instances must be a rectangular array of numbers: row {i} "
                             "is not a list")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise BadRequest(f"instances must be a rectangular array of numbers: row {i} "
                             f"has {len(row)} values, row 0 has {width}")
    # type(), not isinstance(): bool is an int subclass. One C-speed pass.
    kinds = set(map(type, itertools.chain.from_iterable(rows)))
    if not kinds <= _ALLOWED:
        for i, row in enumerate(rows):
            for v in row:
                if type(v) not in _ALLOWED:
                    raise BadRequest(f"instances must be a rectangular array of numbers: "
                                     f"row {i} holds {v!r:.40}")
    X = np.array(rows, dtype=np.float64)  # None -> nan (missing)
    _check_finite(X)
    if n_features is not None and X.shape[1] != n_features:
        raise BadRequest(f"rows have {X.shape[1]} features, the model expects {n_features}")
    return X


def _check_finite(X):
    bad = np.isinf(X)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise BadRequest(f"value at row {i}, column {j} overflows a float64 (not finite); "
                         "send finite feature values")


def _flatten(data, where):
    if isinstance(data, list):
        # Fast paths: a flat list or a list of lists of numbers.
        if set(map(type, data)) <= {int, float}:
            return np.asarray(data, dtype=np.float64)
        if all(type(row) is list for row in data) and set(
                map(type, itertools.chain.from_iterable(data))) <= {int, float}:
            return np.asarray(list(itertools.chain.from_iterable(data)), dtype=np.float64)
    flat = []
    stack = [data]
    while stack:  # iterative: no recursion depth for hostile nesting
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif type(item) in _NUMERIC or type(item) is bool:
            flat.append(float(item))
        else:
            raise BadRequest(f"{where}: data must hold numbers, got {item!r:.40}")
    return np.asarray(flat, dtype=np.float64)


def _labels_of_tensor(data, where):
    """The strings (or nulls) of a BYTES tensor, flattened."""
    flat, stack = [], [data]
    while stack:  # iterative: no recursion depth for hostile nesting
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif item is None or type(item) is str:
            flat.append(item)
        else:
            raise BadRequest(f"{where}: BYTES data must hold strings or null, got {item!r:.40}")
    return np.asarray(flat, dtype=object)


def _tensor(inp, i, max_rows, allow_bytes=False):
    if not isinstance(inp, dict):
        raise BadRequest(f"inputs[{i}] must be an object")
    for key in ("name", "shape", "datatype", "data"):
        if key not in inp:
            raise BadRequest(f"inputs[{i}] needs {key!r}")
    shape, dtype = inp["shape"], inp["datatype"]
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
            or any(type(s) is not int or s < 0 for s in shape)):
        raise BadRequest(f"inputs[{i}].shape must be [n] or [n, p] of non-negative integers")
    if dtype not in _V2_NUMERIC and not (allow_bytes and dtype == "BYTES"):
        raise BadRequest(f"inputs[{i}].datatype {dtype!r:.40} is not numeric "
                         f"(one of {sorted(_V2_NUMERIC)}"
                         f"{'; BYTES for a categorical feature' if allow_bytes else ''})")
    if shape[0] > max_rows:
        raise BadRequest(f"{shape[0]} rows in one request; at most {max_rows} are accepted")
    if dtype == "BYTES":
        data = _labels_of_tensor(inp["data"], f"inputs[{i}]")
    else:
        data = _flatten(inp["data"], f"inputs[{i}]")
        _check_finite(data.reshape(1, -1))
    if data.size != int(np.prod(shape)):
        raise BadRequest(f"inputs[{i}]: shape {shape} needs {int(np.prod(shape))} values, "
                         f"data has {data.size}")
    return str(inp["name"]), data.reshape(shape)


def v2_inputs_to_array(doc, n_features, feature_names, max_rows, labels=None):
    """An Open Inference Protocol v2 infer request -> float64 array (n, p).

    ``labels`` (a model's label columns, as for :func:`rows_to_array`): their
    values are labels -- numbers, or strings in a ``BYTES`` tensor of that
    one feature -- sent on as the model's codes.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest('body must be an object with a non-empty "inputs" list')
    tensors = [_tensor(inp, i, max_rows, allow_bytes=bool(labels))
               for i, inp in enumerate(doc["inputs"])]
    if len(tensors) == 1 and (tensors[0][1].ndim == 2 and tensors[0][1].shape[1] != 1
                              or n_features == 1):
        X = tensors[0][1]
        X = X.reshape(-1, 1) if X.ndim == 1 else X
    else:
        # One tensor per feature, matched by name.
        if feature_names is None:
            raise BadRequest("several inputs need a model with feature names; send one "
                             "[n, p] tensor instead")
        by_name = {name: t.reshape(-1) for name, t in tensors}
        missing = [n for n in feature_names if n not in by_name][:5]
        extra = [n for n in by_name if n not in set(feature_names)][:5]
        if missing or extra:
            raise BadRequest(f"inputs must be the model's features; missing {missing}, "
                             f"unknown {extra}")
        lengths = {by_name[n].size for n in feature_names}
        if len(lengths) != 1:
            raise BadRequest(f"feature inputs have different lengths {sorted(lengths)}")
        if labels:
            return _encode_v2_columns([by_name[n] for n in feature_names], feature_names,
                                      labels)
        X = np.stack([by_name[n] for n in feature_names], axis=1)
    if X.dtype == object:
        raise BadRequest("a BYTES tensor must hold one categorical feature; send the "
                         "features as one tensor each")
    if labels and X.shape[0] and (n_features is None or X.shape[1] == n_features):
        names = feature_names if feature_names is not None else \
            [str(j) for j in range(X.shape[1])]
        X = _encode_v2_columns([X[:, j] for j in range(X.shape[1])], names, labels)
    if X.shape[0] == 0:
        raise BadRequest("no rows to predict")
    if n_features is not None and X.shape[1] != n_features:
        raise BadRequest(f"rows have {X.shape[1]} features, the model expects {n_features}")
    return X


def _encode_v2_columns(columns, names, labels):
    """Per-feature v2 columns -> float64 codes: label columns encoded as the
    model encodes them, the others numbers (a BYTES one is refused)."""
    from ._labels import encode_labels

    X = np.empty((columns[0].size, len(columns)))
    for j, col in enumerate(columns):
        if j in labels:
            X[:, j] = encode_labels(col, labels[j])
        elif col.dtype == object:
            raise BadRequest(f"input {names[j]!r} is BYTES, but that feature is numeric")
        else:
            X[:, j] = col
    if X.shape[0] == 0:
        raise BadRequest("no rows to predict")
    return X


def wants_proba(doc):
    """Whether a v2 request names ``predict_proba`` among its outputs."""
    outs = doc.get("outputs") if isinstance(doc, dict) else None
    if outs is None:
        return False
    if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
        raise BadRequest('"outputs" must be a list of objects with a "name"')
    names = {o.get("name") for o in outs}
    unknown = names - {"predict", "predict_proba", "approximate"}
    if unknown:
        raise BadRequest(f"unknown outputs {sorted(map(str, unknown))[:5]}; "
                         "available: predict, predict_proba, approximate")
    return "predict_proba" in names


def _datatype(values):
    if values.dtype.kind == "b":
        return "BOOL"
    if values.dtype.kind in "iu":
        return "INT64"
    if values.dtype.kind == "f":
        return "FP64"
    return "BYTES"


def _plain(values):
    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        return values.reshape(-1).tolist()
    return [str(v) for v in values.reshape(-1)]


def v2_outputs(values, approximate, proba=None):
    """The ``outputs`` list of a v2 infer response."""
    values = np.asarray(values)
    outs = [{"name": "predict", "shape": list(values.shape), "datatype": _datatype(values),
             "data": _plain(values)},
            {"name": "approximate", "shape": [len(approximate)], "datatype": "BOOL",
             "data": np.asarray(approximate).tolist()}]
    if proba is not None:
        outs.append({"name": "predict_proba", "shape": list(proba.shape), "datatype": "FP64",
                     "data": proba.reshape(-1).tolist()})
    return outs
