"""Shared fixtures and helpers of the store tests (imported by tests/test_store_*.py)."""
import os
import socket

import numpy as np
import pytest


def free_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server (moto) on a free loopback port, for the session."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    port = free_loopback_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        yield endpoint
    finally:
        server.stop()


def s3_options(endpoint):
    return {"key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint}}


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh bucket; yields (bucket, storage_options)."""
    import s3fs

    opts = s3_options(s3_endpoint)
    fs = s3fs.S3FileSystem(**opts)
    bucket = "store-" + request.node.name.lower().replace("_", "-")[:40]
    fs.mkdir(bucket)
    yield bucket, opts


def local_locations(root, n):
    return [os.path.join(str(root), f"shard{i}") for i in range(n)]


def sample_arrays(seed=0, n=3000):
    """A dict of arrays like a small model's state (several dtypes)."""
    rng = np.random.default_rng(seed)
    nodes = np.zeros(n, dtype=[("feature", "<i4"), ("threshold", "<f8"), ("left", "<i4"),
                               ("right", "<i4"), ("value", "<f8")])
    nodes["feature"] = rng.integers(0, 50, n)
    nodes["threshold"] = rng.normal(size=n)
    nodes["value"] = rng.normal(size=n)
    return {"nodes": nodes, "tree_weights": rng.random(100),
            "tree_offsets": np.arange(101, dtype=np.int64) * 30,
            "bins": rng.integers(0, 255, (7, 9)).astype(np.uint8)}


def assert_arrays_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def concurrent_writer(args):
    """Child process of the concurrent-writers test: put several versions of one name."""
    locations, name, writer, n_puts = args
    from dartboost.store import ModelStore

    store = ModelStore(locations)
    versions = []
    for j in range(n_puts):
        obj = {"writer": np.full(5000 + 1000 * writer, writer, dtype=np.int64),
               "j": np.array([j])}
        versions.append(store.put(name, obj, incremental=j > 0))
    return writer, versions
