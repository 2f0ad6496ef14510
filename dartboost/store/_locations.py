"""One storage location (an fsspec URL) holding one shard of every object.

Only the few operations the store needs are exposed, and every path is built
here from validated parts, so a stored name or a manifest entry can never point
outside the location's root.
"""
import asyncio
import errno
import os
import re
import shutil
import stat
import time
import uuid

import fsspec
import fsspec.asyn

# Matched with fullmatch: "$" would also match before a trailing newline
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_CHUNK_RE = re.compile(r"[0-9a-f]{32}")
TMP_PREFIX = ".tmp-"


class StoreError(Exception):
    """Base class of the store's errors."""


class InvalidNameError(StoreError, ValueError):
    """Raised for an object name that is empty, malformed or escapes the store root."""


class IrregularFileError(OSError):
    """A stored item is not a regular file (a symlink, a directory, a device...)."""


def check_name(name):
    """Validate an object name and return it.

    Names are one path component of letters, digits, ``.``, ``_`` and ``-``
    (not starting with a dot), so they can never leave the store root.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid object name {name!r}: use 1-200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit; paths (e.g. '/' or '..') would lead outside "
            "the store root and are rejected")
    return name


def check_chunk_id(cid):
    if not isinstance(cid, str) or not _CHUNK_RE.fullmatch(cid):
        raise StoreError(f"invalid chunk id {cid!r} in manifest")
    return cid


class Location:
    """An fsspec filesystem plus a root path.

    Parameters
    ----------
    url : str
        Any fsspec URL (``/data/shard0``, ``file://...``, ``s3://bucket/prefix``, ...).
    storage_options : dict, optional
        Passed to ``fsspec.core.url_to_fs``.

    Notes
    -----
    Durability and atomicity (see ``docs/contracts.md``):

    * local: every file is written to a temporary name, ``fsync``-ed, renamed
      (``write``) or hard-linked (``create``, exclusive) into place, and the
      directory is ``fsync``-ed afterwards, as are directories it created;
    * S3 (s3fs): a PUT is atomic and durable when it returns; ``create`` is a
      conditional PUT (``If-None-Match: *``), exclusive on the server;
    * other fsspec backends: ``create`` checks then writes, which is exclusive
      only against writers that do not race (``exclusive_create`` is False).
    """

    def __init__(self, url, storage_options=None):
        if not isinstance(url, str) or not url:
            raise ValueError(f"location must be a non-empty URL string, got {url!r}")
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/") or "/"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols or "local" in protocols
        self.s3 = "s3" in protocols or "s3a" in protocols
        self.exclusive_create = self.local or self.s3
        if self.local:
            self.root = os.path.abspath(self.root)
        self._checked_dirs = set()

    def __repr__(self):
        return f"Location({self.url!r})"

    # --- paths -----------------------------------------------------------
    def path(self, *parts):
        """Join validated parts under the root; refuses anything that escapes it."""
        for p in parts:
            if not isinstance(p, str) or not p or "/" in p or "\\" in p or p in (".", "..") \
                    or "\x00" in p:
                raise InvalidNameError(f"path component {p!r} would leave the store root")
        full = "/".join((self.root.rstrip("/"),) + parts)
        if self.local and parts:
            # Components are plain names, so only a symlinked directory can lead
            # outside. Directories are resolved once and remembered. The file
            # itself is opened with O_NOFOLLOW (see read), so a symlinked file
            # is an irregular item, not an escape.
            parent = os.path.dirname(full)
            if parent not in self._checked_dirs:
                real_root = os.path.realpath(self.root)
                real = os.path.realpath(parent)
                if real != real_root and not real.startswith(real_root + os.sep):
                    raise InvalidNameError(f"{full} resolves outside the store root {self.root}")
                if os.path.isdir(parent):  # not yet created dirs are checked next time
                    self._checked_dirs.add(parent)
        return full

    # --- operations ------------------------------------------------------
    def read(self, path, limit=None):
        """Bytes of a regular file; raises FileNotFoundError when absent.

        Parameters
        ----------
        limit : int, optional
            Read at most ``limit + 1`` bytes (a longer file is corrupt anyway;
            this bounds what a damaged or hostile file can make us allocate).

        Raises
        ------
        IrregularFileError
            For a symlink, a directory or any other non-regular file.
        """
        if self.local:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR):
                    raise IrregularFileError(exc.errno, f"not a regular file: {path}") from None
                raise
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise IrregularFileError(errno.EINVAL, f"not a regular file: {path}")
                with os.fdopen(fd, "rb", closefd=False) as f:
                    return f.read() if limit is None else f.read(limit + 1)
            finally:
                os.close(fd)
        if limit is not None:
            return self.fs.cat_file(path, start=0, end=limit + 1)
        return self.fs.cat_file(path)

    def read_many(self, paths, limit=None):
        """Read several files; returns {path: bytes or exception}."""
        if not paths:
            return {}
        if self.local:
            out = {}
            for p in paths:
                try:
                    out[p] = self.read(p, limit)
                except OSError as exc:
                    out[p] = exc
            return out
        kw = {} if limit is None else {"start": 0, "end": limit + 1}
        if getattr(self.fs, "async_impl", False):
            # one concurrent GET per file (fs.cat would first HEAD/expand each path)
            async def gather():
                return await asyncio.gather(*[self.fs._cat_file(p, **kw) for p in paths],
                                            return_exceptions=True)

            return dict(zip(paths, fsspec.asyn.sync(self.fs.loop, gather)))
        out = {}
        for p in paths:
            try:
                out[p] = self.fs.cat_file(p, **kw)
            except Exception as exc:  # noqa: BLE001 - reported per file, like fs.cat
                out[p] = exc
        return out

    def write_many(self, items):
        """Write several files atomically (each one) and durably; ``items``: {path: bytes}."""
        if not items:
            return
        if not self.local:
            if getattr(self.fs, "async_impl", False):
                self.fs.pipe(dict(items))  # concurrent PUTs, each atomic
            else:
                for p, data in items.items():
                    self.fs.pipe_file(p, data)
            return
        # write + fsync every temporary, rename them all, then one fsync per
        # directory: each file is durable under its final name before the
        # caller goes on to commit a manifest that refers to it
        dirs = set()
        for p, data in items.items():
            d = os.path.dirname(p)
            if d not in dirs:
                self._makedirs(d)
                dirs.add(d)
            tmp = self._durable_tmp(d, data)
            try:
                os.replace(tmp, p)
            except IsADirectoryError:  # a directory where the file belongs
                self.remove(p)
                os.replace(tmp, p)
        for d in dirs:
            fsync_dir(d)

    def write(self, path, data):
        """Write a whole file atomically (a reader sees the old file or the new one)."""
        self.write_many({path: data})

    def create(self, path, data):
        """Write a file only if it does not exist yet; returns False if it did.

        This is the commit point of a version, so it must be atomic *and*
        exclusive: locally a complete, fsync-ed temporary file is hard-linked
        into place (``link`` fails if the name exists) and the directory is
        fsync-ed; on S3 a conditional PUT (``If-None-Match: *``) is used.
        """
        if self.local:
            d = os.path.dirname(path)
            self._makedirs(d)
            tmp = self._durable_tmp(d, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            fsync_dir(d)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # botocore's PreconditionFailed surfaces as OSError
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise

    def _durable_tmp(self, d, data):
        tmp = os.path.join(d, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return tmp

    def _makedirs(self, d):
        """``makedirs`` that fsyncs the parent of every directory it creates."""
        if os.path.isdir(d):
            return
        parent = os.path.dirname(d)
        if parent != d:
            self._makedirs(parent)
        try:
            os.mkdir(d)
        except FileExistsError:
            return
        fsync_dir(parent)

    def exists(self, path):
        if self.local:
            return os.path.lexists(path)
        self.fs.invalidate_cache(path)  # another writer may have changed it
        return self.fs.exists(path)

    def listdir(self, path):
        """Names (not paths) directly under ``path``, without temporaries; empty if absent."""
        return sorted(n for n, _, _ in self.scan(path) if not n.startswith(TMP_PREFIX))

    def scan(self, path):
        """Every entry directly under ``path``, temporaries included.

        Returns
        -------
        list of (name, mtime, regular)
            ``mtime`` in seconds since the epoch (None if the backend does
            not tell); ``regular`` is False for symlinks and directories.
        """
        if self.local:
            try:
                with os.scandir(path) as it:
                    out = []
                    for e in it:
                        try:
                            st = e.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # removed meanwhile
                        out.append((e.name, st.st_mtime, stat.S_ISREG(st.st_mode)))
                    return sorted(out)
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            entries = self.fs.ls(path, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            name = e["name"].rstrip("/").rsplit("/", 1)[-1]
            mtime = e.get("LastModified") or e.get("mtime") or e.get("created")
            if hasattr(mtime, "timestamp"):
                mtime = mtime.timestamp()
            out.append((name, float(mtime) if mtime is not None else None,
                        e.get("type") == "file"))
        return sorted(out, key=lambda t: t[0])

    def remove(self, path):
        """Delete a file (or an irregular item in its place); absent files are fine."""
        try:
            if self.local:
                try:
                    os.unlink(path)  # a symlink goes, its target stays
                except IsADirectoryError:
                    shutil.rmtree(path)  # a directory where a file belongs
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def remove_dir_if_empty(self, path):
        if self.local:
            try:
                os.rmdir(path)
            except OSError:
                pass


def fsync_dir(d):
    """fsync a directory, so that the names created or renamed in it survive a power loss."""
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # platforms that cannot open directories (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def now():
    """Wall-clock time, as the backends' modification times are (injectable in tests)."""
    return time.time()
