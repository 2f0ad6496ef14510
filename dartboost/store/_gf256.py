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
# Below this many input bytes the NumPy path is used even with numba installed:
# loading the compiled kernel and starting its thread pool costs about a second
# once per process, which small objects (tests, CLI calls) should not pay.
NUMBA_MIN_BYTES = 1 << 20
_NUMBA_KERNEL = None


def _numba_kernel():
    """Load the compiled kernel (numba caches the compilation on disk) on first use."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is None:
        from ._gf256_numba import matmul_words

        _NUMBA_KERNEL = matmul_words
    return _NUMBA_KERNEL


def available_backends():
    """Names of the bulk-kernel backends usable in this interpreter."""
    return ["numba", "numpy"] if HAVE_NUMBA else ["numpy"]


def gf_matmul(M, rows, backend=None, out=None):
    """Multiply an (m, n) GF(2^8) matrix by n equal-length byte rows.

    Parameters
    ----------
    M : array-like of uint8, shape (m, n)
        Coefficients.
    rows : ndarray of uint8, shape (n, L)
        Input bytes; ``L`` must be a multiple of 8 and the array C-contiguous.
    backend : {"numba", "numpy"} or None
        Kernel to use; None picks numba when available and the input is at
        least ``NUMBA_MIN_BYTES``, NumPy otherwise.
    out : ndarray of uint8, shape (m, L), optional
        Output buffer.

    Returns
    -------
    out : ndarray of uint8, shape (m, L)
        ``out[j] = XOR_i M[j, i] * rows[i]`` bytewise in GF(2^8).
    """
    M = np.asarray(M, dtype=np.uint8)
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    m, n = M.shape
    if rows.shape[0] != n:
        raise ValueError(f"matrix has {n} columns but {rows.shape[0]} rows were given")
    L = rows.shape[1]
    if L % 8:
        raise ValueError("row length must be a multiple of 8 bytes")
    if out is None:
        out = np.empty((m, L), dtype=np.uint8)
    if m == 0 or L == 0:
        return out
    words = rows.view(np.uint64)
    out_words = out.view(np.uint64)
    bits = _bits(M)
    if backend is None:
        backend = "numba" if HAVE_NUMBA and rows.nbytes >= NUMBA_MIN_BYTES else "numpy"
    if backend == "numba":
        if not HAVE_NUMBA:
            raise ValueError("backend 'numba' requested but numba is not installed")
        _numba_kernel()(bits, words, out_words)
    elif backend == "numpy":
        _matmul_numpy(bits, words, out_words)
    else:
        raise ValueError(f"unknown backend {backend!r}; expected 'numba' or 'numpy'")
    return out


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
