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
* accumulates per row the signed sums ``s_iv = sum_j r_vj y_ij`` of the
  *rounded* pre-activation outputs (tensor-core dot against the ±1 signs, exact
  products), ``||y_i||^2`` and ``||x_i||^2``, and the checksum columns
  ``z_iv = x_i . (hi_v + lo_v) + sigma r_v^T b`` kept in fp32;
* the column tiles meet through atomics in a small workspace; the last tile of a
  row block compares ``sigma s_iv`` with ``z_iv`` and writes one ratio per row.

No extra launch, no second read of the output; the only extra DRAM traffic is
the 16 checksum rows (``16 / N`` of the weight).

Tolerance per row ``i`` and vector ``v`` (``u`` the storage unit round-off)::

    |sigma s_iv - z_iv| <= alpha (c_y ||y_i|| + c_z |z_iv| + c_x ||x_i|| + c_b)

with ``c_y`` and ``c_x`` those of the fused scheme (storage rounding of ``y``,
fp32 sums; fp32 accumulation over ``K`` of the outputs and of the checksum rows,
hi/lo representation error), ``c_z = 2 u32`` (``z`` is never rounded to the
storage type here) and ``c_b = (u^2 + 2 u32) max_v |sigma r_v^T b|`` (the
bias checksum's hi/lo representation and its fp32 addition).

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
    """``(c_z, c_b)`` of the stream check (module docstring); ``c_y``, ``c_x`` are aug's.

    Computed once per augmented weight (cached on it: no device sync per call).
    """
    hit = getattr(aug, "_stream_tol", None)
    if hit is not None:
        return hit
    t = torch()
    from ._abft import unit_roundoff
    u = unit_roundoff(aug.dtype)
    c_z = 2 * _U32
    c_b = 0.0
    if aug.gemm_bias is not None:
        bz = aug.gemm_bias[aug.N:].to(t.float64)
        bc = bz[0::2] + bz[1::2]
        c_b = (u * u + 2 * _U32) * float(bc.abs().max())
    aug._stream_tol = (c_z, c_b)
    return c_z, c_b


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
        as multiplied with the outputs (not the checksum rows).
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
    c_z, c_b = stream_tolerance(aug)
    mode, irow, icol, ibit, ik = inject if inject is not None else (0, -1, -1, 0, -1)
    interp = interpreter_active()
    kw = {} if interp else {"num_warps": warps, "num_stages": stages}
    bias = aug.gemm_bias
    grid = (-(-(N + 16) // bn), split, -(-M // bm))
    abft_stream_kernel[grid](
        x2, aug.gemm_weight, bias if bias is not None else aug.gemm_weight, aug.signs, out,
        part, ws, cnt, ratio, M, N, K, kb_per, x2.stride(0), out.stride(0),
        float(aug.sigma), float(aug.c_y), float(c_z), float(aug.c_x), float(c_b),
        int(irow), int(icol), int(ibit), int(ik),
        HAS_BIAS=bias is not None, ACT=act, SPLIT=split, INJECT=int(mode), UPCAST=interp,
        F32=x2.dtype == t.float32, IEEE=x2.dtype == t.float32 and not aug.tf32,
        BM=bm, BN=bn, BK=bk, **kw)
    return out, ratio, bk


def stream_ratios_reference(x2, out_pre, aug):
    """Per-row ratios of the stream check in float64 from the rounded pre-activation."""
    t = torch()
    N = aug.N
    y = out_pre.to(t.float64)
    s = (y @ aug.signs64.t().to(y.device)) * aug.sigma
    w = aug.gemm_weight.to(t.float64)
    z_rows = x2.to(t.float64) @ w[N:].t()
    if aug.gemm_bias is not None:
        z_rows = z_rows + aug.gemm_bias[N:].to(t.float64)
    z = z_rows[:, 0::2] + z_rows[:, 1::2]
    c_z, c_b = stream_tolerance(aug)
    tol = (aug.c_y * y.norm(dim=1, keepdim=True) + c_z * z.abs()
           + aug.c_x * x2.to(t.float64).norm(dim=1, keepdim=True) + c_b + 1e-30)
    d = (s - z).abs()
    r = t.where(t.isfinite(d) & t.isfinite(tol), d / tol, t.full_like(d, float("inf")))
    return r.amax(1).to(t.float32) if r.shape[0] else r.new_zeros(0, dtype=t.float32)


def stream_linear_reference(x2, aug, activation=None, corrupt=None):
    """Torch emulation of :func:`stream_linear` (CPU path without Triton, oracle).

    ``corrupt`` is applied in place to the rounded pre-activation output before
    it is checked.
    """
    from ._augmented import apply_activation
    t = torch()
    N = aug.N
    w = aug.gemm_weight[:N]
    b = aug.gemm_bias[:N] if aug.gemm_bias is not None else None
    pre = (t.nn.functional.linear(x2.to(t.float32), w.to(t.float32),
                                  None if b is None else b.to(t.float32))).to(x2.dtype)
    if corrupt is not None:
        corrupt(pre)
    return apply_activation(pre, activation), stream_ratios_reference(x2, pre, aug)
