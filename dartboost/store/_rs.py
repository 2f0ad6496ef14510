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

from ._gf256 import cauchy_matrix, gf_mat_inv, gf_matmul

MAX_SHARDS = 256


class ReedSolomon:
    """Reed-Solomon code with k data and r parity shards.

    Parameters
    ----------
    k : int
        Number of data shards, at least 1.
    r : int
        Number of parity shards, at least 0; ``k + r <= 256``.
    backend : {"numba", "numpy"} or None
        Bulk kernel (see :func:`dartboost.store._gf256.gf_matmul`).

    Attributes
    ----------
    parity_matrix : ndarray of uint8, shape (r, k)
        The Cauchy coefficients; shard ``k + j`` is ``XOR_i C[j, i] * shard_i``.
    """

    def __init__(self, k, r, backend=None):
        k, r = _check_kr(k, r)
        self.k, self.r, self.backend = k, r, backend
        self.parity_matrix = cauchy_matrix(r, k)
        self._generator = np.vstack([np.eye(k, dtype=np.uint8), self.parity_matrix])
        self._inverse_cache = {}

    @property
    def n(self):
        """Total number of shards, ``k + r``."""
        return self.k + self.r

    def encode(self, data):
        """Parity shards of a stripe.

        Parameters
        ----------
        data : ndarray of uint8, shape (k, L)
            Data shards; ``L`` must be a multiple of 8.

        Returns
        -------
        parity : ndarray of uint8, shape (r, L)
        """
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[0] != self.k:
            raise ValueError(f"expected {self.k} data shards, got array of shape {data.shape}")
        return gf_matmul(self.parity_matrix, data, backend=self.backend)

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
        have = sorted(i for i in shards if 0 <= i < self.n)
        if len(have) < self.k:
            missing = sorted(set(range(self.n)) - set(have))
            raise ValueError(
                f"cannot decode: {len(have)} of the needed {self.k} shards are available; "
                f"missing shards {missing} (at most {self.r} may be lost)")
        # Prefer data shards: with all data present decoding is a copy.
        use = [i for i in have if i < self.k] + [i for i in have if i >= self.k]
        use = tuple(sorted(use[:self.k]))
        src = np.stack([np.asarray(shards[i], dtype=np.uint8) for i in use])
        return self.reconstruct(use, src)

    def reconstruct(self, use, src):
        """All k + r shards from the k shards ``use`` stacked in ``src``.

        Parameters
        ----------
        use : tuple of int
            k distinct shard indices, ascending.
        src : ndarray of uint8, shape (k, L)
            Those shards, in the order of ``use``.

        Returns
        -------
        ndarray of uint8, shape (k + r, L)
        """
        use = tuple(use)
        if len(use) != self.k or len(set(use)) != self.k or list(use) != sorted(use):
            raise ValueError(f"need {self.k} distinct ascending shard indices, got {use}")
        out = np.empty((self.n, src.shape[1]), dtype=np.uint8)
        out[list(use)] = src
        lost_data = [i for i in range(self.k) if i not in use]
        if lost_data:
            inv = self._inverse(use)
            out[lost_data] = gf_matmul(inv[lost_data], src, backend=self.backend)
        lost_parity = [j for j in range(self.k, self.n) if j not in use]
        if lost_parity:
            out[lost_parity] = gf_matmul(
                self.parity_matrix[[j - self.k for j in lost_parity]], out[:self.k],
                backend=self.backend)
        return out

    def _inverse(self, use):
        # Rows `use` of the generator map data -> the available shards; its
        # inverse maps those shards back to the data. Cached per erasure pattern.
        inv = self._inverse_cache.get(use)
        if inv is None:
            inv = gf_mat_inv(self._generator[list(use)])
            self._inverse_cache[use] = inv
        return inv


def _check_kr(k, r):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
        raise ValueError(f"r must be a non-negative integer, got {r!r}")
    if k + r > MAX_SHARDS:
        raise ValueError(f"k + r must be at most {MAX_SHARDS} over GF(2^8), got {k + r}")
    return int(k), int(r)
