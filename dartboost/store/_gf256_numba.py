"""The numba kernel of :func:`dartboost.store._gf256.gf_matmul` (imported lazily).

``out[j] = XOR_i M[j, i] * words[i]`` over GF(2^8), eight bytes per uint64 word;
``bits[j, i, b]`` is bit ``b`` of ``M[j, i]``. See ``_gf256`` for the method.

The kernel is serial and releases the GIL; :func:`matmul_words` splits the
words over a few Python threads. This compiles several times faster than
``parallel=True`` (which matters on a fresh machine, where the first call
compiles) and runs as fast on this workload.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_BLOCK = 256  # words per block: the 8 doublings of one input row (16 KiB) stay in L1


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _kernel(bits, words, out, start, stop):  # pragma: no cover - compiled
    m, n = bits.shape[0], bits.shape[1]
    lo7 = np.uint64(0x7F7F7F7F7F7F7F7F)
    hib = np.uint64(0x8080808080808080)
    redm = np.uint64(0x1D1D1D1D1D1D1D1D)
    one = np.uint64(1)
    seven = np.uint64(7)
    dbl = np.empty((8, _BLOCK), dtype=np.uint64)
    for bstart in range(start, stop, _BLOCK):
        nwb = min(_BLOCK, stop - bstart)
        for i in range(n):
            # dbl[b] = 2^b * row i, eight bytes at a time (xtime in SWAR form);
            # one input row at a time, so the doublings stay in L1
            src = words[i, bstart:bstart + nwb]
            d0 = dbl[0]
            for w in range(nwb):
                d0[w] = src[w]
            for b in range(1, 8):
                prev = dbl[b - 1]
                cur = dbl[b]
                for w in range(nwb):
                    p = prev[w]
                    hi = p & hib
                    # (hi << 1) - (hi >> 7) is 0xff in every byte whose top bit
                    # was set: the reduction mask, without a (slow) 64-bit multiply
                    cur[w] = ((p & lo7) << one) ^ (((hi << one) - (hi >> seven)) & redm)
            for j in range(m):
                acc = out[j, bstart:bstart + nwb]
                if i == 0:
                    for w in range(nwb):
                        acc[w] = 0
                for b in range(8):
                    # the branch is per (j, i, b), outside the vectorised loop
                    if bits[j, i, b]:
                        s = dbl[b]
                        for w in range(nwb):
                            acc[w] ^= s[w]


def matmul_words(bits, words, out, n_threads=None):
    """Run the kernel over ``words`` (n, W) into ``out`` (m, W), multi-threaded."""
    nw = words.shape[1]
    if bits.shape[1] == 0:  # an empty sum: the kernel never touches out
        out[...] = 0
        return out
    if n_threads is None:
        n_threads = min(os.cpu_count() or 1, 8)
    n_tasks = max(1, min(n_threads, nw // (16 * _BLOCK)))
    if n_tasks == 1:
        _kernel(bits, words, out, 0, nw)
        return out
    step = -(-nw // n_tasks)
    step = -(-step // _BLOCK) * _BLOCK
    with ThreadPoolExecutor(n_tasks) as ex:
        list(ex.map(lambda s: _kernel(bits, words, out, s, min(s + step, nw)),
                    range(0, nw, step)))
    return out
