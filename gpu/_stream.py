"""Weight-streaming checked GEMM: the ABFT check inside the GEMM's own epilogue.

For small batches a linear layer is memory-bound: its time is one read of the
weight (32 MiB for a 4096 x 4096 fp16 layer, ~8 us on an H200), and any extra
dependent check kernel after the library GEMM costs a large fraction of it.  The
``'stream'`` path replaces the cuBLAS GEMM + check pass with *one* Triton kernel
(:func:`dartboost.gpu._kernels_stream.abft_stream_kernel`) that streams the
*augmented* weight of :class:`dartboost.gpu._augmented.AugmentedWeight` once
(the ``N`` weight rows and the 16 hi/lo checksum rows ``c_v = sigma r_v^T W``,
split-K when the layer has too few column blocks to fill the GPU) and, in its
epilogue,

* adds the bias (the augmented bias holds ``sigma r_v^T b`` for the checksum
  columns), rounds the outputs to the storage type, applies the activation and
  writes them;
* accumulates per row the signed sums ``s_iv = sum_j r_vj a_ij`` of the fp32
  pre-activation values ``a_ij`` *before* they are rounded (tensor-core dots of
  three tf32-exact parts against the ±1 signs: exact products), ``||a_i||^2``
  and ``||x_i||^2``, and the checksum columns
  ``z_iv = x_i . (hi_v + lo_v) + sigma r_v^T b`` kept in fp32;
* checks that every rounded output ``y_ij`` is a correct rounding of ``a_ij``:
  ``|y_ij - a_ij| <= ulp(y_ij) / 2`` (``y_ij == a_ij`` for fp32 outputs);
* the column tiles meet through atomics in a small workspace; the last tile of a
  row block compares ``sigma s_iv`` with ``z_iv`` and writes one ratio per row
  (infinite where an output was wrongly rounded).

Why two parts: summing the *rounded* outputs (the first version) puts their
storage rounding, ``u ||y_i||``, into the tolerance.  With bf16 (``u = 2^-8``)
that hid GEMM errors up to ~3% of ``||y_i||`` -- a third of one output's size on
a 512-wide layer (H200 run 2: an accumulator flip of 0.15 on outputs of ~0.4
went undetected, ratio 2.3).  Summed before rounding, the GEMM check carries
fp32 rounding only; the rounding step is checked exactly, element by element.

No extra launch, no second read of the output; the only extra DRAM traffic is
the 16 checksum rows (``16 / N`` of the weight).

Tolerance per row ``i`` and vector ``v``::

    |sigma s_iv - z_iv| <= alpha (c_a ||a_i|| + c_z |z_iv| + c_x ||x_i|| + c_b)

with ``c_a = sigma u32 (1 + sqrt(N))`` (the fp32 bias addition and the fp32 sum
of ``N`` terms: no storage rounding, which is checked exactly),
``c_x = u32 sqrt(K) (sigma ||W||_F + max_v ||c_v||) + max_v ||c_v - hi_v - lo_v||``
(fp32 accumulation over ``K`` of the outputs and of the checksum rows, and the
checksum rows' *exact* hi/lo representation error, at most ``u^2 ||c_v||``),
``c_z = 2 u32`` (``z`` is never rounded to the storage type here) and
``c_b = max_v |bc_v - bhi_v - blo_v| + 2 u32 max_v |bc_v|`` (the bias
checksum ``bc_v = sigma r_v^T b``: its hi/lo representation and its fp32
addition).

What it sees: faults in the accumulation, in the input fragments the outputs are
multiplied with, in the bias/rounding epilogue, and weights changed after the
checksums were taken.  A value corrupted after it was stored (or the activation
itself) is outside it, as for the tile scheme.
"""
import math

from ._augmented import ACTIVATIONS
from ._lazy import interpreter_active, torch

__all__ = ["stream_linear", "stream_config", "stream_workspace", "stream_tolerance"]

_U32 = 2.0 ** -24


def _pow2_at_least(v, lo):
    return max(lo, 1 << max(0, math.ceil(math.log2(max(v, 1)))))


def stream_config(M, N, K, element_size, sms=132):
    """Tiling ``(BM, BN, BK, SPLIT, num_warps, num_stages)`` of the stream kernel.

    ``BN >= BM`` keeps the input's re-reads from L2 (one per column tile) no
    larger than the weight's own traffic; split-K raises the number of programs
    to about two per SM when the layer has few column tiles, each program keeping
    at least two K blocks.
    """
    if interpreter_active():
        bm, bn, bk = 16, 16, 32
        n_nb = -(-(N + 16) // bn)
        split = 2 if K > 2 * bk and n_nb * -(-M // bm) < 4 else 1
        return bm, bn, bk, split, 4, 1
    bm = min(64, _pow2_at_least(M, 16))
    # At least 32 columns: on the H200 (run 1) 64-column tiles streamed the weight
    # about twice as fast as 16-column ones, and fewer programs mean fewer
    # epilogues (each ends in two tickets).
    bn = max(32, bm) if element_size <= 2 else max(32, bm // 2)
    if element_size <= 2:
        bk = 256 if bn <= 32 else 128
    else:
        bk = 128 if bm <= 16 else 64
    bk = min(bk, _pow2_at_least(K, 16))
    programs = -(-(N + 16) // bn) * -(-M // bm)
    split = max(1, min(8, -(-2 * sms // programs), K // (2 * bk)))
    split = 1 << (split.bit_length() - 1)  # a power of two: few compiled variants
    # Pipeline depth: at most ~100 KB of shared memory per program, so two
    # programs fit on an SM (228 KB on Hopper) even for the widest tiles.
    stages = max(2, min(4, 102400 // ((bm + bn) * bk * element_size)))
    return bm, bn, bk, split, 4, stages


def stream_workspace(M, N, split, device):
    """Zeroed ``(M, 32)`` fp32 check workspace, tickets, and split-K partials.

    The kernel returns the workspace and the tickets to zero, so one set serves
    every later call with the same shape on one stream (and graph replays).
    """
    t = torch()
    ws = t.zeros(M, 32, dtype=t.float32, device=device)
    # Tickets: per row block, one per column tile (split-K) and one for the check.
    cnt = t.zeros(-(-M // 16) * (-(-(N + 16) // 16) + 1), dtype=t.int32, device=device)
    part = (t.empty(split, M, N + 16, dtype=t.float32, device=device) if split > 1
            else ws)
    return ws, cnt, part


def stream_tolerance(aug):
    """``(c_a, c_x, c_z, c_b)`` of the stream check (module docstring).

    Computed once per augmented weight (cached on it: no device sync per call).
    """
    hit = getattr(aug, "_stream_tol", None)
    if hit is not None:
        return hit
    c_a = aug.sigma * _U32 * (1.0 + math.sqrt(aug.N))
    c_z = 2 * _U32
    # fp32 accumulation over K, plus the checksum rows' exact representation
    # error ||c_v - hi_v - lo_v|| (Cauchy-Schwarz with ||x_i||).
    c_x = aug.c_acc + aug.c_rep
    c_b = 0.0
    if aug.gemm_bias is not None:
        c_b = aug.b_rep + 2 * _U32 * aug.b_max
    aug._stream_tol = (c_a, c_x, c_z, c_b)
    return c_a, c_x, c_z, c_b


def stream_linear(x2, aug, activation=None, *, inject=None, workspace=None, config=None):
    """Checked ``act(x2 @ W^T + b)`` in one weight-streaming Triton kernel.

    Parameters
    ----------
    x2 : (M, K) CUDA tensor (CPU under ``TRITON_INTERPRET=1``), unit stride in K.
    aug : AugmentedWeight
        Its ``gemm_weight`` (and ``gemm_bias``) is what the kernel reads.
    activation : str or None
        Key of :data:`dartboost.gpu._augmented.ACTIVATIONS`.
    inject : tuple, optional
        ``(mode, row, col, bit, k_block)`` fault to inject (testing only): mode 1
        flips a bit of the fp32 accumulator of output ``(row, col)`` after K block
        ``k_block``, 2 of the rounded output, 3 of input element ``(row, col)``
        as multiplied with the outputs (not the checksum rows); mode 4 adds a
        sixth element, a float, to the finished fp32 accumulator of ``(row, col)``
        (``bit`` and ``k_block`` unused).
    workspace : tuple, optional
        :func:`stream_workspace` of this shape and split (allocated if omitted).
    config : tuple, optional
        Overrides :func:`stream_config`.

    Returns
    -------
    out : (M, N) tensor
    ratio : (M,) float32 tensor
        Largest residual / tolerance ratio over the check vectors, per row.
    block_k : int
        K block of the kernel (the accumulator-fault emulation's unit).
    """
    from ._kernels_stream import abft_stream_kernel
    t = torch()
    M, K = x2.shape
    N = aug.N
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    act = ACTIVATIONS[activation]
    from ._triton_gemm import _sms
    bm, bn, bk, split, warps, stages = config or stream_config(M, N, K, x2.element_size(),
                                                              _sms(x2.device))
    out = t.empty(M, N, dtype=x2.dtype, device=x2.device)
    ratio = t.empty(M, dtype=t.float32, device=x2.device)
    if M == 0:
        return out, ratio, bk
    if workspace is None:
        workspace = stream_workspace(M, N, split, x2.device)
    ws, cnt, part = workspace
    kb_per = -(-(-(-K // bk)) // split)  # K blocks per split
    c_a, c_x, c_z, c_b = stream_tolerance(aug)
    mode, irow, icol, ibit, ik, ival = (tuple(inject) + (0.0,))[:6] if inject is not None \
        else (0, -1, -1, 0, -1, 0.0)
    interp = interpreter_active()
    kw = {} if interp else {"num_warps": warps, "num_stages": stages}
    bias = aug.gemm_bias
    grid = (-(-(N + 16) // bn), split, -(-M // bm))
    abft_stream_kernel[grid](
        x2, aug.gemm_weight, bias if bias is not None else aug.gemm_weight, aug.signs, out,
        part, ws, cnt, ratio, M, N, K, kb_per, x2.stride(0), out.stride(0),
        float(aug.sigma), float(c_a), float(c_z), float(c_x), float(c_b),
        int(irow), int(icol), int(ibit), int(ik), float(ival),
        HAS_BIAS=bias is not None, ACT=act, SPLIT=split, INJECT=int(mode), UPCAST=interp,
        F32=x2.dtype == t.float32, IEEE=x2.dtype == t.float32 and not aug.tf32,
        BM=bm, BN=bn, BK=bk, **kw)
    return out, ratio, bk


def stream_ratios_reference(x2, pre, aug, out_pre=None):
    """Per-row ratios of the stream check in float64.

    Parameters
    ----------
    x2 : (M, K) tensor
    pre : (M, N) tensor
        The pre-activation values before rounding to the storage type (the
        kernel's fp32 accumulator, bias included).
    aug : AugmentedWeight
    out_pre : (M, N) tensor, optional
        The rounded pre-activation outputs; a row with an output that is not a
        correct rounding of ``pre`` gets an infinite ratio.
    """
    t = torch()
    N = aug.N
    a = pre.to(t.float64)
    s = (a @ aug.signs64.t().to(a.device)) * aug.sigma
    w = aug.gemm_weight.to(t.float64)
    z_rows = x2.to(t.float64) @ w[N:].t()
    if aug.gemm_bias is not None:
        z_rows = z_rows + aug.gemm_bias[N:].to(t.float64)
    z = z_rows[:, 0::2] + z_rows[:, 1::2]
    c_a, c_x, c_z, c_b = stream_tolerance(aug)
    tol = (c_a * a.norm(dim=1, keepdim=True) + c_z * z.abs()
           + c_x * x2.to(t.float64).norm(dim=1, keepdim=True) + c_b + 1e-30)
    d = (s - z).abs()
    r = t.where(t.isfinite(d) & t.isfinite(tol), d / tol, t.full_like(d, float("inf")))
    r = r.amax(1).to(t.float32) if r.shape[0] else r.new_zeros(0, dtype=t.float32)
    if out_pre is not None and r.shape[0]:
        wrong = ~((out_pre.to(t.float64) - a).abs() <= half_ulp(out_pre)).all(1)
        r = t.where(wrong, t.full_like(r, float("inf")), r)
    return r


def half_ulp(y):
    """Half a unit in the last place of each element of ``y`` (float64; 0 for fp32).

    The bound of a correct round-to-nearest to ``y``'s dtype, as the stream
    kernel applies it (bf16 clamped below at ``2^-126``).
    """
    t = torch()
    if y.dtype in (t.float32, t.float64):
        return t.zeros(y.shape, dtype=t.float64, device=y.device)
    bits = y.contiguous().view(t.int16).to(t.int32)
    if y.dtype == t.float16:
        e = ((bits >> 10) & 0x1F).clamp(min=1) - 26
    else:
        e = (((bits >> 7) & 0xFF).clamp(min=1) - 8).clamp(min=1) - 127
    return t.ldexp(t.ones(y.shape, dtype=t.float64, device=y.device), e.to(t.float64))


def stream_linear_reference(x2, aug, activation=None, corrupt=None, corrupt_acc=None):
    """Torch emulation of :func:`stream_linear` (CPU path without Triton, oracle).

    ``corrupt_acc`` is applied in place to the fp32 pre-activation values before
    they are rounded and checked (accumulator and input faults), ``corrupt`` to
    the rounded pre-activation output (output faults).
    """
    from ._augmented import apply_activation
    t = torch()
    N = aug.N
    w = aug.gemm_weight[:N]
    b = aug.gemm_bias[:N] if aug.gemm_bias is not None else None
    acc = t.nn.functional.linear(x2.to(t.float32), w.to(t.float32),
                                 None if b is None else b.to(t.float32))
    if corrupt_acc is not None:
        corrupt_acc(acc)
    pre = acc.to(x2.dtype, copy=True)
    if corrupt is not None:
        corrupt(pre)
    return apply_activation(pre, activation), stream_ratios_reference(x2, acc, aug, pre)
