"""The stable on-disk model format: a small JSON header plus raw arrays.

Layout of a serialised object (all integers little-endian)::

    0   8  magic  b"DBMODEL\\0"
    8   4  format version (uint32)
    12  4  CRC-32 of the header JSON
    16  8  header length in bytes (uint64)
    24  8  header capacity in bytes (uint64)
    32  .. zero padding up to byte 64
    64  .. header JSON (UTF-8), zero-padded to the header capacity
    ..  .. array regions at the offsets the header records

The header names the payload kind, the estimator's own state header (see
``docs/contracts.md``), and for every array its dtype description, shape, byte
offset, length, reserved capacity and CRC-32. Arrays are raw bytes read back with
``np.frombuffer``; object dtypes are refused when writing and reading, so loading
never executes code. Only the explicit ``"pickle"`` kind does, and only when the
caller passes ``allow_pickle=True`` (trusted input only).

Why regions with reserved capacity: a boosting model grows by appending trees
and rescaling a few DART weights. If each array keeps its offset while it fits
in its region, a new checkpoint differs from the previous one only in the header,
the weights and the appended tail, which is what lets the store update parity
from deltas (see :mod:`dartboost.store._incremental`). The largest array goes
last, so it can grow without moving anything.
"""
import json
import math
import pickle
import struct
import zlib

import numpy as np

MAGIC = b"DBMODEL\x00"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sIIQQ")
HEADER_OFFSET = 64
_ALIGN = 64
KINDS = ("dartboost", "arrays", "pickle")


from ._model_format import FormatError  # one error type for every malformed model


def _round_up(n, m):
    return -(-int(n) // m) * m


def _descr_to_json(descr):
    # dtype descriptions are strings or lists of tuples; JSON keeps the nesting
    if isinstance(descr, str):
        return descr
    return [list(_descr_to_json(x) if isinstance(x, (list, tuple)) else x for x in f)
            for f in descr]


def _descr_from_json(descr):
    if isinstance(descr, str):
        return descr
    if not isinstance(descr, list):
        raise FormatError(f"invalid dtype description {descr!r}")
    out = []
    for f in descr:
        if not isinstance(f, list) or len(f) not in (2, 3):
            raise FormatError(f"invalid dtype field {f!r}")
        name, sub = f[0], f[1]
        sub = sub if isinstance(sub, str) else _descr_from_json(sub)
        out.append((name, sub) if len(f) == 2 else (name, sub, tuple(f[2])))
    return out


def _check_array(name, arr):
    if not isinstance(name, str) or not name:
        raise TypeError(f"array names must be non-empty strings, got {name!r}")
    arr = np.asarray(arr)
    if arr.dtype.hasobject:
        raise TypeError(f"array {name!r} has an object dtype, which the stable format refuses")
    return np.ascontiguousarray(arr)


def plan_layout(header_bytes, arrays, previous=None, growth=2.0, expected_growth=None):
    """Choose the header capacity and each array's offset and capacity.

    Parameters
    ----------
    header_bytes : int
        Length of the header JSON (an upper bound is fine).
    arrays : dict of str to ndarray
        The arrays to place.
    previous : dict or None
        A layout returned earlier. It is kept when the same arrays still fit, so
        unchanged bytes stay where they were.
    growth : float, default=2.0
        Capacity reserved per region as a multiple of its size.
    expected_growth : float or None
        How much the parts that grew since ``previous`` are still expected to
        grow (e.g. ``n_estimators / n_iter`` during a fit). Those regions
        reserve that much (plus 25%), so a fit re-lays out its state once or
        twice instead of at every doubling.

    Returns
    -------
    layout : dict
        ``{"header_capacity", "regions": {name: [offset, capacity]}, "order", "sizes",
        "grown"}``.
    """
    names = list(arrays)
    if previous is not None and set(previous["regions"]) == set(names) \
            and header_bytes <= previous["header_capacity"]:
        order = previous["order"]
        last = order[-1] if order else None
        if all(arrays[n].nbytes <= previous["regions"][n][1] or n == last for n in names):
            return previous
    old_sizes = previous.get("sizes", {}) if previous else {}
    reserved_before = set(previous.get("grown", [])) if previous else set()

    def grew(name, size):
        return name in old_sizes and size > old_sizes[name]

    eg_prev = previous.get("expected_growth") if previous else None

    def capacity(name, size):
        if not (expected_growth and grew(name, size)):
            return size * growth
        eg = max(1.0, float(expected_growth))
        # Growth exponent: most state grows linearly in the iterations, but the
        # DART rescaling log grows faster (more trees, more dropped per step).
        # Estimate it from the growth since the previous layout, whose
        # expected growth tells how many iterations have passed since.
        power = 2.0 if name in reserved_before else 1.0
        if eg_prev and eg_prev > eg * 1.01 and old_sizes.get(name):
            observed = math.log(size / old_sizes[name]) / math.log(eg_prev / eg)
            power = max(power, min(2.0, observed))
        return max(size * growth, min(size * eg ** power * 1.25, size * eg * 1.25 + (1 << 20)))

    # The arrays seen growing first, right after the header, then the others
    # by size: what changes at every checkpoint stays in few chunks. The
    # largest array goes last, where it can grow past its capacity without
    # moving anything.
    order = sorted(names, key=lambda n: (not grew(n, arrays[n].nbytes), arrays[n].nbytes, n))
    largest = max(names, key=lambda n: (arrays[n].nbytes, n)) if names else None
    if largest is not None:
        order.remove(largest)
        order.append(largest)
    # the header grows by a few digits per checkpoint, not with the model
    hcap = _round_up(max(header_bytes * growth, header_bytes + 1024), 1024)
    offset = HEADER_OFFSET + hcap
    regions = {}
    for n in order:
        size = arrays[n].nbytes
        cap = _round_up(max(_ALIGN, capacity(n, size)), _ALIGN)
        regions[n] = [offset, cap]
        offset += cap
    sizes = {n: arrays[n].nbytes for n in names}
    sizes["__header__"] = header_bytes
    grown = sorted(n for n in names if expected_growth and grew(n, arrays[n].nbytes))
    return {"header_capacity": hcap, "regions": regions, "order": order, "sizes": sizes,
            "grown": grown, "expected_growth": expected_growth}


def dumps_state(kind, state, arrays, *, class_name=None, metadata=None, layout=None,
                expected_growth=None):
    """Serialise a state to bytes in the stable format.

    Parameters
    ----------
    kind : {"dartboost", "arrays", "pickle"}
        Payload kind.
    state : dict or None
        JSON-serialisable header of the estimator (``_get_state()[0]``).
    arrays : dict of str to ndarray
        Plain arrays (no object dtype).
    class_name : str, optional
        Fully qualified class of the stored object, for messages and loading.
    metadata : dict, optional
        JSON-serialisable user metadata.
    layout : dict, optional
        Layout of a previous dump to keep offsets stable (incremental updates).
    expected_growth : float, optional
        Growth still expected of the arrays that grow (see :func:`plan_layout`).

    Returns
    -------
    blob : bytes
    layout : dict
        The layout used; pass it to the next call.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    arrays = {n: _check_array(n, a) for n, a in arrays.items()}
    entries = {}
    for n, a in arrays.items():
        entries[n] = {"dtype": _descr_to_json(np.lib.format.dtype_to_descr(a.dtype)),
                      "shape": list(a.shape), "nbytes": int(a.nbytes),
                      "crc32": zlib.crc32(a.data.cast("B") if a.size else b"")}
    header = {"format": "dartboost.store.model", "format_version": FORMAT_VERSION,
              "kind": kind, "class": class_name, "state": state,
              "metadata": metadata or {}, "arrays": entries}
    try:
        # offsets are filled in below; leave room for their digits
        probe = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"state header or metadata is not JSON-serialisable: {exc}") from exc
    layout = plan_layout(len(probe) + 64 * (len(entries) + 1), arrays, previous=layout,
                         expected_growth=expected_growth)
    for n, (off, cap) in layout["regions"].items():
        entries[n]["offset"] = off
        entries[n]["capacity"] = cap
    hjson = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    hcap = layout["header_capacity"]
    if len(hjson) > hcap:  # estimate was too tight: plan afresh
        layout = plan_layout(len(hjson) + 64 * (len(entries) + 1), arrays, previous=layout,
                             expected_growth=expected_growth)
        return dumps_state(kind, state, arrays, class_name=class_name,
                           metadata=metadata, layout=layout)
    last = layout["order"][-1] if layout["order"] else None
    size = HEADER_OFFSET + hcap
    for n, (off, cap) in layout["regions"].items():
        size = max(size, off + (arrays[n].nbytes if n == last else cap))
    buf = bytearray(size)
    _PREAMBLE.pack_into(buf, 0, MAGIC, FORMAT_VERSION, zlib.crc32(hjson), len(hjson), hcap)
    buf[HEADER_OFFSET:HEADER_OFFSET + len(hjson)] = hjson
    for n, a in arrays.items():
        off = entries[n]["offset"]
        buf[off:off + a.nbytes] = a.data.cast("B") if a.size else b""
    return bytes(buf), layout


def read_header(blob):
    """Parse and validate the preamble and header of a serialised object.

    Raises
    ------
    FormatError
        On a wrong magic number, an unknown format version, a truncated buffer,
        a header checksum mismatch or malformed header fields.
    """
    mv = memoryview(blob)
    if len(mv) < HEADER_OFFSET:
        raise FormatError(f"not a dartboost model: {len(mv)} bytes is shorter than the preamble")
    magic, version, hcrc, hlen, hcap = _PREAMBLE.unpack_from(mv, 0)
    if magic != MAGIC:
        raise FormatError("not a dartboost model (bad magic number)")
    if version != FORMAT_VERSION:
        raise FormatError(f"unsupported model format version {version}; this dartboost "
                          f"reads version {FORMAT_VERSION}")
    if hlen > hcap or HEADER_OFFSET + hcap > len(mv):
        raise FormatError("model is truncated: the header extends past the end of the data")
    hjson = bytes(mv[HEADER_OFFSET:HEADER_OFFSET + hlen])
    if zlib.crc32(hjson) != hcrc:
        raise FormatError("model header is corrupt (CRC-32 mismatch)")
    try:
        header = json.loads(hjson)
    except ValueError as exc:
        raise FormatError(f"model header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != "dartboost.store.model" \
            or header.get("kind") not in KINDS or not isinstance(header.get("arrays"), dict):
        raise FormatError("model header is malformed")
    if header.get("format_version") != FORMAT_VERSION:
        raise FormatError(f"unsupported model format version {header.get('format_version')!r}")
    return header


def loads_state(blob):
    """Parse bytes written by :func:`dumps_state`.

    Returns
    -------
    header : dict
        The full header (``kind``, ``class``, ``state``, ``metadata``, ...).
    arrays : dict of str to ndarray
        Read-only views into ``blob`` (copy them to modify).

    Raises
    ------
    FormatError
        If the data is truncated, corrupt, of an unknown version or holds an
        array with an object dtype.
    """
    header = read_header(blob)
    mv = memoryview(blob)
    arrays = {}
    for name, e in header["arrays"].items():
        try:
            dtype = np.lib.format.descr_to_dtype(_descr_from_json(e["dtype"]))
            shape = tuple(int(s) for s in e["shape"])
            off, nbytes = int(e["offset"]), int(e["nbytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"array {name!r}: malformed entry ({exc})") from exc
        if dtype.hasobject:
            raise FormatError(f"array {name!r} has an object dtype; refusing to load it")
        if any(s < 0 for s in shape) or nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise FormatError(f"array {name!r}: shape {shape} does not match {nbytes} bytes")
        if off < HEADER_OFFSET or off + nbytes > len(mv):
            raise FormatError(f"model is truncated: array {name!r} extends past the end of the data")
        raw = mv[off:off + nbytes]
        if zlib.crc32(raw) != e.get("crc32"):
            raise FormatError(f"array {name!r} is corrupt (CRC-32 mismatch)")
        arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return header, arrays


def _class_name(obj):
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def is_state_object(obj):
    """Whether ``obj`` follows the dartboost model-state contract."""
    return callable(getattr(obj, "_get_state", None)) and type(obj).__module__.startswith("dartboost")


def dumps(obj, *, metadata=None, layout=None, expected_growth=None):
    """Serialise an object to bytes.

    dartboost estimators (anything with ``_get_state`` from the ``dartboost``
    package) are written as their state; a ``dict`` of numpy arrays is written
    as-is; anything else is pickled (trusted input only, see :func:`loads`).

    Returns
    -------
    blob : bytes
    layout : dict
    """
    if is_state_object(obj):
        state, arrays = obj._get_state()
        return dumps_state("dartboost", state, arrays, class_name=_class_name(obj),
                           metadata=metadata, layout=layout, expected_growth=expected_growth)
    if isinstance(obj, dict) and obj and all(
            isinstance(k, str) and isinstance(v, np.ndarray) and not v.dtype.hasobject
            for k, v in obj.items()):
        return dumps_state("arrays", None, obj, class_name="dict", metadata=metadata,
                           layout=layout, expected_growth=expected_growth)
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return dumps_state("pickle", None, {"pickle": np.frombuffer(payload, dtype=np.uint8)},
                       class_name=_class_name(obj), metadata=metadata, layout=layout)


def _estimator_from_state(header, arrays):
    """Rebuild a dartboost estimator through the core's class registry: a
    header never makes the loader import a module."""
    from .model_io import estimator_from_state

    return estimator_from_state(header.get("state"), arrays, class_name=header.get("class"))


def loads(blob, *, allow_pickle=False):
    """Rebuild an object from bytes written by :func:`dumps`.

    Parameters
    ----------
    blob : bytes-like
    allow_pickle : bool, default=False
        Allow the ``"pickle"`` kind. Unpickling runs arbitrary code: only pass
        True for data you wrote yourself or otherwise trust.

    Returns
    -------
    object
        A dartboost estimator, a dict of arrays, or the unpickled object.
    """
    header, arrays = loads_state(blob)
    kind = header["kind"]
    if kind == "dartboost":
        return _estimator_from_state(header, {n: a.copy() for n, a in arrays.items()})
    if kind == "arrays":
        return {n: a.copy() for n, a in arrays.items()}
    if not allow_pickle:
        raise FormatError(
            f"this object ({header.get('class')}) is stored as a pickle, which can run "
            "arbitrary code when loaded; pass allow_pickle=True only if you trust its source")
    if "pickle" not in arrays:
        raise FormatError("pickle payload missing")
    return pickle.loads(arrays["pickle"].tobytes())


def save(obj, path, *, metadata=None):
    """Write ``obj`` to a local file in the stable format."""
    blob, _ = dumps(obj, metadata=metadata)
    with open(path, "wb") as f:
        f.write(blob)


def load(path, *, allow_pickle=False):
    """Read an object written by :func:`save`."""
    with open(path, "rb") as f:
        return loads(f.read(), allow_pickle=allow_pickle)
