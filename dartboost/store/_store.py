"""ModelStore: models in the erasure-coded object store.

The thin model layer over :class:`~dartboost.store._objects.ObjectStore`: it
turns an estimator (or a dict of arrays, or a pickle for trusted data) into the
bytes of the model file format (:mod:`dartboost._model_file`, whose states
come from and go back through the core's :mod:`dartboost.model_io`), stores
them as an object, and loads them back. Everything about storage (versions,
erasure coding, commits, scrub, repair, gc) is the object store's; the one
thing this layer adds to a write is the array layout of the previous version,
so that a new checkpoint keeps its arrays at their offsets and the object
store can update it incrementally.
"""
import threading

from .. import _model_file as _format
from ._objects import DEFAULT_CHUNK_SIZE, ObjectStore


class ModelStore:
    """Erasure-coded store of dartboost models over fsspec locations.

    Parameters
    ----------
    locations : sequence of str
        ``k + r`` fsspec URLs, one per shard, ideally on independent storage.
        The order matters: location ``i`` always holds shard ``i``.
    k, r : int or None
        Data and parity shards. Required to create a store; when opening an
        existing one they may be None (read from the store) and otherwise must
        match it.
    chunk_size : int, default=65536
        Largest chunk size in bytes (multiple of 64), fixed at creation. Each
        object picks its own chunk size up to this so that its rows are nearly
        full (little padding for small objects). Smaller chunks make incremental
        updates write fewer bytes, at more files per object.
    storage_options : dict or list of dict, optional
        Options for ``fsspec`` (e.g. S3 endpoint and credentials), one dict for
        all locations or one per location.
    backend : {"isal", "numba", "numpy"} or None
        GF(2^8) kernel; None picks the fastest available.
    create : bool, default=True
        Initialise locations that have no store configuration yet (a new store,
        or a replaced empty location awaiting :meth:`repair`).

    Attributes
    ----------
    objects : ObjectStore
        The byte store underneath; :meth:`versions`, :meth:`verify`,
        :meth:`repair`, :meth:`gc` and the other storage methods are its.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from dartboost.store import ModelStore
    >>> root = tempfile.mkdtemp()
    >>> store = ModelStore([f"{root}/s{i}" for i in range(6)], k=4, r=2)
    >>> v = store.put("weights", {"w": np.arange(10.0)})
    >>> store.get("weights")["w"][:3]
    array([0., 1., 2.])
    """

    def __init__(self, locations, k=None, r=None, *, chunk_size=DEFAULT_CHUNK_SIZE,
                 storage_options=None, backend=None, create=True):
        self.objects = ObjectStore(locations, k, r, chunk_size=chunk_size,
                                   storage_options=storage_options, backend=backend,
                                   create=create)
        self._layouts = {}  # name -> array layout of the last version this object wrote
        self._lock = threading.Lock()
        self.last_put_stats = None

    def __reduce__(self):
        # picklable/clonable (estimators deep-copy their callbacks): reopen the
        # same locations, without the in-memory layouts and write cache
        return (_reopen_models, (self.objects,))

    def __repr__(self):
        return repr(self.objects).replace("ObjectStore(", "ModelStore(", 1)

    # ---------------------------------------------------- the object store's
    k = property(lambda self: self.objects.k, doc="Data shards.")
    r = property(lambda self: self.objects.r, doc="Parity shards.")
    n = property(lambda self: self.objects.n, doc="Shards, ``k + r``.")
    locations = property(lambda self: self.objects.locations, doc="The k + r locations.")
    chunk_size = property(lambda self: self.objects.chunk_size, doc="Largest chunk size.")
    store_id = property(lambda self: self.objects.store_id, doc="Identity of the store.")
    quorum = property(lambda self: self.objects.quorum, doc="Manifest copies that commit.")
    rs = property(lambda self: self.objects.rs, doc="The Reed-Solomon code.")

    def versions(self, name):
        """Version numbers of ``name``; see :meth:`ObjectStore.versions`."""
        return self.objects.versions(name)

    def list(self):
        """Names of all stored objects that have at least one version."""
        return self.objects.list()

    def info(self, name, version=None):
        """The manifest of a version: size, kind, class, metadata, chunk table, ..."""
        return self.objects.info(name, version)

    def get_bytes(self, name, version=None):
        """The stored bytes of a version, verified; see :meth:`ObjectStore.get`."""
        return self.objects.get(name, version)

    def verify(self, name=None, version=None, **kwargs):
        """Scrub every chunk and manifest copy; see :meth:`ObjectStore.verify`."""
        return self.objects.verify(name, version, **kwargs)

    def repair(self, name=None, version=None):
        """Rebuild missing or corrupt chunks; see :meth:`ObjectStore.repair`."""
        return self.objects.repair(name, version)

    def delete(self, name, version=None):
        """Delete one or all versions of ``name``; see :meth:`ObjectStore.delete`."""
        return self.objects.delete(name, version)

    def gc(self, name=None, **kwargs):
        """Remove orphan chunks and stale temporaries; see :meth:`ObjectStore.gc`."""
        return self.objects.gc(name, **kwargs)

    # ------------------------------------------------------------ the models
    def put(self, name, obj, *, metadata=None, incremental=False, expected_growth=None,
            chunk_size=None):
        """Store a new version of ``name``.

        Parameters
        ----------
        name : str
            Object name (letters, digits, ``._-``).
        obj : dartboost estimator, dict of ndarray, bytes, or any picklable object
            ``bytes`` are stored verbatim (use :meth:`get_bytes` to read them).
        metadata : dict, optional
            JSON-serialisable metadata kept in the manifest and the model header.
        incremental : bool, default=False
            If this store object wrote the previous version of ``name``, write only
            the chunks that changed and update parity from their deltas.
        expected_growth : float, optional
            Hint for the model format: how much growing arrays will still grow
            (the checkpoint callback passes ``n_estimators / n_iter``).
        chunk_size : int, optional
            Largest chunk size for this object (multiple of 64, at most the
            store's). Smaller chunks make incremental updates cheaper.

        Returns
        -------
        version : int
            The committed version number. ``last_put_stats`` tells the bytes
            and chunks written.
        """
        with self._lock:
            prev = self._layouts.get(name)
            if isinstance(obj, (bytes, bytearray, memoryview)):
                blob, layout, kind, cls = bytes(obj), None, "bytes", "bytes"
                if blob.startswith(_format.MAGIC):  # a saved model file: record what it holds
                    hdr = _format.read_header(blob)
                    kind, cls = hdr["kind"], hdr.get("class")
            else:
                # the previous layout even for a full rewrite: arrays keep their offsets
                blob, layout = _format.dumps(obj, metadata=metadata, layout=prev,
                                             expected_growth=expected_growth)
                hdr = _format.read_header(blob)
                kind, cls = hdr["kind"], hdr.get("class")
            version = self.objects.put(name, blob, metadata=metadata, kind=kind,
                                       content_class=cls, incremental=incremental,
                                       chunk_size=chunk_size)
            self._layouts[name] = layout
            stats = dict(self.objects.last_put_stats)
            stats["relayout"] = stats["incremental"] and layout is not prev
            self.last_put_stats = stats
            return version

    def get(self, name, version=None, *, allow_pickle=False):
        """Load an object.

        Parameters
        ----------
        name : str
        version : int or None
            None (or -1) for the latest version, -2 for the one before, or an
            explicit version number.
        allow_pickle : bool, default=False
            Needed for objects stored as a pickle (anything that is neither a
            dartboost estimator nor a dict of arrays). Only for trusted stores.
        """
        blob = self.get_bytes(name, version)
        if not blob.startswith(_format.MAGIC):
            return blob  # stored as raw bytes
        return _format.loads(blob, allow_pickle=allow_pickle)

    def get_state(self, name, version=None):
        """The stored model header and arrays, without building an estimator.

        Returns
        -------
        header : dict
            ``kind``, ``class``, ``state`` (the estimator's own header), ``metadata``.
        arrays : dict of str to ndarray
        """
        header, arrays = _format.loads_state(self.get_bytes(name, version))
        return header, {n: a.copy() for n, a in arrays.items()}


def _reopen_models(objects):
    store = ModelStore.__new__(ModelStore)
    store.objects = objects  # an ObjectStore pickles as its constructor arguments
    store._layouts, store._lock, store.last_put_stats = {}, threading.Lock(), None
    return store
