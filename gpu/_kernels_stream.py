"""The weight-streaming checked GEMM kernel (imported only when it runs).

Kept apart from :mod:`dartboost.gpu._kernels` (the check-pass and tile kernels)
because it is one concern: a skinny ``act(x W^T + b)`` whose ABFT check lives in
its own epilogue.  See :mod:`dartboost.gpu._stream` for the scheme and the
tolerance.
"""
import triton
import triton.language as tl

from ._kernels import _activation, _signed_sums, _to_storage


@triton.jit
def _flip(v, sel, bit, F32: tl.constexpr):
    """``v`` with ``bit`` flipped where ``sel`` (fault injection only)."""
    if F32:
        bits = v.to(tl.int32, bitcast=True)
        v = tl.where(sel, bits ^ (1 << bit), bits).to(tl.float32, bitcast=True)
    else:
        bits = v.to(tl.int16, bitcast=True)
        flipped = (bits.to(tl.int32) ^ (1 << bit)).to(tl.int16)
        v = tl.where(sel, flipped, bits).to(v.dtype, bitcast=True)
    return v


@triton.jit
def _half_ulp(yq):
    """Half a unit in the last place of each fp16/bf16 ``yq``, as fp32.

    Any round-to-nearest result is within it of the value it rounded, and a
    flipped bit moves it at least that far away (the equality is an exact tie,
    where both neighbours are correct roundings).  Subnormals use the smallest
    exponent; bf16's are clamped to 2^-126 (fp32 code may flush below it).
    """
    bits = yq.to(tl.int16, bitcast=True).to(tl.int32)
    if yq.dtype == tl.float16:
        # 5 exponent bits (bias 15), 10 mantissa bits: 2^(e - 26).
        f = tl.maximum((bits >> 10) & 0x1F, 1) + 101
    else:
        # bf16: 8 exponent bits (bias 127), 7 mantissa bits: 2^(e - 135).
        f = tl.maximum(tl.maximum((bits >> 7) & 0xFF, 1) - 8, 1)
    return (f << 23).to(tl.float32, bitcast=True)


@triton.jit
def _flip32(v, sel, bit):
    bits = v.to(tl.int32, bitcast=True)
    return tl.where(sel, bits ^ (1 << bit), bits).to(tl.float32, bitcast=True)


# M, N and the tolerance scalars are not specialised on (a new batch size does not
# compile a new variant); K and the strides are: their divisibility by 16 lets the
# weight and input loads vectorise.
@triton.jit(do_not_specialize=["M", "N", "kb_per", "sigma", "c_a", "c_z", "c_x", "c_b",
                               "inj_row", "inj_col", "inj_bit", "inj_k", "inj_val"])
def abft_stream_kernel(
    x_ptr, w_ptr, b_ptr, s_ptr, out_ptr, part_ptr, ws_ptr, cnt_ptr, ratio_ptr,
    M, N, K, kb_per, sx0, so0,
    sigma, c_a, c_z, c_x, c_b,
    inj_row, inj_col, inj_bit, inj_k, inj_val,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, SPLIT: tl.constexpr, INJECT: tl.constexpr,
    UPCAST: tl.constexpr, F32: tl.constexpr, IEEE: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    # Program (pid_n, pid_s, pid_m) computes rows [pid_m*BM, +BM) x columns
    # [pid_n*BN, +BN) of the *augmented* product x @ W_aug^T (N outputs, then the
    # 16 hi/lo checksum columns) over its K slice of kb_per blocks of BK.  Split-K
    # partials meet in `part` (plain stores, a ticket per tile; the last arrival
    # sums them).  The tile's finisher adds the bias, rounds the outputs to the
    # storage type, applies the activation and writes them, and adds per row the
    # signed sums sum_j r_vj a_ij of the fp32 values a before rounding, ||a_i||^2
    # and the count of wrongly rounded outputs (plus, for the checksum columns,
    # z_v) into the (M, 32) fp32 workspace `ws` (columns 0-7 sums, 8 ||a||^2,
    # 9 ||x||^2, 10 the count, 16-31 z); the last tile of a row block to arrive
    # compares them and writes one ratio per row, returning `ws` and the tickets
    # to zero (CUDA-graph replays reuse them).
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    NA = N + 16
    n_nb = tl.cdiv(NA, BN)
    rm = pid_m * BM + tl.arange(0, BM)
    m_ok = rm < M
    rn = pid_n * BN + tl.arange(0, BN)
    n_ok = rn < NA
    main = rn < N
    cols = tl.arange(0, 16)
    # Slices are whole BK blocks (k_lo's divisibility lets the loads vectorise),
    # so a block never straddles two slices and only K itself needs masking.
    k_lo = pid_s * kb_per * BK
    k_hi = tl.minimum(k_lo + kb_per * BK, K)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    # The K loop feeds the tensor cores only: vector code on the same loaded
    # fragments made Triton 3.6 emit wrong tiles on an H200 (see _triton_gemm),
    # and it costs layout conversions inside the loop.
    for k0 in range(k_lo, k_hi, BK):
        rk = k0 + tl.arange(0, BK)
        k_ok = rk < K
        a = tl.load(x_ptr + rm[:, None] * sx0 + rk[None, :],
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        # The weight streams once: keep it out of L1 ("evict_first").
        w = tl.load(w_ptr + rn[:, None] * K + rk[None, :],
                    mask=n_ok[:, None] & k_ok[None, :], other=0.0,
                    eviction_policy="evict_first")
        if UPCAST:
            acc = tl.dot(a.to(tl.float32), tl.trans(w.to(tl.float32)), acc)
        elif IEEE:
            acc = tl.dot(a, tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, tl.trans(w), acc)
        if INJECT == 1:
            if k0 // BK == inj_k:
                sel = (rm[:, None] == inj_row) & (rn[None, :] == inj_col)
                acc = _flip32(acc, sel, inj_bit)
    if INJECT == 3:
        # One element of the input fragment as the tensor cores saw it for the
        # *outputs* (a flip in shared memory); the checksum columns multiplied the
        # clean value: add the difference to the output columns only (own loads).
        if (inj_col >= k_lo) & (inj_col < k_hi):
            xv = tl.load(x_ptr + rm * sx0 + inj_col, mask=m_ok & (rm == inj_row), other=0.0,
                         cache_modifier=".cg")
            bad = _flip(xv, rm == inj_row, inj_bit, F32).to(tl.float32)
            wcol = tl.load(w_ptr + rn * K + inj_col, mask=main, other=0.0,
                           cache_modifier=".cg").to(tl.float32)
            acc += tl.where((rm == inj_row)[:, None] & main[None, :],
                            (bad - xv.to(tl.float32))[:, None] * wcol[None, :], 0.0)
    if pid_n < kb_per:
        # ||x_i||^2 for the tolerance from the input's own (L2) loads, spread over
        # the column tiles: tile pid_n takes K blocks pid_n, pid_n + n_nb, ... of
        # its slice (usually one), so no program straggles.
        xn22 = tl.zeros((BM, BK), dtype=tl.float32)
        for kb in range(pid_n, kb_per, n_nb):
            rk = k_lo + kb * BK + tl.arange(0, BK)
            xa = tl.load(x_ptr + rm[:, None] * sx0 + rk[None, :],
                         mask=m_ok[:, None] & (rk < k_hi)[None, :], other=0.0,
                         cache_modifier=".cg").to(tl.float32)
            xn22 += xa * xa
        tl.atomic_add(ws_ptr + rm * 32 + 9, tl.sum(xn22, axis=1), mask=m_ok, sem="relaxed")
    tile_ok = m_ok[:, None] & n_ok[None, :]
    last = True
    if SPLIT > 1:
        poff = rm[:, None] * NA + rn[None, :]
        tl.store(part_ptr + pid_s * M * NA + poff, acc, mask=tile_ok)
        # Every thread's stores precede the ticket (CUTLASS-semaphore pattern).
        tl.debug_barrier()
        cnt = cnt_ptr + pid_m * (n_nb + 1) + pid_n
        last = tl.atomic_add(cnt, 1) == SPLIT - 1
        if last:
            tl.debug_barrier()  # every thread after the ticket's acquire
            tl.store(cnt, 0)
            acc = tl.zeros((BM, BN), dtype=tl.float32)
            for s in tl.static_range(SPLIT):
                acc += tl.load(part_ptr + s * M * NA + poff, mask=tile_ok, other=0.0,
                               cache_modifier=".cg")
    if last:
        if INJECT == 4:
            # An additive error of the finished accumulator (the magnitude sweep).
            acc += tl.where((rm[:, None] == inj_row) & (rn[None, :] == inj_col), inj_val, 0.0)
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        yq = _to_storage(acc, out_ptr, UPCAST)
        if INJECT == 2:
            yq = _flip(yq, (rm[:, None] == inj_row) & (rn[None, :] == inj_col), inj_bit, F32)
        out_ok = m_ok[:, None] & main[None, :]
        # The check has two parts, so that the storage rounding never widens the
        # tolerance of the GEMM check (with bf16 it would hide errors of ~1% of
        # ||y_i||).  (1) The signed sums are taken of the fp32 values *before*
        # rounding (three tf32-exact parts: exact products against ±1), so
        # sigma s_iv - z_iv carries only fp32 rounding.  (2) Each rounded output
        # must be a correct rounding of its fp32 value: |yq - acc| <= ulp(yq) / 2
        # (exact for round-to-nearest; yq == acc for fp32 outputs).  A violation
        # is certain, not statistical: the row's ratio becomes infinite.
        am = tl.where(out_ok, acc, 0.0)
        sg = tl.load(s_ptr + rn[:, None] * 16 + cols[None, :], mask=main[:, None],
                     other=0.0).to(tl.float32)
        ssum = _signed_sums(am, sg, tl.zeros((BM, 16), dtype=tl.float32), UPCAST, True)
        sq = tl.sum(am * am, axis=1)
        yf = yq.to(tl.float32)
        if F32:
            half_ulp = tl.zeros((BM, BN), dtype=tl.float32)
        else:
            half_ulp = _half_ulp(yq)
        # NaN-safe: a NaN difference counts as a violation.
        wrong = out_ok & ~(tl.abs(yf - acc) <= half_ulp)
        n_wrong = tl.sum(wrong.to(tl.float32), axis=1)
        yo = _activation(yq.to(tl.float32), ACT).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + rm[:, None] * so0 + rn[None, :], yo, mask=out_ok)
        if pid_n * BN + BN > N:
            # This tile holds checksum columns: z (fp32, bias checksum included).
            z_ok = m_ok[:, None] & (n_ok & (rn >= N))[None, :]
            tl.atomic_add(ws_ptr + rm[:, None] * 32 + 16 + (rn - N)[None, :], acc, mask=z_ok,
                          sem="relaxed")
        vals = tl.where(cols[None, :] == 8, sq[:, None],
                        tl.where(cols[None, :] == 10, n_wrong[:, None], ssum))
        tl.atomic_add(ws_ptr + rm[:, None] * 32 + cols[None, :], vals,
                      mask=m_ok[:, None] & ((cols < 9) | (cols == 10))[None, :],
                      sem="relaxed")
        tl.debug_barrier()
        cnt2 = cnt_ptr + pid_m * (n_nb + 1) + n_nb
        if tl.atomic_add(cnt2, 1) == n_nb - 1:
            tl.debug_barrier()  # every thread after the ticket's acquire
            tl.store(cnt2, 0)
            row = ws_ptr + rm[:, None] * 32
            vm = m_ok[:, None] & (cols < 8)[None, :]
            zero = tl.zeros((BM, 16), dtype=tl.float32)
            # Read the totals where the atomics live (an atomic add of 0, coherent
            # at L2), then zero them: nobody else touches this row block again.
            # The data atomics are relaxed (no fence each): the barrier before each
            # acq_rel ticket orders a program's adds, the ticket publishes them.
            s_t = tl.atomic_add(row + cols[None, :], zero, mask=vm, sem="relaxed")
            zh = tl.atomic_add(row + 16 + 2 * cols[None, :], zero, mask=vm, sem="relaxed")
            zl = tl.atomic_add(row + 17 + 2 * cols[None, :], zero, mask=vm, sem="relaxed")
            z1 = tl.zeros((BM,), dtype=tl.float32)
            sq_t = tl.atomic_add(ws_ptr + rm * 32 + 8, z1, mask=m_ok, sem="relaxed")
            xn_t = tl.atomic_add(ws_ptr + rm * 32 + 9, z1, mask=m_ok, sem="relaxed")
            bad_t = tl.atomic_add(ws_ptr + rm * 32 + 10, z1, mask=m_ok, sem="relaxed")
            tl.store(row + cols[None, :], zero, mask=vm)
            tl.store(row + 16 + cols[None, :], zero, mask=m_ok[:, None])
            tl.store(ws_ptr + rm * 32 + 8, z1, mask=m_ok)
            tl.store(ws_ptr + rm * 32 + 9, z1, mask=m_ok)
            tl.store(ws_ptr + rm * 32 + 10, z1, mask=m_ok)
            s_t = tl.where(vm, s_t, 0.0)
            z = tl.where(vm, zh + zl, 0.0)
            tol = (c_a * tl.sqrt(sq_t)[:, None] + c_z * tl.abs(z)
                   + c_x * tl.sqrt(xn_t)[:, None] + c_b + 1e-30)
            d = tl.abs(s_t * sigma - z)
            # NaN/Inf anywhere in the row makes d or tol non-finite: infinitely bad.
            r = tl.where((d < float("inf")) & (tol < float("inf")), d / tol, float("inf"))
            r = tl.where(vm, r, 0.0)
            r = tl.max(r, axis=1)
            # A wrongly rounded output (part 2) is a fault whatever the sums say.
            r = tl.where(bad_t == 0.0, r, float("inf"))
            tl.store(ratio_ptr + rm, r, mask=m_ok)
