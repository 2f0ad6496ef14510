"""The ISA-L kernel of :func:`dartboost.store._gf256.gf_matmul` (loaded lazily).

Intel's ISA-L (``ec_init_tables`` + ``ec_encode_data``) multiplies a GF(2^8)
coefficient matrix by byte vectors with the widest instructions the CPU has
(GFNI, AVX-512, AVX2, SSE, chosen at run time). Its field is ours
(polynomial 0x11d) and it takes any coefficient matrix, so it computes the very
same bytes as the numba and NumPy kernels: the store's Cauchy code stays as it
is, only faster.

Why ctypes and not a binding package: no maintained PyPI package exposes
ISA-L's erasure-code functions as such (``isal`` binds only its compression).
The library itself is found as the system's ``libisal.so.2`` (Debian/Ubuntu
``libisal2``) or as the copy shipped inside the ``pyeclib`` wheel
(OpenStack's erasure-code binding, which bundles ISA-L). A loaded library must
pass a self-check against the reference arithmetic before it is used, so a
mismatched library is never trusted; without one the store falls back to numba.

The two functions only read and write the buffers they are given, release the
GIL (ctypes), and take pointer lists, so the inputs need not be one array:
decoding passes the surviving shards where they lie, without stacking them.
"""
import ctypes
import glob
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# one call handles at most this many bytes per row (ISA-L's length is a C int)
_MAX_CALL = 1 << 30
# rows shorter than this per thread are not split over threads
_MIN_PER_THREAD = 4 << 20

_LIB = None
_LIB_PATH = None
_LOAD_ERROR = None


def _candidates():
    yield "libisal.so.2"  # the system library, found by the dynamic loader
    try:
        spec = importlib.util.find_spec("pyeclib")
    except (ImportError, ValueError):  # a broken or blocked installation
        spec = None
    if spec is not None and spec.submodule_search_locations:
        pkg = list(spec.submodule_search_locations)[0]
        # auditwheel puts the vendored libraries next to the package
        yield from sorted(glob.glob(os.path.join(pkg, os.pardir, "pyeclib.libs", "libisal*.so*")))
        yield from sorted(glob.glob(os.path.join(pkg, os.pardir, "pyeclib", ".dylibs",
                                                 "libisal*.dylib")))


def _bind(lib):
    lib.ec_init_tables.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.ec_init_tables.restype = None
    lib.ec_encode_data.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_void_p]
    lib.ec_encode_data.restype = None
    return lib


def _self_check(lib):
    """Whether ``lib`` multiplies exactly like the reference, on odd sizes too."""
    from ._gf256 import gf_matmul_reference

    rng = np.random.default_rng(12345)
    for m, n, L in ((1, 1, 8), (3, 5, 1000), (7, 11, 4160), (2, 4, 64)):
        M = rng.integers(0, 256, (m, n), dtype=np.uint8)
        rows = rng.integers(0, 256, (n, L), dtype=np.uint8)
        out = np.empty((m, L), dtype=np.uint8)
        _run(lib, _tables(lib, M), list(rows), list(out), 1)
        if not np.array_equal(out, gf_matmul_reference(M, rows)):
            return False
    return True


def load():
    """The checked ISA-L library, or None (``load_error()`` says why)."""
    global _LIB, _LIB_PATH, _LOAD_ERROR
    if _LIB is not None or _LOAD_ERROR is not None:
        return _LIB
    reasons = []
    for path in _candidates():
        try:
            lib = _bind(ctypes.CDLL(path))
        except (OSError, AttributeError) as exc:
            reasons.append(f"{path}: {exc}")
            continue
        if _self_check(lib):
            _LIB, _LIB_PATH = lib, os.path.realpath(path) if os.sep in path else path
            return lib
        reasons.append(f"{path}: failed the self-check against the reference arithmetic")
    _LOAD_ERROR = "; ".join(reasons) or "no ISA-L library found"
    return None


def library_path():
    """The ISA-L library in use (None if none)."""
    load()
    return _LIB_PATH


def load_error():
    """Why :func:`load` found no usable library (None if it did or was not tried)."""
    return _LOAD_ERROR


def _tables(lib, M):
    m, n = M.shape
    M = np.ascontiguousarray(M, dtype=np.uint8)
    tables = np.zeros(32 * m * n, dtype=np.uint8)
    lib.ec_init_tables(n, m, M.ctypes.data, tables.ctypes.data)
    return tables


def _run(lib, tables, inputs, outputs, n_threads):
    n, m = len(inputs), len(outputs)
    L = inputs[0].shape[0]
    in_ptrs = [a.ctypes.data for a in inputs]
    out_ptrs = [a.ctypes.data for a in outputs]

    def span(start, stop):
        for s in range(start, stop, _MAX_CALL):
            e = min(stop, s + _MAX_CALL)
            src = (ctypes.c_void_p * n)(*[p + s for p in in_ptrs])
            dst = (ctypes.c_void_p * m)(*[p + s for p in out_ptrs])
            lib.ec_encode_data(e - s, n, m, tables.ctypes.data, src, dst)

    n_tasks = max(1, min(n_threads, L // _MIN_PER_THREAD))
    if n_tasks == 1:
        span(0, L)
        return
    step = -(-L // n_tasks)
    step = -(-step // 64) * 64
    with ThreadPoolExecutor(n_tasks) as ex:
        list(ex.map(lambda s: span(s, min(L, s + step)), range(0, L, step)))


def matmul(M, inputs, outputs, n_threads=None):
    """``outputs[j] = XOR_i M[j, i] * inputs[i]`` with ISA-L.

    Parameters
    ----------
    M : ndarray of uint8, shape (m, n)
    inputs : sequence of n C-contiguous 1-D uint8 arrays of one length
    outputs : sequence of m writable C-contiguous 1-D uint8 arrays of that length
    n_threads : int or None
        Threads to split long rows over; None: one. One core already runs
        ISA-L at about memory speed (``docs/store.md``: a second thread was
        sometimes faster, sometimes slower), so the default leaves the other
        cores to the caller.
    """
    lib = load()
    if lib is None:
        raise RuntimeError(f"ISA-L is not available: {_LOAD_ERROR}")
    if n_threads is None:
        n_threads = 1
    _run(lib, _tables(lib, M), inputs, outputs, n_threads)
    return outputs
