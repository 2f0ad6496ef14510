"""The stable model format: round trips, stable layout, rejection of bad input."""
import json
import struct
import zlib

import numpy as np
import pytest

from dartboost.store import FormatError, dumps, load, loads, save
from dartboost import _model_file as _format
from store_fixtures import assert_arrays_equal, sample_arrays


def test_arrays_roundtrip_with_structured_dtype(tmp_path):
    arrays = sample_arrays()
    arrays["empty"] = np.zeros((0, 3), dtype=np.float32)
    arrays["fortran"] = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    blob, _ = dumps(arrays, metadata={"note": "x"})
    assert_arrays_equal(loads(blob), arrays)
    save(arrays, tmp_path / "m.dbm")
    assert_arrays_equal(load(tmp_path / "m.dbm"), arrays)
    header, _ = _format.loads_state(blob)
    assert header["metadata"] == {"note": "x"} and header["kind"] == "arrays"


def test_pickle_payload_needs_explicit_trust():
    obj = {"a": [1, 2, 3], "b": "text"}  # not a dict of arrays -> pickled
    blob, _ = dumps(obj)
    with pytest.raises(FormatError, match="allow_pickle=True"):
        loads(blob)
    assert loads(blob, allow_pickle=True) == obj


def test_object_dtype_refused_on_write_and_read():
    with pytest.raises(TypeError, match="object dtype"):
        _format.dumps_state("arrays", None, {"a": np.array([1, "x"], dtype=object)})
    # hand-craft a header that claims an object dtype
    blob, _ = dumps({"a": np.zeros(4)})
    header = _format.read_header(blob)
    header["arrays"]["a"]["dtype"] = "|O"
    with pytest.raises(FormatError, match="object dtype"):
        _format.loads_state(_rewrite_header(blob, header))


def _rewrite_header(blob, header):
    hjson = json.dumps(header, sort_keys=True).encode()
    b = bytearray(blob)
    _, version, _, _, hcap = _format._PREAMBLE.unpack_from(b, 0)
    b[64:64 + hcap] = bytes(hcap)
    b[64:64 + len(hjson)] = hjson
    _format._PREAMBLE.pack_into(b, 0, _format.MAGIC, version, zlib.crc32(hjson), len(hjson), hcap)
    return bytes(b)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:40], "shorter than the preamble"),
    (lambda b: b[:100], "truncated"),
    (lambda b: b[:-10], "truncated"),
    (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
    (lambda b: b[:8] + struct.pack("<I", 99) + b[12:], "unsupported model format version 99"),
    (lambda b: b[:70] + bytes([b[70] ^ 1]) + b[71:], "header is corrupt"),
    (lambda b: b[:-5] + bytes([b[-5] ^ 0x10]) + b[-4:], "corrupt"),
])
def test_corrupt_or_truncated_rejected(mutate, message):
    blob, _ = dumps(sample_arrays())
    with pytest.raises(FormatError, match=message):
        loads(mutate(blob))


def test_unknown_format_version_in_header_rejected():
    blob, _ = dumps({"a": np.zeros(3)})
    header = _format.read_header(blob)
    header["format_version"] = 2
    with pytest.raises(FormatError, match="unsupported model format version 2"):
        loads(_rewrite_header(blob, header))


def test_out_of_bounds_array_rejected():
    blob, _ = dumps({"a": np.zeros(3)})
    header = _format.read_header(blob)
    header["arrays"]["a"]["offset"] = len(blob) + 100
    with pytest.raises(FormatError, match="truncated"):
        loads(_rewrite_header(blob, header))
    header["arrays"]["a"]["offset"] = 10
    with pytest.raises(FormatError):
        loads(_rewrite_header(blob, header))


def test_layout_is_stable_when_arrays_grow():
    """Appending to arrays keeps every offset, so only a few bytes change."""
    a = sample_arrays(n=3000)
    blob1, layout = dumps(a)
    b = dict(a)
    b["nodes"] = np.concatenate([a["nodes"], a["nodes"][:200]])  # appended trees
    b["tree_weights"] = a["tree_weights"].copy()
    b["tree_weights"][[3, 50]] *= 0.5  # rescaled DART weights
    blob2, layout2 = dumps(b, layout=layout)
    assert layout2 == layout
    assert_arrays_equal(loads(blob2), b)
    x1 = np.frombuffer(blob1, np.uint8)
    x2 = np.frombuffer(blob2[:len(blob1)], np.uint8)
    changed = np.flatnonzero(x1 != x2)
    hdr_end = _format.HEADER_OFFSET + layout["header_capacity"]
    w_off = layout["regions"]["tree_weights"][0]
    body_changes = changed[changed >= hdr_end]
    # outside the header only the two weights changed (nodes only appended)
    assert body_changes.min() >= w_off and body_changes.max() < w_off + 100 * 8
    # an array outgrowing its region triggers a new layout, still round-trips
    b["tree_weights"] = np.ones(1000)
    blob3, layout3 = dumps(b, layout=layout)
    assert layout3 != layout
    assert_arrays_equal(loads(blob3), b)


def test_non_json_metadata_rejected():
    with pytest.raises(TypeError, match="JSON"):
        dumps({"a": np.zeros(2)}, metadata={"x": object()})


def test_expected_growth_reserves_room_for_the_rest_of_a_fit():
    """Arrays seen growing get room for the expected growth (faster-growing ones more)."""
    def state(t):
        return {"weights": np.ones(t), "log": np.ones(t * t // 10),
                "bins": np.zeros(300), "nodes": np.zeros((t * 40, 4))}

    _, layout = dumps(state(10), expected_growth=50.0)
    layouts = [layout]
    for t in range(20, 501, 10):
        _, layout = dumps(state(t), layout=layout, expected_growth=500 / t)
        layouts.append(layout)
    changes = sum(a is not b for a, b in zip(layouts, layouts[1:]))
    assert changes == 1  # re-laid out once, at the second dump, then stable to t=500
    assert layouts[-1]["order"][0] in ("weights", "log")  # growing arrays first
    assert layouts[-1]["order"][-1] == "nodes"  # the largest last
    assert_arrays_equal(loads(dumps(state(500), layout=layout)[0]), state(500))
