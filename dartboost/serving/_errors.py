"""Exceptions of the serving layer, in one module the pool and its backends share.

The backends raise :class:`WorkerLost` and the pool raises the others; keeping
them here (not in ``_pool``) lets backends import them without importing the
pool, which imports the backends.
"""

__all__ = ["QueryError", "QueryTimeout", "PoolClosedError", "PoolBrokenError",
           "WorkerLost", "ModelError"]


class QueryError(RuntimeError):
    """A query could not be answered (explicitly, never silently)."""


class QueryTimeout(QueryError, TimeoutError):
    """A query was not answered within the pool's ``request_timeout``."""


class PoolClosedError(QueryError):
    """The pool was closed before the query was answered."""


class PoolBrokenError(QueryError):
    """The pool's dispatcher hit an internal error it could not contain."""


class ModelError(QueryError):
    """The model failed on this request's rows (an error, or non-finite outputs)."""


class WorkerLost(QueryError):
    """A worker died or hung while running a task (internal marker)."""
