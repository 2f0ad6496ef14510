"""ObjectStore: opaque bytes as k data + r parity shards over fsspec locations.

This is the storage engine of :mod:`dartboost.store`: versions, erasure coding,
the commit protocol, scrub, repair and garbage collection of byte strings. It
knows nothing about models; :class:`dartboost.store.ModelStore` is the thin
layer that turns estimators into bytes (through the core model format) and
back.

On-storage layout, identical at every location ``i`` (which holds shard ``i``)::

    <root>/.dartboost-store.json                      store id, k, r, chunk size, i
    <root>/objects/<name>/chunks/<sha256[:32]>        this shard's chunks (content-addressed)
    <root>/objects/<name>/manifests/v00000007.json    manifest of version 7 (replicated)

An object's bytes are cut into chunks, laid out in rows of k chunks
(:func:`dartboost.store._incremental.stripe`), and each row gets r parity chunks
(Reed-Solomon, Cauchy matrix over GF(2^8)). Chunk ``(row, i)`` goes to location
``i``. A chunk's file name is the SHA-256 of its content, which is its checksum:
a chunk is healthy only if its bytes hash to the name the manifest lists. The
manifest (names, sizes, chunk ids, a SHA-256 of itself) is written to every
location *after* all chunks, with an exclusive create: that is the commit. A
reader therefore sees either the complete old version or the complete new one.

Concurrent writers of one name both write their chunks (content addressing
makes identical chunks harmless and different ones never collide), then race
to create the next manifest. The first location that accepts the exclusive
create decides; the loser retries with the next version number, so both
versions end up committed, each complete, in some order.
"""
import base64
import binascii
import hashlib
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ._incremental import encode_rows, stripe, update_parity
from ._locations import (TMP_PREFIX, IrregularFileError, Location, StoreError, check_chunk_id,
                         check_name, now)
from ._rs import ReedSolomon, _check_kr

STORE_FORMAT = "dartboost.store"
STORE_FORMAT_VERSION = 1
CODEC = "rs-cauchy-gf256-0x11d"
CONFIG_NAME = ".dartboost-store.json"
DEFAULT_CHUNK_SIZE = 1 << 16
_UNREACHABLE = object()
_VERSION_FILE = re.compile(r"v([0-9]{8})\.json")
# bound on what reading one manifest copy may allocate (a 64 KiB-chunk manifest
# of a 100 GB object is about 50 MB)
MAX_MANIFEST_BYTES = 1 << 28
DEFAULT_GRACE_SECONDS = 3600.0


class ConfigMismatchError(StoreError, ValueError):
    """The locations, k, r or chunk size do not match the existing store."""


class ManifestError(StoreError):
    """A manifest is missing, truncated or corrupt at every location."""


class UnrecoverableError(StoreError):
    """More than r shards of some row are missing or corrupt."""


class ObjectNotFoundError(StoreError, KeyError):
    """No such object or version."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConcurrentWriteError(StoreError):
    """A write kept losing the race for the next version number."""


def _sha256(b):
    return hashlib.sha256(b).hexdigest()


def _chunk_id(b):
    # 128 bits of SHA-256: ample against corruption and accidental collisions,
    # and it halves the manifest, which is rewritten at every location per version.
    return hashlib.sha256(b).hexdigest()[:32]


def _canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _manifest_bytes(body):
    """Serialise a manifest; the chunk table is packed as base64 of the binary ids.

    The manifest is rewritten at every location for every version, and the
    table is most of it: 16 bytes per chunk id (21 in base64) instead of 35 as
    quoted hex.
    """
    disk = dict(body)
    ids = "".join(cid for row in body["chunks"] for cid in row)
    disk["chunks"] = base64.b64encode(bytes.fromhex(ids)).decode("ascii")
    return json.dumps({"body": disk, "sha256": _sha256(_canonical(disk))}).encode()


def _unpack_chunk_table(packed, rows, n):
    raw = base64.b64decode(packed, validate=True)
    if len(raw) != rows * n * 16:
        raise ValueError("chunk table length does not match rows x shards")
    hexed = raw.hex()
    return [[hexed[(i * n + j) * 32:(i * n + j + 1) * 32] for j in range(n)] for i in range(rows)]


@dataclass
class Problem:
    """One missing or corrupt item found by :meth:`ObjectStore.verify`."""

    name: str
    version: int
    location: int
    url: str
    what: str  # "chunk" or "manifest"
    status: str  # "missing", "corrupt" or "unreachable"
    row: int = -1
    chunk: str = ""

    def __str__(self):
        where = f"shard {self.location} ({self.url})"
        if self.what == "manifest":
            return f"{self.name} v{self.version}: manifest {self.status} at {where}"
        return f"{self.name} v{self.version}: row {self.row} chunk {self.chunk[:12]} {self.status} at {where}"


@dataclass
class VerifyReport:
    """Result of a scrub; ``ok`` is True when every chunk and manifest is healthy."""

    checked_versions: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    unrecoverable: list = field(default_factory=list)  # (name, version, row, bad shards)
    repaired: list = field(default_factory=list)
    # garbage older than the grace period, (name, location, "chunks"|"manifests", file):
    # harmless to reads, removed by gc(); it does not make ``ok`` False
    orphans: list = field(default_factory=list)
    stale_temporaries: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems and not self.unrecoverable

    def __str__(self):
        lines = [f"checked {len(self.checked_versions)} version(s): "
                 + ("all shards healthy" if not self.problems else f"{len(self.problems)} problem(s)")]
        lines += [f"  {p}" for p in self.problems]
        lines += [f"  UNRECOVERABLE {n} v{v}: no valid manifest copy at any location" if row < 0
                  else f"  UNRECOVERABLE {n} v{v} row {row}: shards {bad} bad, more than r"
                  for n, v, row, bad in self.unrecoverable]
        if self.orphans or self.stale_temporaries:
            lines.append(f"garbage: {len(self.orphans)} orphan chunk(s), "
                         f"{len(self.stale_temporaries)} stale temporary file(s) "
                         "(run 'dartboost store gc' to remove them)")
        if self.repaired:
            lines.append(f"repaired {len(self.repaired)} item(s)")
        return "\n".join(lines)


class ObjectStore:
    """Erasure-coded store of byte strings over fsspec locations.

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
        GF(2^8) kernel; None picks the fastest available
        (:func:`dartboost.store._gf256.default_backend`).
    create : bool, default=True
        Initialise locations that have no store configuration yet (a new store,
        or a replaced empty location awaiting :meth:`repair`).

    Examples
    --------
    >>> import tempfile
    >>> from dartboost.store import ObjectStore
    >>> root = tempfile.mkdtemp()
    >>> store = ObjectStore([f"{root}/s{i}" for i in range(6)], k=4, r=2)
    >>> store.put("blob", b"hello" * 1000)
    1
    >>> store.get("blob")[:10]
    b'hellohello'
    """

    def __init__(self, locations, k=None, r=None, *, chunk_size=DEFAULT_CHUNK_SIZE,
                 storage_options=None, backend=None, create=True):
        locations = list(locations)
        if isinstance(storage_options, (list, tuple)):
            if len(storage_options) != len(locations):
                raise ValueError("storage_options list must have one entry per location")
            opts = list(storage_options)
        else:
            opts = [storage_options] * len(locations)
        self._init_args = (locations, k, r, chunk_size, storage_options, backend, create)
        if k is not None or r is not None:
            if k is None or r is None:
                raise ValueError("give both k and r, or neither to read them from the store")
            k, r = _check_kr(k, r)
            if len(locations) != k + r:
                raise ConfigMismatchError(
                    f"k={k}, r={r} needs {k + r} locations (one per shard), got {len(locations)}")
        if len(set(locations)) != len(locations):
            raise ValueError("locations must be distinct (each holds a different shard)")
        # a Location-like object (same methods) may stand in for a URL: custom
        # backends, and the simulated locations of the commit-protocol tests
        self.locations = [Location(u, o) if isinstance(u, str) else u
                          for u, o in zip(locations, opts)]
        self.backend = backend
        self._cache = {}
        self._committed = {}  # (name, version) -> (body, sha): quorum decisions are final
        self._lock = threading.Lock()  # puts from several threads share the cache
        self.last_put_stats = None
        self._open(k, r, chunk_size, create)
        self.rs = ReedSolomon(self.k, self.r, backend=backend)

    def __reduce__(self):
        # Picklable/clonable (estimators deep-copy their callbacks): rebuild from
        # the arguments and drop the in-memory write cache.
        return (_reopen, (type(self),) + self._init_args)

    def __repr__(self):
        return f"{type(self).__name__}(k={self.k}, r={self.r}, locations={[loc.url for loc in self.locations]})"

    # ------------------------------------------------------------------ setup
    def _open(self, k, r, chunk_size, create):
        def read_config(loc):
            try:
                cfg = json.loads(loc.read(loc.path(CONFIG_NAME)))
            except FileNotFoundError:
                return None
            except ValueError:
                return None  # unreadable: rewritten below from the others
            except OSError:
                return _UNREACHABLE  # a down location must not stop reads
            if not isinstance(cfg, dict) or cfg.get("format") != STORE_FORMAT:
                return None
            return cfg

        configs = self._map(read_config, self.locations)
        reachable = [c is not _UNREACHABLE for c in configs]
        configs = [None if c is _UNREACHABLE else c for c in configs]
        present = [(i, c) for i, c in enumerate(configs) if c is not None]
        if present:
            ref = present[0][1]
            for i, c in present:
                for key in ("store_id", "k", "r", "chunk_size", "codec"):
                    if c.get(key) != ref.get(key):
                        raise ConfigMismatchError(
                            f"location {i} ({self.locations[i].url}) belongs to a different store "
                            f"or configuration ({key}={c.get(key)!r} vs {ref.get(key)!r})")
                if c.get("index") != i:
                    raise ConfigMismatchError(
                        f"location {i} ({self.locations[i].url}) holds shard {c.get('index')} of "
                        "this store; pass the locations in their original order")
            if ref.get("format_version") != STORE_FORMAT_VERSION:
                raise ConfigMismatchError(
                    f"store format version {ref.get('format_version')!r} is not supported "
                    f"(this dartboost reads {STORE_FORMAT_VERSION})")
            if ref.get("codec") != CODEC:
                raise ConfigMismatchError(f"unknown codec {ref.get('codec')!r}")
            sk, sr = ref["k"], ref["r"]
            if k is not None and (k, r) != (sk, sr):
                raise ConfigMismatchError(
                    f"the store at {self.locations[present[0][0]].url} was created with k={sk}, r={sr}; "
                    f"it cannot be opened with k={k}, r={r}")
            if len(self.locations) != sk + sr:
                raise ConfigMismatchError(
                    f"the store has k + r = {sk + sr} shards but {len(self.locations)} locations were given")
            self.k, self.r, self.chunk_size = sk, sr, ref["chunk_size"]
            self.store_id = ref["store_id"]
        else:
            if k is None:
                raise ConfigMismatchError(
                    "no existing store at these locations; pass k and r to create one")
            if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 64 or chunk_size % 64:
                raise ValueError(f"chunk_size must be a positive multiple of 64, got {chunk_size!r}")
            self.k, self.r, self.chunk_size = k, r, int(chunk_size)
            self.store_id = uuid.uuid4().hex
        missing = [i for i, c in enumerate(configs) if c is None and reachable[i]]
        if missing and create:
            for i in missing:
                cfg = {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION,
                       "store_id": self.store_id, "k": self.k, "r": self.r,
                       "chunk_size": self.chunk_size, "codec": CODEC, "index": i}
                loc = self.locations[i]
                loc.write(loc.path(CONFIG_NAME), json.dumps(cfg, indent=1).encode())
        elif missing and not present:
            raise ConfigMismatchError("no dartboost store at these locations")

    @property
    def n(self):
        return self.k + self.r

    def _map(self, fn, items):
        items = list(items)
        # threads pay off for network round trips, not for local files (where
        # starting them costs more than the I/O of a checkpoint)
        if len(items) <= 1 or all(loc.local for loc in self.locations):
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(16, len(items))) as ex:
            return list(ex.map(fn, items))

    # ------------------------------------------------------------- manifests
    def _mpath(self, loc, name, version):
        return loc.path("objects", check_name(name), "manifests", f"v{int(version):08d}.json")

    def _cpath(self, loc, name, cid):
        return loc.path("objects", check_name(name), "chunks", check_chunk_id(cid))

    def _parse_manifest(self, raw, name, version):
        try:
            doc = json.loads(raw)
            body = doc["body"]
            if not isinstance(body, dict) or _sha256(_canonical(body)) != doc["sha256"]:
                raise ValueError("checksum mismatch")
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"truncated or corrupt ({exc.__class__.__name__}: {exc})") from exc
        if body.get("format") != "dartboost.store.manifest" or body.get("format_version") != 1:
            raise ManifestError(f"unsupported manifest format {body.get('format_version')!r}")
        if body.get("name") != name or body.get("version") != version \
                or body.get("store_id") != self.store_id:
            raise ManifestError("manifest belongs to another object, version or store")
        if (body.get("k"), body.get("r")) != (self.k, self.r) or body.get("codec") != CODEC:
            raise ConfigMismatchError(
                f"manifest of {name!r} v{version} was written with k={body.get('k')}, "
                f"r={body.get('r')}, codec={body.get('codec')!r}, but the store has "
                f"k={self.k}, r={self.r}, codec={CODEC!r}")
        c = body.get("chunk_size")
        if not isinstance(c, int) or c < 64 or c % 64 or c > self.chunk_size:
            raise ManifestError(f"manifest chunk size {c!r} is invalid for this store")
        rows = body.get("rows")
        size = body.get("size")
        try:
            if not isinstance(body.get("chunks"), str) or not isinstance(rows, int) or rows < 1:
                raise ValueError("not a packed chunk table")
            chunks = _unpack_chunk_table(body["chunks"], rows, self.n)
        except (ValueError, binascii.Error) as exc:
            raise ManifestError(f"manifest chunk table is malformed ({exc})") from None
        body["chunks"] = chunks
        if not isinstance(chunks, list) or len(chunks) != rows or not isinstance(size, int) \
                or not 0 <= size <= rows * self.k * c \
                or any(not isinstance(row, list) or len(row) != self.n for row in chunks):
            raise ManifestError("manifest chunk table is malformed")
        try:
            for row in chunks:
                for cid in row:
                    check_chunk_id(cid)
        except StoreError as exc:
            raise ManifestError(str(exc)) from None
        return body, doc["sha256"]

    @property
    def quorum(self):
        """Manifest copies that commit a version: a majority of the k + r locations."""
        return self.n // 2 + 1

    def _listed_versions(self, name):
        """Every version number some reachable location lists, committed or not."""
        check_name(name)
        found = set()
        for loc in self.locations:
            try:
                entries = loc.listdir(loc.path("objects", name, "manifests"))
            except OSError:
                continue  # a down location; the commit rule copes with what it misses
            for fn in entries:
                m = _VERSION_FILE.fullmatch(fn)
                if m:
                    found.add(int(m.group(1)))
        return found

    def _votes(self, name, version):
        """Each location's copy of a manifest: ``[(status, sha, body)]`` by location.

        ``status`` is "ok", "missing", "corrupt" (unparseable, bad checksum, not
        a regular file) or "unreachable"; ``sha`` identifies the body.
        """
        out = []
        for loc in self.locations:
            try:
                raw = loc.read(self._mpath(loc, name, version), limit=MAX_MANIFEST_BYTES)
            except FileNotFoundError:
                out.append(("missing", None, None))
                continue
            except IrregularFileError:
                out.append(("corrupt", None, "not a regular file"))
                continue
            except OSError as exc:
                out.append(("unreachable", None, str(exc)))
                continue
            try:
                body, sha = self._parse_manifest(raw, name, version)
            except ManifestError as exc:
                out.append(("corrupt", None, str(exc)))
                continue
            out.append(("ok", sha, body))
        return out

    def _decide(self, name, version, votes=None):
        """Apply the commit rule to one version number (``docs/contracts.md``).

        Returns
        -------
        status : {"quorum", "sole", "undecided", "aborted", "damaged"}
            "quorum": one body has copies at a majority of locations, which is
            what its writer needed to acknowledge it, and final. "sole": every
            location answered and all valid copies are one body (a store that
            lost copies, or a put that crashed after writing some). "undecided":
            unreachable locations could still make a body a majority.
            "aborted": competing bodies, none can win (no put acknowledged it).
            "damaged": no valid copy at any location.
        body : dict or None
            The committed manifest for "quorum" and "sole".
        votes : list
            As returned by :meth:`_votes`.
        """
        key = (name, version)
        if votes is None and key in self._committed:
            return "quorum", self._committed[key][0], None
        votes = self._votes(name, version) if votes is None else votes
        counts = {}
        for st, sha, body in votes:
            if st == "ok":
                counts.setdefault(sha, [0, body])[0] += 1
        down = sum(st == "unreachable" for st, _, _ in votes)
        for sha, (c, body) in counts.items():
            if c >= self.quorum:
                self._committed[key] = (body, sha)
                return "quorum", body, votes
        best = max((c for c, _ in counts.values()), default=0)
        if down and best + down >= self.quorum:
            return "undecided", None, votes
        if len(counts) == 1 and not down:
            return "sole", next(iter(counts.values()))[1], votes
        if not counts:
            return ("undecided" if down else "damaged"), None, votes
        return "aborted", None, votes

    def versions(self, name):
        """Version numbers of ``name`` (ascending) that are committed, damaged or undecided.

        Versions that no put can have acknowledged (competing partial commits
        that none won) are left out.
        """
        vs = []
        for v in sorted(self._listed_versions(name)):
            if self._decide(name, v)[0] != "aborted":
                vs.append(v)
        return vs

    def list(self):
        """Names of all stored objects that have at least one version."""
        return sorted(n for n in self._names() if self.versions(n))

    def _names(self):
        names = set()
        for loc in self.locations:
            try:
                entries = loc.listdir(loc.path("objects"))
            except OSError:
                continue
            for n in entries:
                try:
                    check_name(n)
                except ValueError:
                    continue
                names.add(n)
        return names

    def _resolve_version(self, name, version):
        vs = self.versions(name)
        if not vs:
            raise ObjectNotFoundError(f"no object named {name!r} in the store")
        if version is None:
            return vs[-1]
        if version < 0:  # -1: latest, -2: the one before, ...
            if -version > len(vs):
                raise ObjectNotFoundError(f"{name!r} has only {len(vs)} version(s)")
            return vs[version]
        if version not in vs:
            raise ObjectNotFoundError(f"{name!r} has no version {version}; versions: {vs}")
        return version

    def _read_manifest(self, name, version, *, report=None):
        """The committed manifest of a version, by the commit rule.

        ``report``, if given, receives ``(location, status)`` for every copy
        that is not a healthy copy of the committed body ("missing", "corrupt",
        "unreachable" or "conflict", a losing writer's copy).

        Raises
        ------
        ManifestError
            No valid copy at any location, or none that the commit rule can
            confirm (the message says which locations would decide).
        """
        # always read the copies: the cached decision says which body wins,
        # but the copies may have been damaged or deleted since
        status, body, votes = self._decide(name, version, self._votes(name, version))
        if report is not None:
            sha = self._committed.get((name, version), (None, None))[1]
            if status == "sole":
                sha = next(h for st, h, _ in votes if st == "ok")
            for i, (st, h, _) in enumerate(votes):
                if st != "ok":
                    report.append((i, st))
                elif body is not None and h != sha:
                    report.append((i, "conflict"))
        if body is not None:
            return body
        where = "; ".join(f"location {i}: {st}" + (f" ({why})" if isinstance(why, str) else "")
                          for i, (st, _, why) in enumerate(votes))
        if status == "undecided":
            raise ManifestError(
                f"cannot tell whether {name!r} v{version} is committed: no manifest copy reaches "
                f"the quorum of {self.quorum} and unreachable locations could decide it ({where})")
        if status == "aborted":
            raise ManifestError(f"{name!r} v{version} was never committed: competing partial "
                                f"manifests, none at a quorum of {self.quorum} ({where})")
        raise ManifestError(f"no valid manifest for {name!r} v{version}: {where}")

    def info(self, name, version=None):
        """The manifest of a version: size, kind, metadata, chunk table, ..."""
        version = self._resolve_version(name, version)
        return self._read_manifest(name, version)

    # ------------------------------------------------------------------ reads
    def _fetch(self, name, body, shard_rows):
        """Read and checksum chunks. ``shard_rows``: {shard: [rows]}.

        Returns {(row, shard): ndarray or str status} where status is
        "missing", "corrupt" or "unreachable".
        """
        chunks = body["chunks"]

        def work(item):
            shard, rows = item
            loc = self.locations[shard]
            ids = {chunks[row][shard] for row in rows}
            paths = {cid: self._cpath(loc, name, cid) for cid in ids}
            try:
                got = loc.read_many(list(paths.values()), limit=body["chunk_size"])
            except OSError as exc:  # the whole location is down
                got = {p: exc for p in paths.values()}
            status = {}
            for cid, p in paths.items():
                data = got.get(p)
                if isinstance(data, FileNotFoundError) or data is None:
                    status[cid] = "missing"
                elif isinstance(data, IrregularFileError):
                    status[cid] = "corrupt"  # a symlink or directory: one bad shard
                elif isinstance(data, BaseException):
                    status[cid] = "unreachable"
                elif len(data) != body["chunk_size"] or _chunk_id(data) != cid:
                    status[cid] = "corrupt"
                else:
                    status[cid] = np.frombuffer(data, dtype=np.uint8)
            return {(row, shard): status[chunks[row][shard]] for row in rows}

        out = {}
        for part in self._map(work, [(s, rs) for s, rs in shard_rows.items() if rs]):
            out.update(part)
        return out

    def _rebuild(self, name, version, body, fetched, wanted):
        """Compute lost chunks from the healthy fetched ones.

        ``wanted`` maps a row to the shards to rebuild in it. Rows sharing an
        erasure pattern are decoded together, in one pass per pattern that
        computes only the wanted shards. Returns ``{row: {shard: chunk}}``.

        Raises UnrecoverableError naming the bad shards when a row has fewer
        than k healthy chunks (after fetching any parity not yet read).
        """
        rows = sorted(wanted)
        need_more = {}
        for row in rows:
            healthy = [s for s in range(self.n) if isinstance(fetched.get((row, s)), np.ndarray)]
            if len(healthy) < self.k:
                for s in range(self.n):
                    if (row, s) not in fetched:
                        need_more.setdefault(s, []).append(row)
        if need_more:
            fetched.update(self._fetch(name, body, need_more))
        groups, failures = {}, []
        for row in rows:
            healthy = tuple(s for s in range(self.n) if isinstance(fetched.get((row, s)), np.ndarray))
            if len(healthy) < self.k:
                bad = {s: fetched.get((row, s), "not read") for s in range(self.n) if s not in healthy}
                failures.append((row, bad))
                continue
            # healthy data shards first (no arithmetic for them), parity to fill up
            data_ok = [s for s in healthy if s < self.k]
            parity_ok = [s for s in healthy if s >= self.k]
            use = tuple(data_ok + parity_ok[:self.k - len(data_ok)])
            groups.setdefault((use, tuple(sorted(wanted[row]))), []).append(row)
        if failures:
            row, bad = failures[0]
            detail = ", ".join(f"shard {s} at {self.locations[s].url} is {st}" for s, st in bad.items())
            raise UnrecoverableError(
                f"cannot reconstruct {name!r} v{version}: {len(failures)} row(s) have more than "
                f"r={self.r} bad shards; e.g. row {row}: {detail}. Restore the missing "
                "locations and run repair, or read an older version.")
        c = body["chunk_size"]
        out = {}
        for (use, want), grp in groups.items():
            if not want:
                continue
            if len(grp) == 1:  # the chunks as read, no stacking copy
                src = [fetched[(grp[0], s)] for s in use]
            else:
                src = np.empty((self.k, len(grp) * c), dtype=np.uint8)
                for i, s in enumerate(use):
                    for t, row in enumerate(grp):
                        src[i, t * c:(t + 1) * c] = fetched[(row, s)]
            dec = self.rs.recover(use, src, want)  # (len(want), len(grp) * c)
            for t, row in enumerate(grp):
                chunks = {s: dec[j, t * c:(t + 1) * c] for j, s in enumerate(want)}
                for s, chunk in chunks.items():
                    # a decode from healthy shards is exact; checking the hash
                    # anyway guards against a wrong erasure pattern or codec bug
                    if _chunk_id(chunk) != body["chunks"][row][s]:
                        raise UnrecoverableError(
                            f"rebuilt chunk ({row}, {s}) of {name!r} v{version} does not "
                            "match its checksum")
                out[row] = chunks
        return out

    def get(self, name, version=None):
        """The stored bytes of a version, verified and reconstructed if needed.

        Reads the k data shards; for any row with missing or corrupt chunks it
        reads parity and rebuilds the lost data chunks only. Every chunk used is
        checked against its SHA-256, and rebuilt chunks are re-checked, so the
        result is the exact bytes written or an error.

        Parameters
        ----------
        name : str
        version : int or None
            None (or -1) for the latest version, -2 for the one before, or an
            explicit version number.

        Returns
        -------
        bytes

        Raises
        ------
        ObjectNotFoundError, ManifestError, UnrecoverableError
        """
        version = self._resolve_version(name, version)
        body = self._read_manifest(name, version)
        rows, c, size = body["rows"], body["chunk_size"], body["size"]
        fetched = self._fetch(name, body, {s: list(range(rows)) for s in range(self.k)})
        lost = {row: [s for s in range(self.k) if not isinstance(fetched[(row, s)], np.ndarray)]
                for row in range(rows)}
        lost = {row: shards for row, shards in lost.items() if shards}
        rebuilt = self._rebuild(name, version, body, fetched, lost) if lost else {}
        # one copy, straight from the chunks into the result
        pieces = []
        for row in range(rows):
            for s in range(self.k):
                left = size - (row * self.k + s) * c
                if left <= 0:
                    break
                chunk = rebuilt[row][s] if row in rebuilt and s in rebuilt[row] \
                    else fetched[(row, s)]
                pieces.append(chunk if left >= c else chunk[:left])
        return b"".join(pieces)

    # ----------------------------------------------------------------- writes
    def put(self, name, data, *, metadata=None, kind="bytes", content_class="bytes",
            incremental=False, chunk_size=None):
        """Store ``data`` as a new version of ``name``.

        Parameters
        ----------
        name : str
            Object name (see :func:`dartboost.store._locations.check_name`).
        data : bytes-like
            The content, stored verbatim.
        metadata : dict, optional
            JSON-serialisable metadata kept in the manifest.
        kind, content_class : str
            Labels of what the bytes are, kept in the manifest (``info()["kind"]``,
            ``info()["class"]``); the store does not interpret them.
        incremental : bool, default=False
            If this store object wrote the previous version of ``name``, keep its
            chunk layout, write only the chunks that changed and update parity
            from their deltas.
        chunk_size : int, optional
            Largest chunk size for this object (multiple of 64, at most the
            store's). Smaller chunks make incremental updates cheaper.

        Returns
        -------
        version : int
            The committed version number. ``last_put_stats`` tells the bytes
            and chunks written.
        """
        check_name(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"ObjectStore.put stores bytes, got {type(data).__name__}; "
                            "use ModelStore to store models and arrays")
        for label, value in (("kind", kind), ("content_class", content_class)):
            if not isinstance(value, str):
                raise TypeError(f"{label} must be a string, got {value!r}")
        max_chunk = self.chunk_size if chunk_size is None else chunk_size
        if not isinstance(max_chunk, (int, np.integer)) or max_chunk < 64 or max_chunk % 64 \
                or max_chunk > self.chunk_size:
            raise ValueError(f"chunk_size must be a multiple of 64 between 64 and the store's "
                             f"{self.chunk_size}, got {chunk_size!r}")
        with self._lock:
            return self._put(name, bytes(data), metadata, kind, content_class, incremental,
                             int(max_chunk))

    def _put(self, name, blob, metadata, kind, cls, incremental, max_chunk):
        t0 = time.perf_counter()
        cache = self._cache.get(name) if incremental else None
        if cache is not None and not self._manifest_exists(name, cache["version"]):
            cache = None  # base deleted meanwhile: its chunks may be gone
        if cache is not None:
            chunk_len = cache["data"].shape[2]
        else:
            # fill the rows evenly: at most 63 bytes of padding per chunk
            rows = max(1, -(-len(blob) // (self.k * max_chunk)))
            chunk_len = max(64, -(-len(blob) // (self.k * rows * 64)) * 64)
        data = stripe(blob, self.k, chunk_len)
        if cache is not None:
            parity, changed = update_parity(self.rs, cache["data"], cache["parity"], data)
            prev_ids = cache["ids"]
        else:
            parity = encode_rows(self.rs, data)
            changed = np.ones(data.shape[:2], dtype=bool)
            prev_ids = []
        rows = data.shape[0]
        ids = [[None] * self.n for _ in range(rows)]
        to_write = {s: {} for s in range(self.n)}
        for row in range(rows):
            row_changed = bool(changed[row].any())
            for s in range(self.n):
                is_data = s < self.k
                same = row < len(prev_ids) and (not changed[row, s] if is_data else not row_changed)
                if same:
                    ids[row][s] = prev_ids[row][s]
                    continue
                chunk = data[row, s] if is_data else parity[row, s - self.k]
                cid = _chunk_id(chunk)
                ids[row][s] = cid
                if row < len(prev_ids) and prev_ids[row][s] == cid:
                    continue
                to_write[s][cid] = chunk
        if cache is None:
            self._drop_stored(name, to_write)
        written = self._write_chunks(name, to_write)
        body = {"format": "dartboost.store.manifest", "format_version": 1,
                "store_id": self.store_id, "name": name, "k": self.k, "r": self.r,
                "codec": CODEC, "chunk_size": chunk_len, "size": len(blob),
                "rows": rows, "chunks": ids, "kind": kind, "class": cls,
                "metadata": metadata or {}, "created": time.time(),
                "writer": uuid.uuid4().hex,
                "parent": cache["version"] if cache else None}
        version, mbytes = self._commit(name, body)
        self._cache[name] = {"version": version, "data": data, "parity": parity, "ids": ids}
        n_chunks = sum(len(v) for v in to_write.values())
        self.last_put_stats = {
            "version": version, "incremental": cache is not None, "object_bytes": len(blob),
            "chunks_written": n_chunks, "chunk_bytes_written": written,
            "manifest_bytes_written": mbytes, "bytes_written": written + mbytes,
            "rows": rows, "rows_changed": int(changed.any(axis=1).sum()),
            "seconds": time.perf_counter() - t0}
        return version

    def _manifest_exists(self, name, version):
        # read the copies afresh: another process may have deleted the version
        return self._decide(name, version, self._votes(name, version))[0] in ("quorum", "sole")

    def _drop_stored(self, name, to_write):
        """Content dedup: skip chunks the latest committed version already holds.

        Only chunks referenced by a committed version are reused (and only
        where the file is present), never orphans, which gc may be removing.
        """
        try:
            latest = self._read_manifest(name, self._resolve_version(name, None))
        except StoreError:
            return
        for s, chunks in to_write.items():
            have = {row[s] for row in latest["chunks"]} & set(chunks)
            if not have:
                continue
            loc = self.locations[s]
            try:
                present = set(loc.listdir(loc.path("objects", name, "chunks")))
            except OSError:
                continue
            for cid in have & present:
                del chunks[cid]

    def _write_chunks(self, name, to_write):
        def work(item):
            s, chunks = item
            loc = self.locations[s]
            items = {self._cpath(loc, name, cid): chunk.tobytes() for cid, chunk in chunks.items()}
            loc.write_many(items)
            return sum(len(b) for b in items.values())

        return sum(self._map(work, list(to_write.items())))

    def _commit(self, name, body, attempts=50):
        """Commit ``body`` as the next version of ``name``; returns (version, bytes written).

        The manifest is created with an exclusive create (create-if-absent) at
        every location. The version is acknowledged only when this writer's
        creates succeeded at a quorum (majority) of locations: two majorities
        always share a location, and a location accepts one manifest per
        version, so no two puts can both be acknowledged with one number. A
        writer that lost some creates to another writer tries the next number;
        one that could not reach a quorum for lack of reachable locations
        raises (fail-closed) instead of acknowledging.
        """
        tried = 0
        for _ in range(attempts):
            version = max(max(self._listed_versions(name), default=0), tried) + 1
            tried = version
            body["version"] = version
            raw = _manifest_bytes(body)
            won, lost, down = [], [], []
            for i, loc in enumerate(self.locations):
                try:
                    (won if loc.create(self._mpath(loc, name, version), raw) else lost).append(i)
                except OSError:
                    down.append(i)  # unreachable: its copy is restored by repair
            if len(won) >= self.quorum:
                self._committed[(name, version)] = (self._parse_manifest(raw, name, version))
                return version, len(raw) * len(won)
            if lost:
                # Another writer holds copies of this number, so ours can never
                # win it: withdraw them (best effort; verify reports leftovers
                # as "conflict" and repair replaces them) and try the next one.
                self._withdraw(name, version, raw, won)
                continue
            raise StoreError(
                f"could not commit {name!r} v{version}: its manifest reached {len(won)} of the "
                f"{self.quorum} locations a commit needs; locations {down} are unreachable. "
                "Nothing was acknowledged; retry when they are back (if those locations did "
                "store the copy, the version appears then)")
        raise ConcurrentWriteError(
            f"gave up committing {name!r} after {attempts} lost races with other writers")

    def _withdraw(self, name, version, raw, where):
        """Take back a losing writer's copies; where the winner is known, put its copy there."""
        status, body, _ = self._decide(name, version, self._votes(name, version))
        winner = _manifest_bytes(body) if status == "quorum" else None
        for i in where:
            loc = self.locations[i]
            path = self._mpath(loc, name, version)
            try:
                if loc.read(path, limit=len(raw)) == raw:  # still our copy
                    loc.remove(path)
                    if winner is not None:
                        loc.create(path, winner)
            except OSError:
                pass

    # ------------------------------------------------------ scrub and repair
    def _targets(self, name, version):
        names = [check_name(name)] if name is not None else self.list()
        out = []
        for n in names:
            vs = [self._resolve_version(n, version)] if version is not None else self.versions(n)
            if name is not None and not vs:
                raise ObjectNotFoundError(f"no object named {n!r} in the store")
            out += [(n, v) for v in vs]
        return out

    def verify(self, name=None, version=None, *, grace=DEFAULT_GRACE_SECONDS):
        """Scrub: read every chunk and manifest copy and check its checksum.

        Parameters
        ----------
        name : str or None
            One object, or all objects when None.
        version : int or None
            One version, or all versions when None.

        grace : float, default=3600
            Orphan chunks and temporary files younger than this are not
            reported (they may belong to a put in flight).

        Returns
        -------
        VerifyReport
            ``problems`` lists every missing/corrupt chunk and manifest copy;
            ``unrecoverable`` the rows that lost more than r shards;
            ``orphans`` and ``stale_temporaries`` the garbage :meth:`gc` removes.
        """
        report = VerifyReport()
        seen = {}
        for n, v in self._targets(name, version):
            self._scan(n, v, report, seen)
        garbage = GcReport()
        for n in ([check_name(name)] if name is not None else sorted(self._names())):
            self._collect(n, grace, garbage, remove=False)
        report.orphans, report.stale_temporaries = garbage.orphans, garbage.stale_temporaries
        return report

    def _scan(self, name, version, report, seen):
        mrep = []
        try:
            body = self._read_manifest(name, version, report=mrep)
        except ManifestError:
            body = None
        report.checked_versions.append((name, version))
        for i, status in mrep:
            report.problems.append(Problem(name, version, i, self.locations[i].url, "manifest", status))
        if body is None:
            report.unrecoverable.append((name, version, -1, "manifest"))
            return None, {}
        rows = body["rows"]
        todo = {s: [row for row in range(rows) if (s, body["chunks"][row][s]) not in seen]
                for s in range(self.n)}
        fetched = self._fetch(name, body, todo)
        status = {}
        for row in range(rows):
            for s in range(self.n):
                key = (s, body["chunks"][row][s])
                if key not in seen:
                    got = fetched[(row, s)]
                    seen[key] = "ok" if isinstance(got, np.ndarray) else got
                st = seen[key]
                status[(row, s)] = st
                if st != "ok":
                    report.problems.append(Problem(name, version, s, self.locations[s].url,
                                                   "chunk", st, row, key[1]))
        for row in range(rows):
            bad = [s for s in range(self.n) if status[(row, s)] != "ok"]
            if len(bad) > self.r:
                report.unrecoverable.append((name, version, row, bad))
        return body, status

    def repair(self, name=None, version=None):
        """Rebuild missing or corrupt chunks and manifest copies.

        Every rebuilt chunk is checked against its SHA-256 before it is written.
        Rows with more than r bad shards cannot be repaired and are listed in
        the report's ``unrecoverable``.

        Returns
        -------
        VerifyReport
            The problems found, with ``repaired`` listing what was rewritten.
        """
        report = VerifyReport()
        seen, fixed = {}, set()
        for n, v in self._targets(name, version):
            before = len(report.problems)
            body, status = self._scan(n, v, report, seen)
            if body is None:
                continue
            new = report.problems[before:]
            man_bad = [(p.location, p.status) for p in new if p.what == "manifest"]
            if man_bad:
                raw = _manifest_bytes(body)
                for i, st in man_bad:
                    loc = self.locations[i]
                    path = self._mpath(loc, n, v)
                    try:
                        if st == "missing":
                            # exclusive: never replaces a copy that appeared meanwhile
                            if not loc.create(path, raw):
                                continue
                        elif st in ("corrupt", "conflict"):
                            # a damaged copy, or a losing writer's copy of a number
                            # the committed body holds by the commit rule
                            loc.remove(path)
                            loc.write(path, raw)
                        else:
                            continue  # unreachable
                        report.repaired.append(f"{n} v{v} manifest at shard {i}")
                    except OSError:
                        pass
            rows = sorted({p.row for p in new if p.what == "chunk"})
            bad_set = {(p.row, p.location) for p in new if p.what == "chunk"}
            unrec = {row for nn, vv, row, _ in report.unrecoverable if (nn, vv) == (n, v)}
            rows = [row for row in rows if row not in unrec]
            if not rows:
                continue
            # shards already found healthy are re-read from storage here; the
            # scan only kept their status, not their bytes (bounded memory)
            fetched = self._fetch(n, body, {s: [row for row in rows if (row, s) not in bad_set]
                                            for s in range(self.n)})
            for key in bad_set:
                fetched[key] = "missing"
            wanted = {row: [s for s in range(self.n) if (row, s) in bad_set
                            and (s, body["chunks"][row][s]) not in fixed] for row in rows}
            # checked against its chunk id inside _rebuild
            rebuilt = self._rebuild(n, v, body, fetched, wanted)
            for row in sorted(rebuilt):
                for s, chunk in sorted(rebuilt[row].items()):
                    cid = body["chunks"][row][s]
                    if (s, cid) in fixed:  # the same chunk id twice in one version
                        continue
                    loc = self.locations[s]
                    loc.write(self._cpath(loc, n, cid), chunk.tobytes())
                    fixed.add((s, cid))
                    seen[(s, cid)] = "ok"
                    report.repaired.append(f"{n} v{v} row {row} shard {s}")
        return report

    # ----------------------------------------------------------------- delete
    def delete(self, name, version=None):
        """Delete one version (or all versions) of ``name`` and free its chunks.

        Manifests go first, so no reader can start on a version whose chunks
        are being removed. Chunks still referenced by other versions stay.
        Not safe to run concurrently with a ``put`` of the same name.

        Returns
        -------
        list of int
            The deleted version numbers.
        """
        check_name(name)
        targets = self.versions(name) if version is None else [self._resolve_version(name, version)]
        if not targets:
            raise ObjectNotFoundError(f"no object named {name!r} in the store")
        for loc in self.locations:
            for v in targets:
                try:
                    loc.remove(self._mpath(loc, name, v))
                except OSError:
                    pass
        for v in targets:
            self._committed.pop((name, v), None)
        self._collect(name, 0.0, GcReport(), remove=True, prune_dirs=True)
        if self._cache.get(name, {}).get("version") in targets:
            del self._cache[name]
        return targets

    def gc(self, name=None, *, grace=DEFAULT_GRACE_SECONDS, dry_run=False):
        """Remove orphan chunks and stale temporary files.

        An orphan is a chunk file no manifest copy of any version references
        (left by a put that crashed or lost its race, or by a partial delete);
        a stale temporary is a ``.tmp-*`` file of an interrupted write. Only
        items last modified more than ``grace`` seconds ago are removed, so the
        chunks of puts still in flight (written, not yet committed) stay:
        ``grace`` must exceed the longest put. Chunks referenced by any
        manifest copy, committed or not, are never touched; an object with an
        unreachable location or an unreadable version is skipped.

        Parameters
        ----------
        name : str or None
            One object, or all objects.
        grace : float, default=3600
            Age in seconds below which nothing is removed.
        dry_run : bool, default=False
            Only report what would be removed.

        Returns
        -------
        GcReport
        """
        report = GcReport()
        names = [check_name(name)] if name is not None else sorted(self._names())
        for n in names:
            self._collect(n, grace, report, remove=not dry_run)
        return report

    def _collect(self, name, grace, report, remove, prune_dirs=False):
        keep = [set() for _ in range(self.n)]
        for v in sorted(self._listed_versions(name)):
            votes = self._votes(name, v)
            if any(st in ("unreachable", "corrupt") for st, _, _ in votes):
                # cannot tell what an unreadable copy refers to: keep everything
                report.skipped.append((name, f"v{v} has unreadable manifest copies"))
                return
            for st, _, body in votes:
                if st == "ok":
                    for row in body["chunks"]:
                        for s, cid in enumerate(row):
                            keep[s].add(cid)
        cutoff = now() - grace
        for s, loc in enumerate(self.locations):
            for sub in ("chunks", "manifests"):
                d = loc.path("objects", name, sub)
                try:
                    entries = loc.scan(d)
                except OSError:
                    report.skipped.append((name, f"location {s} unreachable"))
                    continue
                for fn, mtime, regular in entries:
                    if fn.startswith(TMP_PREFIX):
                        kind = "temporary"
                    elif sub == "chunks" and fn not in keep[s]:
                        kind = "orphan"
                    else:
                        continue
                    if mtime is not None and mtime > cutoff:
                        continue  # young: possibly a put in flight
                    item = (name, s, sub, fn)
                    (report.stale_temporaries if kind == "temporary" else report.orphans).append(item)
                    if remove and _remove_if_older(loc, d + "/" + fn, cutoff):
                        report.removed.append(item)
            if prune_dirs and not keep[s]:
                # only for delete: a put in flight may be creating these
                loc.remove_dir_if_empty(loc.path("objects", name, "chunks"))
                loc.remove_dir_if_empty(loc.path("objects", name, "manifests"))
                loc.remove_dir_if_empty(loc.path("objects", name))


@dataclass
class GcReport:
    """What :meth:`ObjectStore.gc` found (``(name, location, "chunks"|"manifests", file)``) and removed."""

    orphans: list = field(default_factory=list)
    stale_temporaries: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (name, reason)

    def __str__(self):
        lines = [f"{len(self.orphans)} orphan chunk(s), {len(self.stale_temporaries)} stale "
                 f"temporary file(s); removed {len(self.removed)}"]
        lines += [f"  skipped {n}: {why}" for n, why in self.skipped]
        return "\n".join(lines)


def _remove_if_older(loc, path, cutoff):
    """Remove ``path`` unless it was modified after ``cutoff``; True if removed.

    Locally the file is first renamed aside and its age checked on the renamed
    file, so a put that rewrites the same chunk just before cannot lose it: a
    fresh file is linked back. Object stores have no rename: there a rewrite
    between the age check and the delete is lost (a window of one request;
    keep ``grace`` well above the longest put).
    """
    if not loc.local:
        loc.remove(path)
        return True
    import os

    aside = os.path.join(os.path.dirname(path), f"{TMP_PREFIX}gc-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    st = os.lstat(aside)
    if st.st_mtime > cutoff:
        try:
            os.link(aside, path)  # a put rewrote it: put it back (unless replaced again)
        except FileExistsError:
            pass
        finally:
            os.unlink(aside)
        return False
    loc.remove(aside)
    return True


def _reopen(cls, locations, k, r, chunk_size, storage_options, backend, create):
    return cls(locations, k, r, chunk_size=chunk_size, storage_options=storage_options,
               backend=backend, create=create)
