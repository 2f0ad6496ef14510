"""Coded serving: resilient prediction serving with parity models.

:class:`CodedPool` runs a model on worker processes (local loky processes or a
Dask cluster) behind one shared queue, adds parity work per group of k query
batches (ParM) and answers a late or lost batch by decoding it from the others.
Baselines (no redundancy, equal resources, cheap backup, replication) run in
the same harness. :func:`make_server` / ``dartboost serve`` expose a pool over
HTTP (uvicorn + Starlette, Open Inference Protocol v2; imported only when a
server is made). See ``docs/serving.md``.
"""

from ._baselines import make_backup_model, pool_for_mode
from ._faults import FaultSpec, kill_process
from ._errors import ModelError, PoolBrokenError, PoolClosedError, QueryError, QueryTimeout
from ._http import PredictionServer, make_app, make_server
from ._pool import MODES, CodedPool, ServeResult

__all__ = [
    "CodedPool",
    "ServeResult",
    "QueryError",
    "QueryTimeout",
    "PoolClosedError",
    "PoolBrokenError",
    "ModelError",
    "MODES",
    "FaultSpec",
    "kill_process",
    "make_backup_model",
    "pool_for_mode",
    "PredictionServer",
    "make_server",
    "make_app",
]
