"""ObjectStore, the bytes layer under ModelStore: round trips, damage, repair, layering."""
import ast
import os
import pathlib
import pickle
import shutil

import numpy as np
import pytest

from dartboost.store import ModelStore, ObjectStore, UnrecoverableError
from store_fixtures import local_locations

CHUNK = 1024
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "dartboost"


@pytest.fixture
def locs(tmp_path):
    return local_locations(tmp_path, 6)


@pytest.fixture
def store(locs):
    return ObjectStore(locs, k=4, r=2, chunk_size=CHUNK)


def _blob(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _chunk_path(store, name, row, shard):
    cid = store.info(name)["chunks"][row][shard]
    return os.path.join(store.locations[shard].url, "objects", name, "chunks", cid)


@pytest.mark.parametrize("n", [0, 1, 63, 64, 4 * CHUNK, 4 * CHUNK + 1, 37 * CHUNK + 5])
def test_bytes_round_trip(store, n):
    data = _blob(n, n)
    v = store.put("b", data)
    got = store.get("b")
    assert isinstance(got, bytes) and got == data
    assert store.get("b", v) == data and store.info("b")["size"] == n


def test_versions_labels_and_metadata(store):
    assert store.put("b", b"one") == 1
    assert store.put("b", bytearray(b"two"), metadata={"step": 2}, kind="blob",
                     content_class="my.Thing") == 2
    assert store.put("b", memoryview(b"three")) == 3
    assert store.versions("b") == [1, 2, 3] and store.list() == ["b"]
    assert [store.get("b", v) for v in (1, 2, -1)] == [b"one", b"two", b"three"]
    info = store.info("b", 2)
    assert (info["kind"], info["class"], info["metadata"]) == ("blob", "my.Thing", {"step": 2})
    assert store.info("b", 1)["kind"] == "bytes"


def test_put_refuses_objects_that_are_not_bytes(store):
    with pytest.raises(TypeError, match="stores bytes.*ModelStore"):
        store.put("b", {"w": np.zeros(3)})
    with pytest.raises(TypeError, match="kind must be a string"):
        store.put("b", b"x", kind=3)
    assert store.list() == []


@pytest.mark.parametrize("lost", [(0,), (1, 3), (0, 5), (4, 5)])
def test_get_with_r_locations_lost_is_exact(store, locs, lost):
    data = _blob(9 * 4 * CHUNK + 100, 1)
    store.put("b", data)
    for i in lost:
        shutil.rmtree(locs[i])
    assert ObjectStore(locs, create=False).get("b") == data


def test_get_rebuilds_corrupt_data_chunks_and_verify_names_them(store):
    data = _blob(8 * CHUNK, 2)
    store.put("b", data)
    for row, shard in ((0, 1), (1, 0), (1, 2)):
        p = _chunk_path(store, "b", row, shard)
        raw = bytearray(open(p, "rb").read())
        raw[5] ^= 1
        open(p, "wb").write(bytes(raw))
    assert store.get("b") == data
    bad = sorted((p.row, p.location, p.status) for p in store.verify().problems)
    assert bad == [(0, 1, "corrupt"), (1, 0, "corrupt"), (1, 2, "corrupt")]


def test_more_than_r_bad_shards_in_a_row_is_an_error(store):
    store.put("b", _blob(4 * CHUNK, 3))
    for shard in (0, 1, 4):
        os.remove(_chunk_path(store, "b", 0, shard))
    with pytest.raises(UnrecoverableError, match="more than r=2 bad shards"):
        store.get("b")


def test_repair_rebuilds_lost_data_and_parity_chunks_only(store):
    data = _blob(12 * CHUNK, 4)
    store.put("b", data)
    lost = [(0, 0), (0, 5), (2, 3), (2, 4)]
    for row, shard in lost:
        os.remove(_chunk_path(store, "b", row, shard))
    rep = store.repair()
    assert sorted(rep.repaired) == sorted(f"b v1 row {row} shard {s}" for row, s in lost)
    assert store.verify().ok and store.get("b") == data


def test_incremental_put_writes_only_changed_chunks(store):
    data = bytearray(_blob(16 * CHUNK, 5))
    store.put("b", bytes(data))
    data[3 * CHUNK + 7] ^= 0xFF  # one data chunk of row 0
    store.put("b", bytes(data), incremental=True)
    st = store.last_put_stats
    assert st["incremental"] and st["rows_changed"] == 1
    assert st["chunks_written"] == 1 + store.r  # the chunk and its row's parity
    assert store.get("b") == bytes(data) and store.verify().ok


def test_identical_content_writes_no_chunks(store):
    data = _blob(5 * CHUNK, 6)
    store.put("b", data)
    store.put("b", data)
    assert store.last_put_stats["chunks_written"] == 0


def test_model_store_and_object_store_share_one_store(locs):
    models = ModelStore(locs, k=4, r=2, chunk_size=CHUNK)
    models.put("w", {"w": np.arange(100.0)})
    models.put("raw", b"plain bytes")
    objects = ObjectStore(locs)
    assert objects.store_id == models.store_id and models.objects.k == 4
    assert objects.get("raw") == b"plain bytes"
    assert objects.get("w") == models.get_bytes("w")
    assert objects.info("w")["kind"] == "arrays"
    objects.put("raw", b"new bytes")
    assert models.get("raw") == b"new bytes"
    assert repr(models).startswith("ModelStore(k=4, r=2")


def test_object_store_pickles_as_its_locations(store):
    store.put("b", b"abc")
    again = pickle.loads(pickle.dumps(store))
    assert type(again) is ObjectStore and again.get("b") == b"abc"
    assert again.store_id == store.store_id


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            dots = "." * node.level
            if node.module is None:  # from . import x
                yield from (dots + a.name for a in node.names)
            else:
                yield dots + node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_object_layer_knows_no_models():
    """The bytes layer imports neither the model format nor the core's models."""
    bytes_layer = ["_objects.py", "_locations.py", "_rs.py", "_gf256.py", "_gf256_numba.py",
                   "_gf256_isal.py", "_incremental.py"]
    for fn in bytes_layer:
        for mod in _imports(PACKAGE / "store" / fn):
            assert "_format" not in mod and "_model_file" not in mod and "model_io" not in mod and "_store" not in mod, (fn, mod)
            assert not mod.startswith(".."), (fn, mod)  # nothing from the core at all


def test_core_does_not_import_the_store():
    """The store depends on the core, never the reverse.

    The core's CLI is the one exception: it mounts ``dartboost store``. Model
    files are the core's (``dartboost._model_file``), not the store's.
    """
    allowed = {"cli.py"}
    users = {}
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE))
        if rel.startswith("store" + os.sep):
            continue
        found = [m for m in _imports(path) if m.startswith(("dartboost.store", ".store", "..store"))]
        if found:
            users[rel] = found
    assert set(users) <= allowed, users
    assert users.get("cli.py", [".store.cli"]) == [".store.cli"], users
