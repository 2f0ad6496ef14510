"""Reed-Solomon over GF(2^8): field arithmetic, kernels, erasure decoding."""
import itertools

import numpy as np
import pytest

from dartboost.store import ReedSolomon
from dartboost.store import _gf256 as gf
from dartboost.store._incremental import encode_rows, stripe, update_parity


def test_field_axioms():
    for a in range(1, 256):
        assert gf.gf_mul(a, gf.gf_inv(a)) == 1
        assert gf.gf_mul(a, 1) == a and gf.gf_mul(a, 0) == 0
    rng = np.random.default_rng(0)
    for a, b, c in rng.integers(0, 256, (200, 3)):
        a, b, c = int(a), int(b), int(c)
        assert gf.gf_mul(a, b) == gf.gf_mul(b, a)
        # distributive over XOR (field addition)
        assert gf.gf_mul(a, b ^ c) == gf.gf_mul(a, b) ^ gf.gf_mul(a, c)
        assert gf.gf_mul(gf.gf_mul(a, b), c) == gf.gf_mul(a, gf.gf_mul(b, c))


def test_matrix_inverse():
    rng = np.random.default_rng(1)
    M = gf.cauchy_matrix(5, 5)
    inv = gf.gf_mat_inv(M)
    assert np.array_equal(gf.gf_mat_mul_small(M, inv), np.eye(5, dtype=np.uint8))
    with pytest.raises(np.linalg.LinAlgError):
        gf.gf_mat_inv(np.array([[1, 2], [1, 2]], dtype=np.uint8))
    A = rng.integers(0, 256, (3, 3)).astype(np.uint8)
    try:
        Ai = gf.gf_mat_inv(A)
    except np.linalg.LinAlgError:
        return
    assert np.array_equal(gf.gf_mat_mul_small(Ai, A), np.eye(3, dtype=np.uint8))


@pytest.mark.parametrize("backend", gf.available_backends())
@pytest.mark.parametrize("m,n,L", [(2, 4, 8), (3, 5, 4096), (1, 1, 64), (4, 10, 8 * 1031)])
def test_kernel_matches_table_reference(backend, m, n, L):
    rng = np.random.default_rng(m * 100 + n)
    M = rng.integers(0, 256, (m, n)).astype(np.uint8)
    M[0, 0] = 0  # zero and one coefficients are edge cases of the bit loop
    M[-1, -1] = 1
    rows = rng.integers(0, 256, (n, L)).astype(np.uint8)
    assert np.array_equal(gf.gf_matmul(M, rows, backend=backend), gf.gf_matmul_reference(M, rows))


def test_kernel_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 8"):
        gf.gf_matmul(np.ones((1, 1), np.uint8), np.zeros((1, 7), np.uint8))
    with pytest.raises(ValueError, match="columns"):
        gf.gf_matmul(np.ones((1, 2), np.uint8), np.zeros((1, 8), np.uint8))
    with pytest.raises(ValueError, match="unknown backend"):
        gf.gf_matmul(np.ones((1, 1), np.uint8), np.zeros((1, 8), np.uint8), backend="gpu")


@pytest.mark.parametrize("k,r", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)])
def test_any_r_erasures_decode_exactly(k, r):
    rng = np.random.default_rng(k * 10 + r)
    rs = ReedSolomon(k, r)
    data = rng.integers(0, 256, (k, 256)).astype(np.uint8)
    parity = rs.encode(data)
    shards = np.vstack([data, parity])
    for lost in itertools.chain.from_iterable(
            itertools.combinations(range(k + r), e) for e in range(r + 1)):
        avail = {i: shards[i] for i in range(k + r) if i not in lost}
        assert np.array_equal(rs.decode(avail), shards), lost


def test_too_many_erasures_names_missing_shards():
    rs = ReedSolomon(3, 2)
    data = np.arange(3 * 16, dtype=np.uint8).reshape(3, 16)
    shards = np.vstack([data, rs.encode(data)])
    with pytest.raises(ValueError, match=r"missing shards \[0, 2, 4\]"):
        rs.decode({1: shards[1], 3: shards[3]})


@pytest.mark.parametrize("k,r", [(0, 1), (2, -1), (200, 57), (2.5, 1), (True, 1)])
def test_bad_k_r(k, r):
    with pytest.raises(ValueError):
        ReedSolomon(k, r)


def test_incremental_parity_equals_full_encode():
    rng = np.random.default_rng(3)
    rs = ReedSolomon(4, 2)
    blob = rng.integers(0, 256, 50_000).astype(np.uint8).tobytes()
    old = stripe(blob, 4, 1024)
    old_par = encode_rows(rs, old)
    # scattered edits, an append that adds rows, then a shrink
    b = bytearray(blob)
    b[10:20] = b"x" * 10
    b[30_000] ^= 0xFF
    b += rng.integers(0, 256, 9000).astype(np.uint8).tobytes()
    for new_blob in (bytes(b), bytes(b[:20_000])):
        new = stripe(new_blob, 4, 1024)
        par, changed = update_parity(rs, old, old_par, new)
        assert np.array_equal(par, encode_rows(rs, new))
        common = min(len(old), len(new))
        assert changed[:common].sum() == (old[:common] != new[:common]).any(axis=2).sum()
