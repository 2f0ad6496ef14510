"""Incremental parity: update parity from the bytes that changed.

Data are laid out in rows ("stripes") of k chunks; row ``s`` has parity
``P_s = C @ D_s`` over GF(2^8). When a new version of an object differs from the
previous one in a few chunks, the new parity of a row is::

    P'_s = P_s XOR C @ (D_s XOR D'_s)

so only the changed chunks (their XOR-delta) and the old parity of the same
rows are touched; chunks that did not change are neither re-encoded nor
re-written. This is ECRM's "ship the delta, not the model" idea, made exact
by working in GF(2^8) instead of floating-point sums (a float parity
``P -= dw`` accumulates rounding error and cannot give bit-exact recovery).
"""
import numpy as np


def stripe(blob, k, chunk_size):
    """Lay out bytes as rows of k chunks, zero-padded.

    Returns
    -------
    ndarray of uint8, shape (rows, k, chunk_size)
        Chunk ``c`` of the object is ``out[c // k, c % k]``. Interleaving the
        chunks across shards keeps an append within few rows, so it costs few
        parity updates.
    """
    n = len(blob)
    rows = max(1, -(-n // (k * chunk_size)))
    out = np.zeros(rows * k * chunk_size, dtype=np.uint8)
    out[:n] = np.frombuffer(blob, dtype=np.uint8)
    return out.reshape(rows, k, chunk_size)


def encode_rows(rs, data):
    """Parity of every row: (rows, k, C) -> (rows, r, C)."""
    rows, k, c = data.shape
    flat = np.ascontiguousarray(data.transpose(1, 0, 2)).reshape(k, rows * c)
    parity = rs.encode(flat).reshape(rs.r, rows, c)
    return np.ascontiguousarray(parity.transpose(1, 0, 2))


def update_parity(rs, old_data, old_parity, new_data):
    """New parity of ``new_data`` from the previous data and parity.

    Parameters
    ----------
    rs : ReedSolomon
    old_data : ndarray of uint8, shape (R_old, k, C)
    old_parity : ndarray of uint8, shape (R_old, r, C)
    new_data : ndarray of uint8, shape (R_new, k, C)
        Rows beyond ``R_old`` are treated as changed from all-zero rows (whose
        parity is zero); rows beyond ``R_new`` are dropped.

    Returns
    -------
    new_parity : ndarray of uint8, shape (R_new, r, C)
    changed : ndarray of bool, shape (R_new, k)
        Which data chunks differ from the previous version.
    """
    r_old, r_new = old_data.shape[0], new_data.shape[0]
    common = min(r_old, r_new)
    k, c = new_data.shape[1], new_data.shape[2]
    changed = np.ones((r_new, k), dtype=bool)
    # One comparison pass at memory speed finds the changed chunks.
    changed[:common] = (old_data[:common] != new_data[:common]).any(axis=2)
    new_parity = np.zeros((r_new, rs.r, c), dtype=np.uint8)
    new_parity[:common] = old_parity[:common]
    rows = np.flatnonzero(changed.any(axis=1))
    if rows.size == 0 or rs.r == 0:
        return new_parity, changed
    old = np.zeros((rows.size, k, c), dtype=np.uint8)
    old_rows = rows < r_old
    old[old_rows] = old_data[rows[old_rows]]
    delta = old ^ new_data[rows]
    # Encode only the shards that changed in at least one of these rows.
    shards = np.flatnonzero(changed[rows].any(axis=0))
    flat = np.ascontiguousarray(delta[:, shards].transpose(1, 0, 2)).reshape(shards.size, -1)
    pd = rs.parity_delta(shards, flat).reshape(rs.r, rows.size, c).transpose(1, 0, 2)
    new_parity[rows] ^= pd
    return new_parity, changed
