"""Arithmetic in GF(2^8) and the bulk kernel the Reed-Solomon codec runs on.

The field is GF(2)[x] / (x^8 + x^4 + x^3 + x^2 + 1) (0x11d, the polynomial used
by most storage Reed-Solomon codes). Small matrices (k x k, r x k) are handled
with log/antilog tables in plain Python/NumPy; the bulk work, multiplying a small
coefficient matrix by long byte vectors, is done by :func:`gf_matmul`.

Why SWAR instead of table lookups: a byte-wise table lookup costs one
dependent load per coefficient per byte. Treating eight bytes as one uint64 lets
us double all eight field elements at once with shifts and masks
(``xtime``), and a product ``c * d`` is the XOR of the doublings
``d, 2d, 4d, ..., 128d`` selected by the bits of ``c``. The kernel computes the
eight doublings of a block of each input row once, then XORs the selected ones
into each output row; the selection is a branch per (output, input, bit), outside
the word loop, so numba vectorises the word loops (SIMD) and runs blocks in
parallel. A NumPy fallback with the same maths is used when numba is unavailable.
"""
import importlib.util

import numpy as np

POLY = 0x11D

# exp table of length 512 so that EXP[LOG[a] + LOG[b]] needs no modulo.
EXP = np.zeros(512, dtype=np.uint8)
LOG = np.zeros(256, dtype=np.int64)
_x = 1
for _i in range(255):
    EXP[_i] = _x
    LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= POLY
for _i in range(255, 512):
    EXP[_i] = EXP[_i - 255]
del _x, _i


def gf_mul(a, b):
    """Product of two field elements (Python ints)."""
    if a == 0 or b == 0:
        return 0
    return int(EXP[LOG[a] + LOG[b]])


def gf_inv(a):
    """Multiplicative inverse of a non-zero field element."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return int(EXP[255 - LOG[a]])


def gf_mat_mul_small(A, B):
    """Product of two small matrices over GF(2^8) (uint8 arrays)."""
    A = np.asarray(A, dtype=np.uint8)
    B = np.asarray(B, dtype=np.uint8)
    out = np.zeros((A.shape[0], B.shape[1]), dtype=np.uint8)
    for i in range(A.shape[0]):
        for j in range(B.shape[1]):
            acc = 0
            for t in range(A.shape[1]):
                acc ^= gf_mul(int(A[i, t]), int(B[t, j]))
            out[i, j] = acc
    return out


def gf_mat_inv(M):
    """Inverse of a square matrix over GF(2^8) by Gauss-Jordan elimination.

    Raises
    ------
    np.linalg.LinAlgError
        If the matrix is singular.
    """
    M = np.array(M, dtype=np.uint8)
    n = M.shape[0]
    aug = [[int(v) for v in row] + [1 if i == j else 0 for j in range(n)]
           for i, row in enumerate(M)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if aug[r][col]), None)
        if pivot is None:
            raise np.linalg.LinAlgError("matrix is singular over GF(2^8)")
        aug[col], aug[pivot] = aug[pivot], aug[col]
        inv = gf_inv(aug[col][col])
        aug[col] = [gf_mul(v, inv) for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col]:
                f = aug[r][col]
                aug[r] = [v ^ gf_mul(f, p) for v, p in zip(aug[r], aug[col])]
    return np.array([row[n:] for row in aug], dtype=np.uint8)


def cauchy_matrix(r, k):
    """The r x k Cauchy matrix ``1 / (x_j + y_i)`` with ``x_j = j``, ``y_i = r + i``.

    Every square submatrix of a Cauchy matrix is invertible, so the systematic
    generator ``[I_k; C]`` is MDS: any k of the k + r rows form an invertible
    matrix, i.e. any k shards determine the data.
    """
    if k + r > 256:
        raise ValueError("k + r must be at most 256 for GF(2^8)")
    C = np.zeros((r, k), dtype=np.uint8)
    for j in range(r):
        for i in range(k):
            C[j, i] = gf_inv(j ^ (r + i))
    return C


def _bits(M):
    """Bit b of each coefficient, shape (m, n, 8) uint8."""
    M = np.asarray(M, dtype=np.uint8)
    return ((M[..., None] >> np.arange(8, dtype=np.uint8)) & 1).astype(np.uint8)


_LO7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_LSB = np.uint64(0x0101010101010101)
_RED = np.uint64(POLY & 0xFF)


def _matmul_numpy(bits, words, out):
    # Same algorithm as the numba kernel, one array pass per operation.
    m, n = bits.shape[:2]
    out[...] = 0
    tmp = np.empty_like(words[0]) if n else None
    for i in range(n):
        p = words[i].copy()
        for b in range(8):
            for j in range(m):
                if bits[j, i, b]:
                    np.bitwise_xor(out[j], p, out=out[j])
            if b < 7:
                # xtime on 8 packed bytes: shift each byte left, reduce the
                # bytes whose top bit fell out by the low byte of the polynomial.
                np.right_shift(p, np.uint64(7), out=tmp)
                np.bitwise_and(tmp, _LSB, out=tmp)
                np.multiply(tmp, _RED, out=tmp)
                np.bitwise_and(p, _LO7, out=p)
                np.left_shift(p, np.uint64(1), out=p)
                np.bitwise_xor(p, tmp, out=p)


HAVE_NUMBA = importlib.util.find_spec("numba") is not None
# Below this many input bytes the NumPy path is used instead of numba (when
# ISA-L is missing): loading the compiled kernel and starting its thread pool
# costs about a second once per process, which small objects (tests, CLI calls)
# should not pay.
NUMBA_MIN_BYTES = 1 << 20
BACKENDS = ("isal", "numba", "numpy")
# Threads the compiled kernels split long rows over; None: each kernel's
# default (ISA-L one, numba the CPU count up to 8). Benchmarks set it.
MAX_THREADS = None
_NUMBA_KERNEL = None


def _numba_kernel():
    """Load the compiled kernel (numba caches the compilation on disk) on first use."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is None:
        from ._gf256_numba import matmul_words

        _NUMBA_KERNEL = matmul_words
    return _NUMBA_KERNEL


def have_isal():
    """Whether the ISA-L kernel is usable here (loads and self-checks it once)."""
    from . import _gf256_isal

    return _gf256_isal.load() is not None


def available_backends():
    """Names of the bulk-kernel backends usable in this interpreter, fastest first."""
    return [b for b in BACKENDS
            if b == "numpy" or (b == "numba" and HAVE_NUMBA) or (b == "isal" and have_isal())]


def default_backend(nbytes):
    """The kernel :func:`gf_matmul` uses for ``nbytes`` of input when none is named."""
    if have_isal():
        return "isal"  # fastest at every size, no start-up cost
    return "numba" if HAVE_NUMBA and nbytes >= NUMBA_MIN_BYTES else "numpy"


def _as_rows(a, name, length=None):
    """A 2-D array, or a list of equal-length C-contiguous 1-D uint8 arrays, as a list."""
    if isinstance(a, np.ndarray):
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D or a sequence of 1-D arrays, got shape {a.shape}")
        if a.dtype != np.uint8:
            raise ValueError(f"{name} must hold uint8, got {a.dtype}")
        return list(a)
    rows = [np.asarray(x) for x in a]
    for x in rows:
        if x.ndim != 1 or x.dtype != np.uint8:
            raise ValueError(f"each of {name} must be a 1-D uint8 array")
        if length is not None and x.shape[0] != length:
            raise ValueError(f"{name} have different lengths ({x.shape[0]} vs {length})")
        length = x.shape[0]
    return rows


def _stacked(arr, rows, L):
    """The rows as one (n, L) C-contiguous array: ``arr`` itself if it is one."""
    if isinstance(arr, np.ndarray) and arr.flags.c_contiguous:
        return arr
    out = np.empty((len(rows), L), dtype=np.uint8)
    for i, r in enumerate(rows):
        out[i] = r
    return out


def gf_matmul(M, rows, backend=None, out=None):
    """Multiply an (m, n) GF(2^8) matrix by n equal-length byte rows.

    Parameters
    ----------
    M : array-like of uint8, shape (m, n)
        Coefficients.
    rows : ndarray of uint8, shape (n, L), or a sequence of n 1-D uint8 arrays
        Input bytes; ``L`` must be a multiple of 8. A sequence is used where
        its arrays lie (no stacking copy) by the ISA-L kernel.
    backend : {"isal", "numba", "numpy"} or None
        Kernel to use; None picks :func:`default_backend`.
    out : ndarray of uint8, shape (m, L), or a sequence of m 1-D arrays, optional
        Output buffer(s), written in place.

    Returns
    -------
    out : ndarray of uint8, shape (m, L), or the ``out`` given
        ``out[j] = XOR_i M[j, i] * rows[i]`` bytewise in GF(2^8).
    """
    M = np.asarray(M, dtype=np.uint8)
    if M.ndim != 2:
        raise ValueError(f"coefficient matrix must be 2-D, got shape {M.shape}")
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
    in_rows = _as_rows(rows, "rows")
    m, n = M.shape
    if len(in_rows) != n:
        raise ValueError(f"matrix has {n} columns but {len(in_rows)} rows were given")
    L = in_rows[0].shape[0] if in_rows else (rows.shape[1] if isinstance(rows, np.ndarray) else 0)
    if L % 8:
        raise ValueError("row length must be a multiple of 8 bytes")
    in_rows = [np.ascontiguousarray(r) for r in in_rows]
    result = np.empty((m, L), dtype=np.uint8) if out is None else out
    out_rows = _as_rows(result, "out", L)
    if len(out_rows) != m:
        raise ValueError(f"out must have {m} rows, got {len(out_rows)}")
    if any(not r.flags.c_contiguous or not r.flags.writeable for r in out_rows):
        raise ValueError("out rows must be writable and C-contiguous")
    if m == 0 or L == 0:
        return result
    if n == 0:  # an empty sum
        for r in out_rows:
            r[...] = 0
        return result
    if backend is None:
        backend = default_backend(n * L)
    if backend == "isal":
        from . import _gf256_isal

        if not have_isal():
            raise ValueError(f"backend 'isal' requested but ISA-L is not usable: "
                             f"{_gf256_isal.load_error()}")
        _gf256_isal.matmul(M, in_rows, out_rows, n_threads=MAX_THREADS)
        return result
    if backend not in ("numba", "numpy"):
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "numba" and not HAVE_NUMBA:
        raise ValueError("backend 'numba' requested but numba is not installed")
    words = _stacked(rows, in_rows, L).view(np.uint64)
    dst = _stacked(result, out_rows, L)
    bits = _bits(M)
    if backend == "numba":
        _numba_kernel()(bits, words, dst.view(np.uint64), n_threads=MAX_THREADS)
    else:
        _matmul_numpy(bits, words, dst.view(np.uint64))
    if dst is not result:  # out was a list of separate arrays
        for i, r in enumerate(out_rows):
            r[...] = dst[i]
    return result


def gf_matmul_reference(M, rows):
    """Byte-by-byte reference product using log/antilog tables (for tests)."""
    M = np.asarray(M, dtype=np.uint8)
    rows = np.asarray(rows, dtype=np.uint8)
    out = np.zeros((M.shape[0], rows.shape[1]), dtype=np.uint8)
    logr = LOG[rows]
    for j in range(M.shape[0]):
        for i in range(M.shape[1]):
            c = int(M[j, i])
            if c == 0:
                continue
            prod = EXP[logr[i] + LOG[c]]
            prod[rows[i] == 0] = 0
            out[j] ^= prod
    return out
