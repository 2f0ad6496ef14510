"""One storage location (an fsspec URL) holding one shard of every object.

Only the few operations the store needs are exposed, and every path is built
here from validated parts, so a stored name or a manifest entry can never point
outside the location's root.
"""
import asyncio
import os
import re
import uuid

import fsspec
import fsspec.asyn

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_CHUNK_RE = re.compile(r"^[0-9a-f]{32}$")


class StoreError(Exception):
    """Base class of the store's errors."""


class InvalidNameError(StoreError, ValueError):
    """Raised for an object name that is empty, malformed or escapes the store root."""


def check_name(name):
    """Validate an object name and return it.

    Names are one path component of letters, digits, ``.``, ``_`` and ``-``
    (not starting with a dot), so they can never leave the store root.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise InvalidNameError(
            f"invalid object name {name!r}: use 1-200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit; paths (e.g. '/' or '..') would lead outside "
            "the store root and are rejected")
    return name


def check_chunk_id(cid):
    if not isinstance(cid, str) or not _CHUNK_RE.match(cid):
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
    """

    def __init__(self, url, storage_options=None):
        if not isinstance(url, str) or not url:
            raise ValueError(f"location must be a non-empty URL string, got {url!r}")
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/") or "/"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols or "local" in protocols
        if self.local:
            self.root = os.path.abspath(self.root)
        self._checked_dirs = set()

    def __repr__(self):
        return f"Location({self.url!r})"

    # --- paths -----------------------------------------------------------
    def path(self, *parts):
        """Join validated parts under the root; refuses anything that escapes it."""
        for p in parts:
            if not isinstance(p, str) or not p or "/" in p or "\\" in p or p in (".", ".."):
                raise InvalidNameError(f"path component {p!r} would leave the store root")
        full = "/".join((self.root.rstrip("/"),) + parts)
        if self.local and parts:
            # Components are plain names, so only a symlink can lead outside.
            # Directories are resolved once and remembered; the file itself
            # must not be a symlink (one lstat, not a full resolution per chunk).
            parent = os.path.dirname(full)
            if parent not in self._checked_dirs:
                real_root = os.path.realpath(self.root)
                real = os.path.realpath(parent)
                if real != real_root and not real.startswith(real_root + os.sep):
                    raise InvalidNameError(f"{full} resolves outside the store root {self.root}")
                if os.path.isdir(parent):  # not yet created dirs are checked next time
                    self._checked_dirs.add(parent)
            if os.path.islink(full):
                raise InvalidNameError(f"{full} is a symlink; it could lead outside the store root")
        return full

    # --- operations ------------------------------------------------------
    def read(self, path):
        """Bytes of a file; raises FileNotFoundError when absent."""
        if self.local:
            with open(path, "rb") as f:
                return f.read()
        return self.fs.cat_file(path)

    def read_many(self, paths):
        """Read several files; returns {path: bytes or exception}."""
        if not paths:
            return {}
        if self.local:
            out = {}
            for p in paths:
                try:
                    out[p] = self.read(p)
                except OSError as exc:
                    out[p] = exc
            return out
        if getattr(self.fs, "async_impl", False):
            # one concurrent GET per file (fs.cat would first HEAD/expand each path)
            async def gather():
                return await asyncio.gather(*[self.fs._cat_file(p) for p in paths],
                                            return_exceptions=True)

            return dict(zip(paths, fsspec.asyn.sync(self.fs.loop, gather)))
        out = {}
        for p in paths:
            try:
                out[p] = self.fs.cat_file(p)
            except Exception as exc:  # noqa: BLE001 - reported per file, like fs.cat
                out[p] = exc
        return out

    def write_many(self, items):
        """Write several files atomically (each one); ``items``: {path: bytes}."""
        if not items:
            return
        if not self.local and getattr(self.fs, "async_impl", False):
            self.fs.pipe(dict(items))  # concurrent PUTs, each atomic
            return
        for p, data in items.items():
            self.write(p, data)

    def write(self, path, data):
        """Write a whole file atomically (a reader sees the old file or the new one)."""
        if self.local:
            d = os.path.dirname(path)
            os.makedirs(d, exist_ok=True)
            tmp = os.path.join(d, f".tmp-{uuid.uuid4().hex}")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            # an object-store PUT is atomic by itself
            self.fs.pipe_file(path, data)

    def create(self, path, data):
        """Write a file only if it does not exist yet; returns False if it did.

        This is the commit point of a version, so it must be atomic *and*
        exclusive: locally a complete temporary file is hard-linked into place
        (``link`` fails if the name exists); on S3 a conditional PUT
        (``If-None-Match: *``) is used.
        """
        if self.local:
            d = os.path.dirname(path)
            os.makedirs(d, exist_ok=True)
            tmp = os.path.join(d, f".tmp-{uuid.uuid4().hex}")
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            self.fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # botocore's PreconditionFailed surfaces as OSError
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise

    def exists(self, path):
        if self.local:
            return os.path.exists(path)
        self.fs.invalidate_cache(path)  # another writer may have changed it
        return self.fs.exists(path)

    def listdir(self, path):
        """Names (not paths) directly under ``path``; empty if it does not exist."""
        if self.local:
            try:
                return sorted(n for n in os.listdir(path) if not n.startswith(".tmp-"))
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            entries = self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def remove(self, path):
        """Delete a file; absent files are fine."""
        try:
            if self.local:
                os.unlink(path)
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
