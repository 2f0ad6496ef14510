"""Erasure-coded sharded model store and coded training checkpoints.

Two layers. An :class:`ObjectStore` keeps byte strings: it writes each version
as k data + r parity shards (Reed-Solomon over GF(2^8)) to k + r fsspec
locations, checksums every chunk, commits each version atomically through a
replicated manifest, and rebuilds any r missing or corrupt shards bit-exactly.
A :class:`ModelStore` is the thin layer on top that stores dartboost models
(through the core's model state, :mod:`dartboost.model_io`) as such objects.
The store depends on the core, never the reverse. :class:`CheckpointCallback` checkpoints
a dartboost fit into a store, updating parity incrementally, and
:func:`resume_fit` continues a fit from the latest checkpoint.

See ``docs/store.md`` for a guide.
"""
# The model file container is the core's (dartboost._model_file); re-exported
# here because a store holds such files.
from .._model_file import FormatError, dumps, load, loads, loads_state, save
from ._locations import InvalidNameError, StoreError
from ._rs import ReedSolomon
from ._objects import (ConcurrentWriteError, ConfigMismatchError, GcReport, ManifestError,
                       ObjectNotFoundError, ObjectStore, UnrecoverableError, VerifyReport)
from ._store import ModelStore

__all__ = [
    "ModelStore", "ObjectStore", "ReedSolomon", "VerifyReport", "GcReport",
    "StoreError", "ConfigMismatchError", "ManifestError", "UnrecoverableError",
    "ObjectNotFoundError", "ConcurrentWriteError", "InvalidNameError", "FormatError",
    "dumps", "loads", "loads_state", "save", "load",
]

from ._checkpoint import CheckpointCallback, load_checkpoint, resume_fit  # noqa: E402

__all__ += ["CheckpointCallback", "load_checkpoint", "resume_fit"]
