"""ModelStore on local directories: round trips, faults, bad input, concurrency."""
import itertools
import json
import multiprocessing
import os
import shutil

import numpy as np
import pytest

from dartboost.store import (ConfigMismatchError, InvalidNameError, ManifestError, ModelStore,
                             ObjectNotFoundError, StoreError, UnrecoverableError)
from dartboost.store import _objects
from dartboost.store._incremental import encode_rows, stripe
from store_fixtures import assert_arrays_equal, concurrent_writer, local_locations, sample_arrays

CHUNK = 1024  # small chunks: many rows from small objects, fast tests


@pytest.fixture
def locs(tmp_path):
    return local_locations(tmp_path, 5)


@pytest.fixture
def store(locs):
    return ModelStore(locs, k=3, r=2, chunk_size=CHUNK)


def _chunk_files(loc, name):
    d = os.path.join(loc, "objects", name, "chunks")
    return sorted(os.path.join(d, f) for f in os.listdir(d))


def test_put_get_list_versions_delete(store, locs):
    a, b = sample_arrays(0), sample_arrays(1)
    assert store.put("m", a, metadata={"tag": "first"}) == 1
    assert store.put("m", b) == 2
    assert store.put("other", b"raw bytes \x00\x01") == 1
    assert store.list() == ["m", "other"]
    assert store.versions("m") == [1, 2]
    assert_arrays_equal(store.get("m"), b)
    assert_arrays_equal(store.get("m", 1), a)
    assert_arrays_equal(store.get("m", -2), a)
    assert store.get("other") == b"raw bytes \x00\x01"
    assert store.info("m", 1)["metadata"] == {"tag": "first"}
    assert store.delete("m", 1) == [1]
    assert store.versions("m") == [2]
    with pytest.raises(ObjectNotFoundError, match="no version 1"):
        store.get("m", 1)
    store.delete("m")
    assert store.list() == ["other"]
    with pytest.raises(ObjectNotFoundError, match="no object named 'm'"):
        store.get("m")
    # deleting frees the chunks
    assert not os.path.exists(os.path.join(locs[0], "objects", "m", "chunks"))
    # a second store object on the same locations reads the configuration
    again = ModelStore(locs)
    assert (again.k, again.r, again.chunk_size) == (3, 2, CHUNK)
    assert again.get("other") == b"raw bytes \x00\x01"


def test_any_r_lost_locations_recover_exactly(store, locs, tmp_path):
    a = sample_arrays(2)
    store.put("m", a)
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path, backup, ignore=shutil.ignore_patterns("backup"))
    for lost in itertools.chain(itertools.combinations(range(5), 1), itertools.combinations(range(5), 2)):
        for i in lost:
            shutil.rmtree(locs[i])
        assert_arrays_equal(ModelStore(locs, create=False).get("m"), a)
        for i in lost:
            shutil.copytree(backup / f"shard{i}", locs[i])


def test_bit_flips_in_r_shards_recover_and_repair(store, locs):
    a = sample_arrays(3)
    store.put("m", a)
    # flip one bit in the chunks of shard 0 and shard 3 (parity) of one row, and truncate
    # shard 1's chunk of another row: 3 bad shards in total, at most 2 per row. Only
    # chunks used once are picked (identical chunks, e.g. zero padding, share a file).
    chunks = store.info("m")["chunks"]

    def unique(row, shard):
        return sum(r[shard] == chunks[row][shard] for r in chunks) == 1

    row_a = next(i for i in range(len(chunks)) if unique(i, 0) and unique(i, 3))
    row_b = next(i for i in range(len(chunks)) if i != row_a and unique(i, 1))

    def chunk_path(row, shard):
        return os.path.join(locs[shard], "objects", "m", "chunks", chunks[row][shard])

    f0, f3, f1 = chunk_path(row_a, 0), chunk_path(row_a, 3), chunk_path(row_b, 1)
    for f in (f0, f3):
        b = bytearray(open(f, "rb").read())
        b[17] ^= 0x04
        open(f, "wb").write(b)
    open(f1, "wb").write(open(f1, "rb").read()[:100])
    assert_arrays_equal(store.get("m"), a)
    rep = store.verify()
    assert not rep.ok and not rep.unrecoverable
    assert {p.status for p in rep.problems} == {"corrupt"}
    assert {p.location for p in rep.problems} == {0, 1, 3}
    rep = store.repair()
    assert len(rep.repaired) >= 3
    assert store.verify().ok
    assert_arrays_equal(store.get("m"), a)


def test_more_than_r_lost_is_a_clear_error(store, locs):
    store.put("m", sample_arrays(4))
    for i in (0, 2, 4):
        shutil.rmtree(locs[i])
    st = ModelStore(locs, create=False)
    with pytest.raises(UnrecoverableError) as exc:
        st.get("m")
    msg = str(exc.value)
    assert "more than r=2" in msg
    for i in (0, 2, 4):
        assert f"shard {i} at {locs[i]} is missing" in msg
    rep = st.verify("m")
    assert rep.unrecoverable and not rep.ok
    assert st.repair("m").unrecoverable


def test_corrupt_chunks_beyond_r_in_one_row_never_return_wrong_data(store, locs):
    store.put("m", sample_arrays(5))
    for i in (0, 1, 3):
        f = _chunk_files(locs[i], "m")
        for path in f:  # corrupt every chunk of three shards
            b = bytearray(open(path, "rb").read())
            b[0] ^= 0xFF
            open(path, "wb").write(b)
    with pytest.raises(UnrecoverableError, match="corrupt"):
        store.get("m")


def test_truncated_manifest(store, locs):
    a = sample_arrays(6)
    store.put("m", a)
    mpaths = [os.path.join(loc, "objects", "m", "manifests", "v00000001.json") for loc in locs]
    raw = open(mpaths[0], "rb").read()
    open(mpaths[0], "wb").write(raw[: len(raw) // 2])
    assert_arrays_equal(store.get("m"), a)  # another copy is used
    rep = store.verify()
    assert [(p.what, p.location, p.status) for p in rep.problems] == [("manifest", 0, "corrupt")]
    store.repair()
    assert store.verify().ok and open(mpaths[0], "rb").read() == raw
    for p in mpaths:
        open(p, "wb").write(raw[:-7])
    with pytest.raises(ManifestError, match="no valid manifest for 'm' v1"):
        store.get("m")


def test_tampered_manifest_with_valid_checksum_rejected(store, locs):
    store.put("m", sample_arrays(7))
    for loc in locs:
        p = os.path.join(loc, "objects", "m", "manifests", "v00000001.json")
        doc = json.loads(open(p).read())
        doc["body"]["chunks"] = [["../../../../etc/passwd"] * 5]  # a table of paths
        doc["sha256"] = _objects._sha256(_objects._canonical(doc["body"]))
        open(p, "w").write(json.dumps(doc))
    with pytest.raises(ManifestError, match="chunk table is malformed"):
        store.get("m")
    for loc in locs:
        p = os.path.join(loc, "objects", "m", "manifests", "v00000001.json")
        doc = json.loads(open(p).read())
        doc["body"]["k"], doc["body"]["r"] = 4, 1
        doc["sha256"] = _objects._sha256(_objects._canonical(doc["body"]))
        open(p, "w").write(json.dumps(doc))
    with pytest.raises(ConfigMismatchError, match="k=4, r=1"):
        store.get("m")


def test_wrong_k_r_and_locations_rejected(store, locs, tmp_path):
    store.put("m", sample_arrays(8))
    with pytest.raises(ConfigMismatchError, match="created with k=3, r=2"):
        ModelStore(locs, k=4, r=1)
    with pytest.raises(ConfigMismatchError, match="needs 5 locations"):
        ModelStore(locs[:4], k=3, r=2)
    with pytest.raises(ConfigMismatchError, match="original order"):
        ModelStore([locs[1], locs[0]] + locs[2:])
    with pytest.raises(ConfigMismatchError, match="pass k and r"):
        ModelStore(local_locations(tmp_path / "new", 3))
    with pytest.raises(ValueError, match="distinct"):
        ModelStore([locs[0]] * 5, k=3, r=2)
    with pytest.raises(ValueError, match="multiple of 64"):
        ModelStore(local_locations(tmp_path / "new2", 3), k=2, r=1, chunk_size=1000)
    other = ModelStore(local_locations(tmp_path / "other", 5), k=3, r=2)
    with pytest.raises(ConfigMismatchError, match="different store"):
        ModelStore([other.locations[0].url] + locs[1:])


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "..", ".", "", ".hidden",
                                  "x" * 201, "a\\b", "sp ace", None, 3])
def test_names_outside_root_rejected(store, name):
    with pytest.raises(InvalidNameError):
        store.put(name, b"x")
    with pytest.raises(InvalidNameError):
        store.get(name)


def test_symlink_escaping_root_rejected(store, locs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.makedirs(os.path.join(locs[0], "objects"), exist_ok=True)
    os.symlink(outside, os.path.join(locs[0], "objects", "evil"))
    with pytest.raises(InvalidNameError, match="outside the store root"):
        store.put("evil", b"data")


def test_crash_before_commit_leaves_previous_version(store, locs, monkeypatch):
    a = sample_arrays(9)
    store.put("m", a)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while committing")

    monkeypatch.setattr(_objects.Location, "create", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put("m", sample_arrays(10))
    monkeypatch.undo()
    reader = ModelStore(locs)
    assert reader.versions("m") == [1]
    assert_arrays_equal(reader.get("m"), a)
    n_before = len(_chunk_files(locs[0], "m"))
    reader.gc("m", grace=0)  # the orphaned chunks of the failed put are freed
    assert len(_chunk_files(locs[0], "m")) < n_before
    assert reader.verify().ok


def test_incremental_put_writes_only_changes_and_matches_full_encode(locs, tmp_path):
    store = ModelStore(locs, k=3, r=2, chunk_size=CHUNK)
    a = sample_arrays(11, n=20_000)
    store.put("m", a)
    full_bytes = store.last_put_stats["chunk_bytes_written"]
    b = dict(a)
    b["nodes"] = np.concatenate([a["nodes"], a["nodes"][:50]])
    b["tree_weights"] = a["tree_weights"] * 0.9
    store.put("m", b, incremental=True)
    st = store.last_put_stats
    assert st["incremental"] and st["chunk_bytes_written"] < full_bytes / 10
    assert_arrays_equal(store.get("m"), b)
    assert_arrays_equal(store.get("m", 1), a)
    # the incrementally updated parity is exactly what a fresh encode gives
    info = store.info("m")
    data = stripe(store.get_bytes("m"), 3, info["chunk_size"])
    parity = encode_rows(store.rs, data)
    expected = [[_objects._chunk_id(c) for c in list(d) + list(p)] for d, p in zip(data, parity)]
    assert info["chunks"] == expected
    # parity must also let us recover from losing r shards of the new version
    shutil.rmtree(locs[0])
    shutil.rmtree(locs[4])
    assert_arrays_equal(ModelStore(locs).get("m"), b)


def test_replaced_empty_location_is_repaired(store, locs):
    a = sample_arrays(12)
    store.put("m", a)
    store.put("n", b"payload" * 999)
    shutil.rmtree(locs[2])
    os.makedirs(locs[2])  # a new, empty disk in its place
    st = ModelStore(locs)
    rep = st.repair()
    assert rep.repaired and not rep.unrecoverable
    assert st.verify().ok
    # the repaired location now really holds its shard: lose two others
    shutil.rmtree(locs[0])
    shutil.rmtree(locs[1])
    assert_arrays_equal(ModelStore(locs).get("m"), a)


def test_store_is_picklable(store):
    import copy
    import pickle

    store.put("m", {"a": np.arange(3)})
    for clone in (pickle.loads(pickle.dumps(store)), copy.deepcopy(store)):
        assert clone.store_id == store.store_id
        np.testing.assert_array_equal(clone.get("m")["a"], np.arange(3))


def test_concurrent_writers_from_several_processes(locs):
    ModelStore(locs, k=3, r=2, chunk_size=CHUNK)
    n_writers, n_puts = 4, 3
    # fork starts the writers in milliseconds (spawn would re-import the
    # library in each); they only touch the store, no threads of the parent
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(n_writers) as pool:
        results = pool.map(concurrent_writer, [(locs, "shared", w, n_puts) for w in range(n_writers)])
    all_versions = sorted(v for _, vs in results for v in vs)
    # every put committed its own version: none lost, none shared. Numbers
    # may have gaps: a number on which racing writers each got copies at
    # fewer than a quorum of locations is aborted and both move on
    # (docs/contracts.md), so only uniqueness and per-writer order hold.
    assert len(set(all_versions)) == n_writers * n_puts
    assert all(vs == sorted(vs) for _, vs in results)
    store = ModelStore(locs)
    # exactly the acknowledged versions are visible: no phantom, none lost
    assert sorted(store.versions("shared")) == all_versions
    # the commit rule needs a quorum of copies, not all: a race can leave a
    # winner without its copy where a loser's was; repair restores it
    assert {(p.what, p.status) for p in store.verify().problems} <= {("manifest", "missing")}
    store.repair()
    assert store.verify().ok
    for writer, vs in results:
        for j, v in enumerate(vs):
            got = store.get("shared", v)
            assert np.array_equal(got["writer"], np.full(5000 + 1000 * writer, writer))
            assert got["j"][0] == j


def test_commit_race_loser_takes_next_version(store, locs, monkeypatch):
    """Simulate another writer taking the version number between listing and commit."""
    store.put("m", {"a": np.zeros(3)})
    other = ModelStore(locs)
    real_versions = _objects.ObjectStore._listed_versions
    calls = {"n": 0}

    def stale_versions(self, name):
        calls["n"] += 1
        if calls["n"] == 1:
            other.put("m", {"a": np.ones(3)})  # wins v2 meanwhile
            return {1}  # our listing is stale
        return real_versions(self, name)

    monkeypatch.setattr(_objects.ObjectStore, "_listed_versions", stale_versions)
    v = store.put("m", {"a": np.full(3, 2.0)})
    monkeypatch.undo()
    assert v == 3
    np.testing.assert_array_equal(store.get("m", 2)["a"], np.ones(3))
    np.testing.assert_array_equal(store.get("m", 3)["a"], np.full(3, 2.0))


def test_pickle_objects_need_allow_pickle(store):
    store.put("p", {"not": "arrays"})
    with pytest.raises(StoreError.__mro__[0].__base__ if False else Exception, match="allow_pickle"):
        store.get("p")
    assert store.get("p", allow_pickle=True) == {"not": "arrays"}


def test_unreachable_location_is_tolerated(store, locs, monkeypatch):
    a = sample_arrays(13)
    store.put("m", a)
    down = store.locations[1]

    def fail(*args, **kwargs):
        raise ConnectionError("location 1 is down")

    for method in ("read_many", "listdir", "read"):
        monkeypatch.setattr(down, method, fail)
    assert store.versions("m") == [1]
    assert_arrays_equal(store.get("m"), a)
    rep = store.verify()
    assert {(p.location, p.status) for p in rep.problems} == {(1, "unreachable")}
    assert not rep.unrecoverable


def test_manifest_with_oversized_chunk_rejected(store, locs):
    store.put("m", sample_arrays(14))
    for loc in locs:
        p = os.path.join(loc, "objects", "m", "manifests", "v00000001.json")
        doc = json.loads(open(p).read())
        doc["body"]["chunk_size"] = 10 * CHUNK
        doc["sha256"] = _objects._sha256(_objects._canonical(doc["body"]))
        open(p, "w").write(json.dumps(doc))
    with pytest.raises(ManifestError, match="chunk size"):
        store.get("m")


def test_neural_weights_and_momentum_update_writes_only_changed_chunks(locs):
    """A dict of arrays (NN weights + optimizer momentum) updated in part."""
    rng = np.random.default_rng(15)
    state = {f"{kind}{i}": rng.normal(size=8192).astype(np.float32)
             for i in range(8) for kind in ("w", "m")}  # 16 x 32 KiB
    store = ModelStore(locs, k=3, r=2, chunk_size=4096)
    store.put("net", state, incremental=True)
    full = store.last_put_stats["chunk_bytes_written"]
    state = dict(state)
    state["w3"] = state["w3"] - 0.01 * state["m3"]  # one layer and its momentum step
    state["m3"] = 0.9 * state["m3"]
    store.put("net", state, incremental=True)
    st = store.last_put_stats
    assert st["chunk_bytes_written"] < full / 4
    assert_arrays_equal(store.get("net"), state)
    shutil.rmtree(locs[1])
    shutil.rmtree(locs[2])
    assert_arrays_equal(ModelStore(locs).get("net"), state)
