"""Systematic Reed-Solomon erasure code over GF(2^8).

A stripe of ``k`` equal-length data shards is extended with ``r`` parity shards
``P = C @ D`` where ``C`` is an r x k Cauchy matrix. Any ``k`` of the ``k + r``
shards determine the data, so any ``r`` lost or corrupt shards (once identified
by their checksums) are rebuilt bit-exactly.

The code is linear over GF(2^8) with addition = XOR, which is what makes
incremental parity possible: if data shard ``i`` changes from ``d`` to ``d'`` on
a byte range, each parity shard ``j`` changes by ``C[j, i] * (d XOR d')`` on the
same range, and nothing else needs to be read or written (ECRM's delta update,
but exact, unlike a floating-point sum parity).
"""
import numpy as np

from ._gf256 import available_backends, cauchy_matrix, gf_mat_inv, gf_mat_mul_small, gf_matmul

MAX_SHARDS = 256


class ReedSolomon:
    """Reed-Solomon code with k data and r parity shards.

    Parameters
    ----------
    k : int
        Number of data shards, at least 1.
    r : int
        Number of parity shards, at least 0; ``k + r <= 256``.
    backend : {"isal", "numba", "numpy"} or None
        Bulk kernel (see :func:`dartboost.store._gf256.gf_matmul`); None picks
        the fastest available.

    Attributes
    ----------
    parity_matrix : ndarray of uint8, shape (r, k)
        The Cauchy coefficients; shard ``k + j`` is ``XOR_i C[j, i] * shard_i``.
    """

    def __init__(self, k, r, backend=None):
        k, r = _check_kr(k, r)
        if backend is not None and backend not in available_backends():
            raise ValueError(f"GF(2^8) backend {backend!r} is not available here; "
                             f"available: {available_backends()}")
        self.k, self.r, self.backend = k, r, backend
        self.parity_matrix = cauchy_matrix(r, k)
        self._generator = np.vstack([np.eye(k, dtype=np.uint8), self.parity_matrix])
        self._inverse_cache = {}

    @property
    def n(self):
        """Total number of shards, ``k + r``."""
        return self.k + self.r

    def encode(self, data, out=None):
        """Parity shards of a stripe.

        Parameters
        ----------
        data : ndarray of uint8, shape (k, L), or a sequence of k 1-D arrays
            Data shards; ``L`` must be a multiple of 8.
        out : ndarray of uint8, shape (r, L), or a sequence of r 1-D arrays, optional
            Where to write the parity.

        Returns
        -------
        parity : ndarray of uint8, shape (r, L), or ``out``
        """
        if isinstance(data, np.ndarray):
            if data.ndim != 2 or data.shape[0] != self.k:
                raise ValueError(f"expected {self.k} data shards, got array of shape {data.shape}")
        elif len(data) != self.k:
            raise ValueError(f"expected {self.k} data shards, got {len(data)}")
        return gf_matmul(self.parity_matrix, data, backend=self.backend, out=out)

    def parity_delta(self, shard_indices, deltas):
        """Change of every parity shard caused by XOR-deltas on some data shards.

        Parameters
        ----------
        shard_indices : sequence of int
            Data shards that changed (each in ``[0, k)``).
        deltas : ndarray of uint8, shape (len(shard_indices), L)
            ``old XOR new`` for each of those shards over one common byte range.

        Returns
        -------
        ndarray of uint8, shape (r, L)
            To be XORed into the parity shards over the same byte range.
        """
        idx = np.asarray(shard_indices, dtype=np.intp)
        if idx.size and (idx.min() < 0 or idx.max() >= self.k):
            raise ValueError("data shard index out of range")
        return gf_matmul(self.parity_matrix[:, idx], deltas, backend=self.backend)

    def _pick(self, shards):
        """The k shard indices to decode from: data shards first (no arithmetic)."""
        have = sorted(i for i in shards if isinstance(i, (int, np.integer)) and 0 <= i < self.n)
        if len(have) < self.k:
            missing = sorted(set(range(self.n)) - set(have))
            raise ValueError(
                f"cannot decode: {len(have)} of the needed {self.k} shards are available; "
                f"missing shards {missing} (at most {self.r} may be lost)")
        use = [i for i in have if i < self.k] + [i for i in have if i >= self.k]
        return tuple(sorted(use[:self.k]))

    def decode(self, shards):
        """Rebuild all k + r shards from any k of them.

        Parameters
        ----------
        shards : dict of int to ndarray of uint8
            Healthy shards by index (data ``0..k-1``, parity ``k..k+r-1``), all of
            one length. Extra shards beyond k are ignored.

        Returns
        -------
        ndarray of uint8, shape (k + r, L)
            Every shard, bit-exact.

        Raises
        ------
        ValueError
            If fewer than k shards are given; the message names the missing ones.
        """
        use = self._pick(shards)
        return self.reconstruct(use, [np.asarray(shards[i], dtype=np.uint8) for i in use])

    def decode_data(self, shards):
        """The k data shards from any k healthy shards, computing only the lost ones.

        Data shards that are present are returned as given (no copy); the lost
        ones are computed in one pass over the inputs, which are read where they
        lie. This is what a read needs.

        Parameters
        ----------
        shards : dict of int to ndarray of uint8
            As for :meth:`decode`.

        Returns
        -------
        list of k ndarray of uint8
            Data shard ``i`` at position ``i``.
        """
        use = self._pick(shards)
        src = [np.asarray(shards[i], dtype=np.uint8) for i in use]
        lost = [i for i in range(self.k) if i not in use]
        rebuilt = dict(zip(lost, self.recover(use, src, lost))) if lost else {}
        return [rebuilt[i] if i in rebuilt else src[use.index(i)] for i in range(self.k)]

    def recover(self, use, src, want, out=None):
        """Shards ``want`` from the k shards ``use``, in one pass.

        The rows of the generator for ``want`` times the inverse of its rows for
        ``use`` form one coefficient matrix, so lost data and lost parity shards
        come out of a single matrix product over the inputs (parity is not
        recomputed from rebuilt data).

        Parameters
        ----------
        use : tuple of int
            k distinct shard indices, ascending.
        src : ndarray of uint8, shape (k, L), or a sequence of k 1-D arrays
            Those shards, in the order of ``use``.
        want : sequence of int
            Shards to compute (any of ``0..k+r-1``).
        out : ndarray of uint8, shape (len(want), L), or a sequence of arrays, optional
            Where to write them.

        Returns
        -------
        ndarray of uint8, shape (len(want), L), or ``out``
        """
        use = self._check_use(use)
        want = tuple(int(i) for i in want)
        if any(not 0 <= i < self.n for i in want):
            raise ValueError(f"shard indices must be in [0, {self.n}), got {want}")
        return gf_matmul(self._recovery_matrix(use, want), src, backend=self.backend, out=out)

    def reconstruct(self, use, src):
        """All k + r shards from the k shards ``use`` stacked in ``src``.

        Parameters
        ----------
        use : tuple of int
            k distinct shard indices, ascending.
        src : ndarray of uint8, shape (k, L), or a sequence of k 1-D arrays
            Those shards, in the order of ``use``.

        Returns
        -------
        ndarray of uint8, shape (k + r, L)
        """
        use = self._check_use(use)
        src_rows = list(src)
        L = src_rows[0].shape[0]
        out = np.empty((self.n, L), dtype=np.uint8)
        for i, s in zip(use, src_rows):
            out[i] = s
        lost = [i for i in range(self.n) if i not in use]
        if lost:
            self.recover(use, src_rows, lost, out=[out[i] for i in lost])
        return out

    def _check_use(self, use):
        use = tuple(int(i) for i in use)
        if len(use) != self.k or len(set(use)) != self.k or list(use) != sorted(use) \
                or any(not 0 <= i < self.n for i in use):
            raise ValueError(f"need {self.k} distinct ascending shard indices, got {use}")
        return use

    def _recovery_matrix(self, use, want):
        # Rows `use` of the generator map data -> the available shards; its
        # inverse maps those shards back to the data, and rows `want` of the
        # generator times it map them straight to the wanted shards. Cached per
        # erasure pattern (a store sees few patterns).
        key = (use, want)
        R = self._inverse_cache.get(key)
        if R is None:
            inv = self._inverse_cache.get(use)
            if inv is None:
                inv = gf_mat_inv(self._generator[list(use)])
            R = gf_mat_mul_small(self._generator[list(want)], inv) if want else \
                np.zeros((0, self.k), dtype=np.uint8)
            if len(self._inverse_cache) > 4096:  # bounded; a store sees few patterns
                self._inverse_cache.clear()
            self._inverse_cache[use] = inv
            self._inverse_cache[key] = R
        return R


def _check_kr(k, r):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
        raise ValueError(f"r must be a non-negative integer, got {r!r}")
    if k + r > MAX_SHARDS:
        raise ValueError(f"k + r must be at most {MAX_SHARDS} over GF(2^8), got {k + r}")
    return int(k), int(r)
