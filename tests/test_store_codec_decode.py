"""Decoding paths of the Reed-Solomon codec, on every kernel backend.

Every erasure pattern of at most r shards for the store's usual 4+2 and 8+3
codes is decoded three ways (all shards, data only, the lost shards only) and
compared byte for byte with the original stripe.
"""
import itertools

import numpy as np
import pytest

from dartboost.store import ReedSolomon
from dartboost.store import _gf256 as gf
from dartboost.store import _gf256_isal

BACKENDS = gf.available_backends()


def _patterns(n, r):
    return itertools.chain.from_iterable(itertools.combinations(range(n), e) for e in range(r + 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k,r", [(4, 2), (8, 3)])
def test_every_erasure_pattern_decodes_exactly(backend, k, r):
    rng = np.random.default_rng(k * 7 + r)
    rs = ReedSolomon(k, r, backend=backend)
    L = 520  # a multiple of 8 but not of 64: exercises the kernels' tails
    data = rng.integers(0, 256, (k, L), dtype=np.uint8)
    shards = np.vstack([data, rs.encode(data)])
    assert np.array_equal(shards[k:], gf.gf_matmul_reference(rs.parity_matrix, data))
    n_patterns = 0
    for lost in _patterns(k + r, r):
        # separate arrays, as a store read delivers them
        avail = {i: shards[i].copy() for i in range(k + r) if i not in lost}
        assert np.array_equal(rs.decode(avail), shards), lost
        got = rs.decode_data(avail)
        assert len(got) == k and all(np.array_equal(got[i], data[i]) for i in range(k)), lost
        use = tuple(sorted(avail))[:k]
        want = list(lost)
        rebuilt = rs.recover(use, [avail[i] for i in use], want)
        assert np.array_equal(rebuilt, shards[want]), lost
        n_patterns += 1
    assert n_patterns == sum(len(list(itertools.combinations(range(k + r), e))) for e in range(r + 1))


def test_decode_data_returns_present_shards_without_copying():
    rs = ReedSolomon(4, 2)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 64), dtype=np.uint8)
    parity = rs.encode(data)
    avail = {0: data[0], 2: data[2], 3: data[3], 4: parity[0], 5: parity[1]}
    got = rs.decode_data(avail)
    assert got[0] is avail[0] and got[2] is avail[2] and got[3] is avail[3]
    assert np.array_equal(got[1], data[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_written_in_place_and_inputs_as_separate_arrays(backend):
    rng = np.random.default_rng(1)
    M = rng.integers(0, 256, (3, 5), dtype=np.uint8)
    rows = [rng.integers(0, 256, 4096, dtype=np.uint8) for _ in range(5)]
    outs = [np.full(4096, 7, dtype=np.uint8) for _ in range(3)]
    res = gf.gf_matmul(M, rows, backend=backend, out=outs)
    assert res is outs
    ref = gf.gf_matmul_reference(M, np.stack(rows))
    assert all(np.array_equal(o, ref[j]) for j, o in enumerate(outs))
    out2 = np.zeros((6, 4096), dtype=np.uint8)[::2]  # rows contiguous, array not
    gf.gf_matmul(M, np.stack(rows), backend=backend, out=out2)
    assert np.array_equal(out2, ref)


def test_recover_rejects_bad_indices():
    rs = ReedSolomon(4, 2)
    src = np.zeros((4, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="ascending"):
        rs.recover((0, 1, 1, 2), src, [3])
    with pytest.raises(ValueError, match="ascending"):
        rs.recover((0, 1, 2, 9), src, [3])
    with pytest.raises(ValueError, match=r"in \[0, 6\)"):
        rs.recover((0, 1, 2, 4), src, [6])


def test_kernel_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="different lengths"):
        gf.gf_matmul(np.ones((1, 2), np.uint8), [np.zeros(8, np.uint8), np.zeros(16, np.uint8)])
    with pytest.raises(ValueError, match="out must have 2 rows"):
        gf.gf_matmul(np.ones((2, 1), np.uint8), np.zeros((1, 8), np.uint8),
                     out=np.zeros((1, 8), np.uint8))
    with pytest.raises(ValueError, match="writable"):
        ro = np.zeros((1, 8), np.uint8)
        ro.flags.writeable = False
        gf.gf_matmul(np.ones((1, 1), np.uint8), np.zeros((1, 8), np.uint8), out=ro)


class _WrongLib:
    """Stands in for a library whose ``ec_encode_data`` computes nothing."""

    def ec_init_tables(self, *args):
        pass

    def ec_encode_data(self, *args):
        pass


def test_isal_self_check_refuses_a_wrong_library():
    assert not _gf256_isal._self_check(_WrongLib())


@pytest.mark.skipif("isal" not in BACKENDS, reason="no ISA-L library (pyeclib or libisal2)")
def test_isal_is_the_default_when_present():
    assert gf.default_backend(64) == "isal"
    assert gf.default_backend(1 << 30) == "isal"


def test_unknown_or_missing_backend_is_refused_up_front():
    with pytest.raises(ValueError, match="'gpu' is not available"):
        ReedSolomon(4, 2, backend="gpu")
    if "isal" not in BACKENDS:
        with pytest.raises(ValueError, match="'isal' is not available"):
            ReedSolomon(4, 2, backend="isal")
