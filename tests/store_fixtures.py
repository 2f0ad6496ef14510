"""Shared fixtures and helpers of the store tests (imported by tests/test_store_*.py)."""
import os
import socket
import threading

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


class SimDisk:
    """The contents of one simulated location, shared by every writer's view."""

    def __init__(self):
        self.files = {}
        self.first = {}
        self.lock = threading.Lock()


class SimLocation:
    """One writer's view of a :class:`SimDisk`, with the Location interface.

    ``down`` makes the view unreachable for manifests (reads, listings and
    creates under ``manifests/``), as for a location that fails after a put
    wrote its chunks. A race is scheduled through ``disk.first``: {path:
    writer} names the writer that arrives first at a path; a create by any
    other writer finds the path taken (the outcome of an exclusive create
    depends only on who comes first, so writers can run one after another).
    """

    local = False
    exclusive_create = True

    def __init__(self, disk, index, down=False, writer=None):
        self.disk, self.index, self.down, self.writer = disk, index, down, writer
        self.url = f"sim://{index}"
        self.root = self.url

    def path(self, *parts):
        return "/".join((self.root,) + parts)

    def _check(self, path):
        if self.down and "/manifests" in path:
            raise ConnectionError(f"{self.url} is unreachable")

    def read(self, path, limit=None):
        self._check(path)
        with self.disk.lock:
            if path not in self.disk.files:
                raise FileNotFoundError(path)
            return self.disk.files[path]

    def read_many(self, paths, limit=None):
        out = {}
        for p in paths:
            try:
                out[p] = self.read(p)
            except OSError as exc:
                out[p] = exc
        return out

    def write(self, path, data):
        self._check(path)
        with self.disk.lock:
            self.disk.files[path] = bytes(data)

    def write_many(self, items):
        for p, d in items.items():
            self.write(p, d)

    def create(self, path, data):
        self._check(path)
        with self.disk.lock:
            if path in self.disk.files or self.disk.first.get(path, self.writer) != self.writer:
                return False
            self.disk.files[path] = bytes(data)
            return True

    def exists(self, path):
        self._check(path)
        with self.disk.lock:
            return path in self.disk.files

    def scan(self, path):
        self._check(path + "/")
        prefix = path.rstrip("/") + "/"
        with self.disk.lock:
            names = {p[len(prefix):].split("/", 1)[0] for p in self.disk.files if p.startswith(prefix)}
        return sorted((n, 0.0, True) for n in names)

    def listdir(self, path):
        return [n for n, _, _ in self.scan(path)]

    def remove(self, path):
        self._check(path)
        with self.disk.lock:
            self.disk.files.pop(path, None)

    def remove_dir_if_empty(self, path):
        pass

