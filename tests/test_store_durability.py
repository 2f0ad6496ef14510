"""Store durability findings: fsync, garbage collection, names, irregular chunk
files, content dedup and the checkpoint fallback of resume_fit."""
import os
import threading
import time

import numpy as np
import pytest

from dartboost.store import InvalidNameError, ModelStore
from dartboost.store import _locations
from store_fixtures import assert_arrays_equal, local_locations, sample_arrays

CHUNK = 1024


@pytest.fixture
def locs(tmp_path):
    return local_locations(tmp_path, 5)


@pytest.fixture
def store(locs):
    return ModelStore(locs, k=3, r=2, chunk_size=CHUNK)


def _chunks(loc, name, hidden=False):
    d = os.path.join(loc, "objects", name, "chunks")
    return sorted(f for f in os.listdir(d) if hidden or not f.startswith(".tmp-"))


def test_files_are_fsynced_before_rename_and_directories_after(store, monkeypatch):
    events = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

    def fsync(fd):
        kind = "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"
        events.append(("fsync", kind))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("rename", b)), real_replace(a, b)))
    monkeypatch.setattr(os, "link", lambda a, b: (events.append(("link", b)), real_link(a, b)))
    store.put("m", sample_arrays(0))
    names = [e[0] if e[0] != "fsync" else "fsync-" + e[1] for e in events]
    assert "rename" in names and "link" in names
    for i, e in enumerate(names):
        if e in ("rename", "link"):
            assert names[i - 1] == "fsync-file" or names[i - 1] in ("rename",), names[max(0, i - 3):i + 1]
    # every commit (link) is followed by a directory fsync, and chunks are durable before it
    first_link = names.index("link")
    assert "fsync-dir" in names[:first_link]
    assert names[first_link + 1] == "fsync-dir"


def test_trailing_newline_and_nul_names_rejected(store):
    for bad in ("obj\n", "obj\x00", "a\nb", "obj/", "obj\r"):
        with pytest.raises(InvalidNameError):
            store.put(bad, b"x")
    store.put("obj", b"x")
    assert store.list() == ["obj"]


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_irregular_chunk_file_is_one_bad_shard(store, locs, tmp_path, kind):
    a = sample_arrays(1)
    store.put("m", a)
    chunks = store.info("m")["chunks"]
    cid = chunks[0][1]
    path = os.path.join(locs[1], "objects", "m", "chunks", cid)
    os.unlink(path)
    if kind == "symlink":
        target = tmp_path / "elsewhere"
        target.write_bytes(b"\0" * CHUNK)
        os.symlink(target, path)
    else:
        os.mkdir(path)
    assert_arrays_equal(store.get("m"), a)
    rep = store.verify()
    assert {(p.location, p.status) for p in rep.problems} == {(1, "corrupt")}
    store.repair()
    assert store.verify().ok and os.path.isfile(path) and not os.path.islink(path)
    assert (kind != "symlink") or (tmp_path / "elsewhere").exists()


def test_reput_identical_content_writes_no_chunks(store, locs):
    a = sample_arrays(2)
    store.put("m", a)
    assert store.last_put_stats["chunks_written"] > 0
    before = [_chunks(loc, "m") for loc in locs]
    mtimes = {f: os.stat(os.path.join(locs[0], "objects", "m", "chunks", f)).st_mtime_ns
              for f in before[0]}
    store2 = ModelStore(locs)  # a fresh store object: no write cache
    assert store2.put("m", a) == 2
    assert store2.last_put_stats["chunks_written"] == 0
    assert [_chunks(loc, "m") for loc in locs] == before
    assert all(os.stat(os.path.join(locs[0], "objects", "m", "chunks", f)).st_mtime_ns == t
               for f, t in mtimes.items())
    assert_arrays_equal(store2.get("m", 2), a)
    # a chunk missing at its location is written again, not assumed
    os.unlink(os.path.join(locs[0], "objects", "m", "chunks", before[0][0]))
    store2.put("m", a)
    assert store2.last_put_stats["chunks_written"] >= 1


def _crash_put(store, name, obj, monkeypatch):
    """A put killed after writing its chunks, with a temporary file left behind."""
    def crash(*a, **k):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(_locations.Location, "create", crash)
        with pytest.raises(KeyboardInterrupt):
            store.put(name, obj)
    tmp = os.path.join(store.locations[0].root, "objects", name, "chunks", ".tmp-deadbeef")
    with open(tmp, "wb") as f:
        f.write(b"partial")


def _age(locs, name, seconds):
    t = time.time() - seconds
    for loc in locs:
        for sub in ("chunks", "manifests"):
            d = os.path.join(loc, "objects", name, sub)
            for f in os.listdir(d):
                os.utime(os.path.join(d, f), (t, t), follow_symlinks=False)


def test_gc_removes_old_orphans_and_temporaries_only(store, locs, monkeypatch):
    a = sample_arrays(3)
    store.put("m", a)
    _crash_put(store, "m", sample_arrays(4), monkeypatch)
    rep = store.verify()
    assert rep.ok and not rep.orphans and not rep.stale_temporaries  # young: maybe in flight
    assert not store.gc().removed
    _age(locs, "m", 7200)
    rep = store.verify()
    assert rep.ok and rep.orphans and len(rep.stale_temporaries) == 1
    assert "dartboost store gc" in str(rep)
    gc = store.gc()
    assert len(gc.removed) == len(rep.orphans) + 1
    assert not os.path.exists(os.path.join(locs[0], "objects", "m", "chunks", ".tmp-deadbeef"))
    referenced = {cid for row in store.info("m")["chunks"] for cid in row}
    for loc in locs:
        assert set(_chunks(loc, "m", hidden=True)) <= referenced
    assert store.verify().ok and not store.verify().orphans
    assert_arrays_equal(store.get("m"), a)


def test_gc_concurrent_with_puts_never_removes_their_chunks(locs):
    ModelStore(locs, k=3, r=2, chunk_size=CHUNK)
    stop, errors, done = threading.Event(), [], []

    def writer(w):
        st = ModelStore(locs)
        for j in range(6):
            obj = {"w": np.full(3000, w * 100 + j, dtype=np.int64)}
            try:
                done.append((st.put("shared", obj), obj))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    def collector():
        st = ModelStore(locs)
        while not stop.is_set():
            st.gc(grace=30)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    g = threading.Thread(target=collector)
    g.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    g.join()
    assert not errors
    st = ModelStore(locs)
    for v, obj in done:
        assert_arrays_equal(st.get("shared", v), obj)
    assert not [p for p in st.verify().problems if p.what == "chunk"]


def test_cli_gc(locs, capsys, monkeypatch):
    from dartboost.store.cli import main

    store = ModelStore(locs, k=3, r=2, chunk_size=CHUNK)
    store.put("m", sample_arrays(5))
    _crash_put(store, "m", sample_arrays(6), monkeypatch)
    L = ",".join(locs)
    assert main(["--loc", L, "gc", "--grace", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove" in out and ".tmp-deadbeef" in out
    assert main(["--loc", L, "gc", "--grace", "0"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not ModelStore(locs).gc(grace=0).orphans
