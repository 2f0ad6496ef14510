"""The Triton kernels (imported only when a check runs through Triton).

Kept in their own module because Triton's interpreter needs ``triton.language``
visible at module level of the jitted functions, and so that importing
:mod:`dartboost.gpu` never imports triton.
"""
import triton
import triton.language as tl


# Geometry and tolerance scalars are not specialised on (1 / multiple of 16): that
# would compile a variant per convolution shape for no speed gain.
_GEOM = ["C", "H", "W", "OH", "OW", "KH", "KW", "sh", "sw", "ph", "pw", "dh", "dw"]


@triton.jit(do_not_specialize=_GEOM + ["c_x", "c_y"])
def abft_global_check_kernel(
    x_ptr, y_ptr, ws_ptr, bsum_ptr, ratio_ptr,
    M, N, K,
    C, H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw,
    sx0, sx1, sx2, sx3, sy0, sy1, sy2, sy3,
    c_x, c_y,
    IS_CONV: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
):
    # One program checks BM output rows (pixels): it streams the rows' inputs
    # once (checksum x.w_sum and ||x||) and the rows' outputs once (sum, ||y||).
    pid = tl.program_id(0)
    rm = pid * BM + tl.arange(0, BM)
    m_ok = rm < M
    if IS_CONV:
        nb = rm // (OH * OW)
        p = rm % (OH * OW)
        oh = p // OW
        ow = p % OW
        x_row = nb * sx0
        y_row = nb * sy0 + oh * sy2 + ow * sy3
    else:
        x_row = rm * sx0
        y_row = rm * sy0
        oh = rm  # unused placeholders for the helper's linear path
        ow = rm
    # Element-wise accumulation, one reduction at the end (no per-step shuffles).
    chk2 = tl.zeros((BM, BK), dtype=tl.float32)
    xn22 = tl.zeros((BM, BK), dtype=tl.float32)
    for ki in range(0, tl.cdiv(K, BK)):
        offs, msk, rk, k_ok = _a_tile(ki, rm, m_ok, x_row, oh, ow, K, H, W, KH, KW, sh, sw,
                                      ph, pw, dh, dw, sx1, sx2, sx3, IS_CONV, BK)
        a = tl.load(x_ptr + offs, mask=msk, other=0.0).to(tl.float32)
        ws = tl.load(ws_ptr + rk, mask=k_ok, other=0.0)
        chk2 += a * ws[None, :]
        xn22 += a * a
    chk = tl.sum(chk2, axis=1)
    xn2 = tl.sum(xn22, axis=1)
    s2 = tl.zeros((BM, BN), dtype=tl.float32)
    yn22 = tl.zeros((BM, BN), dtype=tl.float32)
    for n0 in range(0, N, BN):
        rn = n0 + tl.arange(0, BN)
        msk = m_ok[:, None] & (rn < N)[None, :]
        yv = tl.load(y_ptr + y_row[:, None] + rn[None, :] * sy1, mask=msk,
                      other=0.0).to(tl.float32)
        s2 += yv
        yn22 += yv * yv
    s_sum = tl.sum(s2, axis=1)
    yn2 = tl.sum(yn22, axis=1)
    ref = chk + tl.load(bsum_ptr)
    d = tl.abs(s_sum - ref)
    scale = c_x * tl.sqrt(xn2) + c_y * tl.sqrt(yn2) + 1e-30
    # NaN/Inf anywhere in the row makes d non-finite, and a value whose square
    # overflows fp32 makes the scale infinite: report both as infinitely bad (the
    # recomputation then tells a fault from a genuinely huge activation).
    ratio = tl.where((d < float("inf")) & (scale < float("inf")), d / scale, float("inf"))
    tl.store(ratio_ptr + rm, ratio, mask=m_ok)


@triton.jit
def _a_tile(ki, rm, m_ok, x_row, oh, ow, K, H, W, KH, KW, sh, sw, ph, pw, dh, dw, sx1, sx2,
            sx3, IS_CONV: tl.constexpr, BK: tl.constexpr):
    """Offsets and mask of the A fragment for K block ``ki`` (implicit im2col)."""
    rk = ki * BK + tl.arange(0, BK)
    k_ok = rk < K
    if IS_CONV:
        c = rk // (KH * KW)
        rs = rk % (KH * KW)
        r = rs // KW
        s = rs % KW
        ih = oh[:, None] * sh - ph + r[None, :] * dh
        iw = ow[:, None] * sw - pw + s[None, :] * dw
        a_msk = (m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H)
                 & (iw >= 0) & (iw < W))
        a_off = x_row[:, None] + c[None, :] * sx1 + ih * sx2 + iw * sx3
    else:
        a_msk = m_ok[:, None] & k_ok[None, :]
        a_off = x_row[:, None] + rk[None, :] * sx1
    return a_off, a_msk, rk, k_ok


@triton.jit(do_not_specialize=_GEOM + ["c_y", "inj_row", "inj_col", "inj_bit", "inj_k"])
def abft_tile_gemm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, wsum_ptr, cx_ptr, ratio_ptr,
    M, N, K,
    C, H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw,
    sx0, sx1, sx2, sx3, swn, swk, sy0, sy1, sy2, sy3,
    c_y,
    inj_row, inj_col, inj_bit, inj_k,
    IS_CONV: tl.constexpr, HAS_BIAS: tl.constexpr, INJECT: tl.constexpr,
    UPCAST: tl.constexpr, IEEE_F32: tl.constexpr, CHECK: tl.constexpr, ACC2D: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    n_pm = tl.cdiv(M, BM)
    n_pn = tl.cdiv(N, BN)
    # Grouped launch order: GROUP_M row-tiles share the same weight columns in L2.
    width = GROUP_M * n_pn
    group = pid // width
    first_m = group * GROUP_M
    gsize = tl.minimum(n_pm - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % gsize
    pid_n = (pid % width) // gsize

    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    m_ok = rm < M
    n_ok = rn < N
    if IS_CONV:
        nb = rm // (OH * OW)
        p = rm % (OH * OW)
        oh = p // OW
        ow = p % OW
        x_row = nb * sx0
        y_row = nb * sy0 + oh * sy2 + ow * sy3
    else:
        x_row = rm * sx0
        y_row = rm * sy0

    acc = tl.zeros((BM, BN), dtype=tl.float32)
    # ACC2D (small A tiles): accumulate the checksum products element-wise and
    # reduce once after the K loop, instead of a cross-thread reduction per step.
    if ACC2D:
        chk2 = tl.zeros((BM, BK), dtype=tl.float32)
        xn22 = tl.zeros((BM, BK), dtype=tl.float32)
    else:
        chk = tl.zeros((BM,), dtype=tl.float32)
        xn2 = tl.zeros((BM,), dtype=tl.float32)
    ws_base = wsum_ptr + pid_n * K
    n_k = tl.cdiv(K, BK)
    if not IS_CONV:
        oh = rm  # unused placeholders for the helper's linear path
        ow = rm
    if CHECK and ACC2D:
        # The checksum reads its own copy of the fragment (an L1/L2 hit, no extra
        # DRAM traffic); thin tiles (ACC2D) load it one K block ahead so its latency
        # overlaps the MMA (big tiles have no registers to spare for that).
        # Sharing the tensor-core operand with vector code made Triton 3.6 emit
        # wrong tiles on an H200 for some tile shapes (caught by this very check).
        # The cache modifier keeps the two loads of the same addresses distinct.
        off0, msk0, rk0, kok0 = _a_tile(0, rm, m_ok, x_row, oh, ow, K, H, W, KH, KW, sh, sw,
                                        ph, pw, dh, dw, sx1, sx2, sx3, IS_CONV, BK)
        a_next = tl.load(x_ptr + off0, mask=msk0, other=0.0, cache_modifier=".cg")
        ws_next = tl.load(ws_base + rk0, mask=kok0, other=0.0)
    for ki in range(0, n_k):
        a_off, a_msk, rk, k_ok = _a_tile(ki, rm, m_ok, x_row, oh, ow, K, H, W, KH, KW, sh,
                                         sw, ph, pw, dh, dw, sx1, sx2, sx3, IS_CONV, BK)
        a = tl.load(x_ptr + a_off, mask=a_msk, other=0.0)
        b = tl.load(w_ptr + rn[None, :] * swn + rk[:, None] * swk,
                     mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if CHECK and ACC2D:
            a32 = a_next.to(tl.float32)
            ws = ws_next
            offn, mskn, rkn, kokn = _a_tile(ki + 1, rm, m_ok, x_row, oh, ow, K, H, W, KH, KW,
                                            sh, sw, ph, pw, dh, dw, sx1, sx2, sx3, IS_CONV, BK)
            a_next = tl.load(x_ptr + offn, mask=mskn, other=0.0, cache_modifier=".cg")
            ws_next = tl.load(ws_base + rkn, mask=kokn, other=0.0)
        elif CHECK:
            a32 = tl.load(x_ptr + a_off, mask=a_msk, other=0.0,
                          cache_modifier=".cg").to(tl.float32)
            ws = tl.load(ws_base + rk, mask=k_ok, other=0.0)
        if INJECT == 3:
            # Corrupt one element of the A fragment as the tensor cores see it
            # (e.g. a flip in shared memory); the checksum read a clean copy.
            if ki == inj_k:
                sel = (rm[:, None] == inj_row) & (rk[None, :] == inj_col)
                if x_ptr.dtype.element_ty == tl.float32:
                    bits = a.to(tl.int32, bitcast=True)
                    a = tl.where(sel, bits ^ (1 << inj_bit), bits).to(tl.float32,
                                                                      bitcast=True)
                else:
                    bits = a.to(tl.int16, bitcast=True)
                    flipped = (bits.to(tl.int32) ^ (1 << inj_bit)).to(tl.int16)
                    a = tl.where(sel, flipped, bits).to(x_ptr.dtype.element_ty,
                                                         bitcast=True)
        if CHECK:  # CHECK=False gives the same GEMM without ABFT (benchmark baseline)
            if ACC2D:
                chk2 += a32 * ws[None, :]
                xn22 += a32 * a32
            else:
                chk += tl.sum(a32 * ws[None, :], axis=1)
                xn2 += tl.sum(a32 * a32, axis=1)
        if UPCAST:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
        elif IEEE_F32:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        if INJECT == 1:
            if ki == inj_k:
                sel = (rm[:, None] == inj_row) & (rn[None, :] == inj_col)
                bits = acc.to(tl.int32, bitcast=True)
                acc = tl.where(sel, bits ^ (1 << inj_bit), bits).to(tl.float32,
                                                                     bitcast=True)

    bsum = 0.0
    if HAS_BIAS:
        bias = tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
        bsum = tl.sum(bias, axis=0)
    yv = _to_storage(acc, y_ptr, UPCAST)
    if INJECT == 2:
        sel = (rm[:, None] == inj_row) & (rn[None, :] == inj_col)
        if y_ptr.dtype.element_ty == tl.float32:
            bits = yv.to(tl.int32, bitcast=True)
            yv = tl.where(sel, bits ^ (1 << inj_bit), bits).to(tl.float32, bitcast=True)
        else:
            bits = yv.to(tl.int16, bitcast=True).to(tl.int32)
            flipped = (bits ^ (1 << inj_bit)).to(tl.int16)
            yv = tl.where(sel, flipped, bits.to(tl.int16)).to(y_ptr.dtype.element_ty,
                                                               bitcast=True)
    out_msk = m_ok[:, None] & n_ok[None, :]
    if CHECK:
        if ACC2D:
            chk = tl.sum(chk2, axis=1)
            xn2 = tl.sum(xn22, axis=1)
        yf = tl.where(out_msk, yv.to(tl.float32), 0.0)
        s_sum = tl.sum(yf, axis=1)
        yn2 = tl.sum(yf * yf, axis=1)
        c_x = tl.load(cx_ptr + pid_n)
        d = tl.abs(s_sum - (chk + bsum))
        scale = c_x * tl.sqrt(xn2) + c_y * tl.sqrt(yn2) + 1e-30
        ratio = tl.where((d < float("inf")) & (scale < float("inf")), d / scale, float("inf"))
        ratio = tl.where(m_ok, ratio, 0.0)
        tl.store(ratio_ptr + pid_m * n_pn + pid_n, tl.max(ratio, axis=0))
    tl.store(y_ptr + y_row[:, None] + rn[None, :] * sy1, yv, mask=out_msk)


@triton.jit
def _activation(v, ACT: tl.constexpr):
    if ACT == 1:
        v = tl.maximum(v, 0.0)
    elif ACT == 2:
        v = 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))
    elif ACT == 3:
        # tanh(u) = 2 sigmoid(2u) - 1 (Triton has no portable tanh)
        u = 0.7978845608028654 * (v + 0.044715 * v * v * v)
        v = 0.5 * v * (1.0 + (2.0 * tl.sigmoid(2.0 * u) - 1.0))
    elif ACT == 4:
        v = v * tl.sigmoid(v)
    return v


@triton.jit
def _to_storage(acc, out_ptr, UPCAST: tl.constexpr):
    """fp32 ``acc`` rounded to ``out_ptr``'s element type. The interpreter
    truncates fp32 -> bf16; GPUs round to nearest even, which the tolerances
    assume: with ``UPCAST`` (the interpreter) round explicitly, so CPU tests
    see GPU numerics."""
    if UPCAST and out_ptr.dtype.element_ty == tl.bfloat16:
        ib = acc.to(tl.int32, bitcast=True)
        ib = ib + 0x7FFF + ((ib >> 16) & 1)
        return (ib >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        return acc.to(out_ptr.dtype.element_ty)


@triton.jit
def _signed_sums(y, sg, acc, UPCAST: tl.constexpr, F32: tl.constexpr):
    """acc + y @ sg on tensor cores, exact products (``sg`` holds ±1 and 0)."""
    if UPCAST:
        acc += tl.dot(y.to(tl.float32), sg.to(tl.float32))
    elif F32:
        # fp32 outputs: split each value into three tf32-exact parts (11 + 11 + 2
        # significant bits) so three tf32 dots against ±1 give exact products.
        hi = (y.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
        r = y - hi
        mid = (r.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
        acc = tl.dot(hi, sg, acc, input_precision="tf32")
        acc = tl.dot(mid, sg, acc, input_precision="tf32")
        acc = tl.dot(r - mid, sg, acc, input_precision="tf32")
    else:
        acc = tl.dot(y, sg, acc)
    return acc


# M and K are not specialised on (a new batch size does not compile a new variant);
# N and the strides are: their divisibility lets Triton vectorise the masked loads.
@triton.jit(do_not_specialize=["M", "K", "n_cb", "k_per", "sigma", "c_y", "c_z", "c_x"])
def abft_check_kernel(
    y_ptr, b_ptr, s_ptr, out_ptr, x_ptr, xn_ptr, ws_ptr, cnt_ptr, ratio_ptr, on_ptr,
    M, N, K, n_cb, k_per, sy0, so0, sx0,
    sigma, c_y, c_z, c_x,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, WRITE: tl.constexpr, HAS_XN: tl.constexpr,
    OUT_NORM: tl.constexpr, ONE_PASS: tl.constexpr, UPCAST: tl.constexpr,
    F32: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, CHUNKS: tl.constexpr,
    BK: tl.constexpr,
):
    # One launch per layer call.  Program (pid_m, pid_c) owns BM rows x CHUNKS*BN
    # columns of the augmented GEMM's output Y: it applies bias + activation and
    # writes them (WRITE), and accumulates per row the signed sums
    # sum_j r_vj y_ij (a tensor-core dot against the ±1 signs), ||y_i||^2,
    # ||out_i||^2 and, unless given (HAS_XN), its share of ||x_i||^2.  The
    # partials meet in a zeroed (M, 16) fp32 workspace via atomics; the program
    # that arrives last for a row block (a ticket counter) compares them with the
    # checksum columns z_v = hi_v + lo_v, writes one ratio per row and returns
    # the workspace and counter to zero for the next call (graph replays).
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    m_ok = rm < M
    cols = tl.arange(0, 16)
    acc = tl.zeros((BM, 16), dtype=tl.float32)
    sq = tl.zeros((BM,), dtype=tl.float32)
    on2 = tl.zeros((BM,), dtype=tl.float32)
    for c in tl.static_range(CHUNKS):
        rn = (pid_c * CHUNKS + c) * BN + tl.arange(0, BN)
        n_ok = rn < N
        msk = m_ok[:, None] & n_ok[None, :]
        y = tl.load(y_ptr + rm[:, None] * sy0 + rn[None, :], mask=msk, other=0.0)
        sg = tl.load(s_ptr + rn[:, None] * 16 + cols[None, :], mask=n_ok[:, None], other=0.0)
        acc = _signed_sums(y, sg, acc, UPCAST, F32)
        yf = y.to(tl.float32)
        sq += tl.sum(yf * yf, axis=1)
        if WRITE:
            if HAS_BIAS:
                yf = yf + tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            yo = _activation(yf, ACT).to(out_ptr.dtype.element_ty)
            tl.store(out_ptr + rm[:, None] * so0 + rn[None, :], yo, mask=msk)
            if OUT_NORM:
                of = tl.where(msk, yo.to(tl.float32), 0.0)
                on2 += tl.sum(of * of, axis=1)
    xn2 = tl.zeros((BM,), dtype=tl.float32)
    if not HAS_XN:
        # This program's slice [pid_c * k_per, (pid_c + 1) * k_per) of the input row.
        xn22 = tl.zeros((BM, BK), dtype=tl.float32)
        k_lo = pid_c * k_per
        for k0 in range(k_lo, tl.minimum(k_lo + k_per, K), BK):
            rk = k0 + tl.arange(0, BK)
            xa = tl.load(x_ptr + rm[:, None] * sx0 + rk[None, :],
                         mask=m_ok[:, None] & (rk < tl.minimum(k_lo + k_per, K))[None, :],
                         other=0.0).to(tl.float32)
            xn22 += xa * xa
        xn2 = tl.sum(xn22, axis=1)
    vals = tl.where(cols[None, :] == 8, sq[:, None], acc)
    vals = tl.where(cols[None, :] == 9, xn2[:, None], vals)
    vals = tl.where(cols[None, :] == 10, on2[:, None], vals)
    wmask = m_ok[:, None] & (cols[None, :] < 11)
    if ONE_PASS:
        _finish(vals, y_ptr, xn_ptr, ratio_ptr, on_ptr, rm, m_ok, cols, N, sy0,
                sigma, c_y, c_z, c_x, HAS_XN, OUT_NORM)
    else:
        wptr = ws_ptr + rm[:, None] * 16 + cols[None, :]
        # Relaxed adds (no fence per instruction); the barrier makes every
        # thread's adds precede the one thread's acq_rel ticket, which publishes
        # them (the CUTLASS semaphore pattern; without the barrier a lagging warp's
        # adds could land after the last program had read the totals).
        tl.atomic_add(wptr, vals, mask=wmask, sem="relaxed")
        tl.debug_barrier()
        ticket = tl.atomic_add(cnt_ptr + pid_m, 1)
        if ticket == n_cb - 1:
            # Everyone else has added (acq_rel ticket).  Read the totals where the
            # atomics live (an atomic add of 0, coherent at L2), then zero them:
            # nobody else touches this row block again in this launch.
            tl.debug_barrier()
            tot = tl.atomic_add(wptr, tl.zeros((BM, 16), dtype=tl.float32), mask=wmask,
                                sem="relaxed")
            tot = tl.where(wmask, tot, 0.0)
            tl.store(wptr, tl.zeros((BM, 16), dtype=tl.float32), mask=wmask)
            tl.store(cnt_ptr + pid_m, 0)
            _finish(tot, y_ptr, xn_ptr, ratio_ptr, on_ptr, rm, m_ok, cols, N, sy0,
                    sigma, c_y, c_z, c_x, HAS_XN, OUT_NORM)


@triton.jit
def _finish(tot, y_ptr, xn_ptr, ratio_ptr, on_ptr, rm, m_ok, cols, N, sy0,
            sigma, c_y, c_z, c_x, HAS_XN: tl.constexpr, OUT_NORM: tl.constexpr):
    """ratio_i = max_v |sigma s_iv - z_iv| / tol_iv from a row block's totals."""
    sq = tl.sum(tl.where(cols[None, :] == 8, tot, 0.0), axis=1)
    if HAS_XN:
        xn2 = tl.load(xn_ptr + rm, mask=m_ok, other=0.0)
    else:
        xn2 = tl.sum(tl.where(cols[None, :] == 9, tot, 0.0), axis=1)
    if OUT_NORM:
        tl.store(on_ptr + rm, tl.sum(tl.where(cols[None, :] == 10, tot, 0.0), axis=1),
                 mask=m_ok)
    vm = m_ok[:, None] & (cols[None, :] < 8)
    zh = tl.load(y_ptr + rm[:, None] * sy0 + N + 2 * cols[None, :], mask=vm,
                 other=0.0).to(tl.float32)
    zl = tl.load(y_ptr + rm[:, None] * sy0 + N + 2 * cols[None, :] + 1, mask=vm,
                 other=0.0).to(tl.float32)
    tol = (c_y * tl.sqrt(sq)[:, None] + c_z * tl.abs(zh) + c_x * tl.sqrt(xn2)[:, None]
           + 1e-30)
    d = tl.abs(tot * sigma - (zh + zl))
    # NaN/Inf anywhere in the row makes d or tol non-finite: infinitely bad.
    r = tl.where((d < float("inf")) & (tol < float("inf")), d / tol, float("inf"))
    r = tl.where(vm, r, 0.0)
    tl.store(ratio_ptr + rm, tl.max(r, axis=1), mask=m_ok)
