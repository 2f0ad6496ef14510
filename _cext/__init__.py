"""Compiled hot loops of dartboost (Cython, OpenMP, nogil).

Only kernels live here; everything that decides *what* to compute lives in the
pure-Python modules of :mod:`dartboost`.

OpenMP wait policy
------------------
The grower runs many short parallel regions with Python in between. With
libgomp's default spin-waiting, idle worker threads burn CPU between regions,
and on a machine busy with other processes (joblib workers, serving pools, CI)
that time is stolen from the thread doing the work: measured 1.6-3x slower
fits (docs/guide.md, "Threads"). libgomp reads ``OMP_WAIT_POLICY`` once, when
it is loaded, so the passive policy is set only for the moment the kernels'
runtime loads and the environment is restored right after: ``import
dartboost`` leaves ``os.environ`` as it found it, child processes and
libraries loaded later never see the variable, and a wheel's vendored libgomp
(auditwheel/delocate give it a private name) is the only runtime affected. A
policy the user set (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``) is kept; if
the runtime was already loaded by another library, its policy stands.
"""
import os as _os


def _load_kernels_with_passive_wait():
    user_set = "OMP_WAIT_POLICY" in _os.environ or "GOMP_SPINCOUNT" in _os.environ
    if not user_set:
        _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        from . import _openmp  # noqa: F401  (loads the OpenMP runtime)
    finally:
        if not user_set:
            del _os.environ["OMP_WAIT_POLICY"]


_load_kernels_with_passive_wait()
