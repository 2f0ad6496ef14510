"""ModelStore against an S3-compatible server (moto) on loopback, through s3fs."""
import numpy as np
import pytest

from dartboost.store import ModelStore, UnrecoverableError
from store_fixtures import assert_arrays_equal, s3_bucket, s3_endpoint, sample_arrays  # noqa: F401


def _store(bucket, opts, create=True, k=2, r=2):
    locs = [f"s3://{bucket}/shard{i}" for i in range(k + r)]
    return ModelStore(locs, k=k if create else None, r=r if create else None,
                      chunk_size=4096, storage_options=opts), locs


def _remove_prefix(opts, prefix):
    import s3fs

    fs = s3fs.S3FileSystem(**opts)
    fs.rm(prefix, recursive=True)


def test_s3_roundtrip_loss_and_repair(s3_bucket):
    bucket, opts = s3_bucket
    store, locs = _store(bucket, opts)
    a = sample_arrays(0, n=400)
    assert store.put("model", a) == 1
    assert store.list() == ["model"] and store.versions("model") == [1]
    assert_arrays_equal(store.get("model"), a)
    # lose two whole shards (r = 2): still exact
    _remove_prefix(opts, f"{bucket}/shard0")
    _remove_prefix(opts, f"{bucket}/shard3")
    reader = ModelStore(locs, storage_options=opts, create=False)
    assert_arrays_equal(reader.get("model"), a)
    rep = reader.verify()
    assert {p.location for p in rep.problems} == {0, 3} and not rep.unrecoverable
    rep = ModelStore(locs, storage_options=opts).repair()
    assert rep.repaired and not rep.unrecoverable
    assert reader.verify().ok
    # and now a different pair may be lost
    _remove_prefix(opts, f"{bucket}/shard1")
    _remove_prefix(opts, f"{bucket}/shard2")
    assert_arrays_equal(ModelStore(locs, storage_options=opts, create=False).get("model"), a)


def test_s3_bit_flip_and_too_many_losses(s3_bucket):
    import s3fs

    bucket, opts = s3_bucket
    store, locs = _store(bucket, opts)
    a = sample_arrays(1, n=400)
    store.put("m", a)
    fs = s3fs.S3FileSystem(**opts)
    chunk = sorted(fs.ls(f"{bucket}/shard1/objects/m/chunks", detail=False))[0]
    b = bytearray(fs.cat_file(chunk))
    b[5] ^= 1
    fs.pipe_file(chunk, bytes(b))
    assert_arrays_equal(store.get("m"), a)
    assert [p.status for p in store.verify().problems] == ["corrupt"]
    for i in (0, 2, 3):
        _remove_prefix(opts, f"{bucket}/shard{i}/objects")
    with pytest.raises(UnrecoverableError, match="more than r=2"):
        store.get("m")


def test_s3_incremental_and_exclusive_commit(s3_bucket):
    bucket, opts = s3_bucket
    store, locs = _store(bucket, opts)
    a = sample_arrays(2, n=1500)
    store.put("ckpt", a)
    full = store.last_put_stats["chunk_bytes_written"]
    b = dict(a)
    b["tree_weights"] = a["tree_weights"] * 0.5
    store.put("ckpt", b, incremental=True)
    assert store.last_put_stats["chunk_bytes_written"] < full / 4
    assert_arrays_equal(store.get("ckpt"), b)
    # the commit is an exclusive create: a second create of v2 is refused
    loc = store.locations[0]
    assert loc.create(store.objects._mpath(loc, "ckpt", 2), b"{}") is False
    assert_arrays_equal(store.get("ckpt", 2), b)
    other = ModelStore(locs, storage_options=opts)
    assert other.put("ckpt", {"x": np.ones(2)}) == 3


def test_cli_against_s3(s3_bucket, tmp_path, capsys):
    import json

    from dartboost.store.cli import main

    bucket, opts = s3_bucket
    f = tmp_path / "blob.bin"
    f.write_bytes(bytes(range(256)) * 40)
    L = ",".join(f"s3://{bucket}/cli{i}" for i in range(3))
    common = ["--loc", L, "--storage-options", json.dumps(opts)]
    assert main(common + ["-k", "2", "-r", "1", "put", "blob", str(f)]) == 0
    assert main(common + ["get", "blob", "-o", str(tmp_path / "back.bin")]) == 0
    assert (tmp_path / "back.bin").read_bytes() == f.read_bytes()
    assert main(common + ["verify"]) == 0
    assert main(["--loc", L, "--storage-options", "{not json", "ls"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
