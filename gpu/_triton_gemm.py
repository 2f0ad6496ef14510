"""Tile-level ABFT: a Triton GEMM (and implicit-GEMM convolution) that checks itself.

Each program computes one ``BM x BN`` output tile ``Y_t = A_t B_t`` (A = the
layer input, or the implicit im2col of a convolution input; B = the weight,
``(K, N)``).  While it streams the A fragments through the K loop it also
accumulates, in fp32 on the vector units,

* ``chk_i = sum_k A_ik * wsum_t[k]`` with ``wsum_t`` the weight columns of this
  tile summed (precomputed once per layer and tile width), and
* ``||A_i||^2`` for the tolerance.

After the tile is rounded to the output type it compares ``sum_j Y_ij`` with
``chk_i + sum_j b_j`` against ``c_x,t ||A_i|| + c_y ||Y_i||`` (see
:mod:`dartboost.gpu._abft`) and writes one float per tile: the largest
residual-to-tolerance ratio of its rows.  The only extra global-memory traffic is
that float and the ``K`` checksums of the tile; no extra launch is needed.

Faults in the tensor-core accumulation, in the epilogue (bias, rounding) and in
the A/B fragments as loaded are caught; a flip that happens to ``Y`` after it was
stored is outside what a tile can see (memory is ECC-protected on data-centre
GPUs; the global scheme reads ``Y`` back and would see it).

Under ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (used by the CI
tests); there the operands are upcast to fp32 before ``tl.dot`` because the
interpreter multiplies bf16 bit patterns as integers.
"""
import math

from ._abft import _x_strides, _y_strides, accumulation_roundoff, unit_roundoff
from ._lazy import interpreter_active, torch, triton

__all__ = ["tile_gemm", "tile_gemm_reference", "pick_config"]

#: Fault-injection modes understood by the kernel (see dartboost.gpu._faults).
INJECT_NONE, INJECT_ACC, INJECT_OUT, INJECT_A = 0, 1, 2, 3


def _pow2_at_least(v, lo):
    return max(lo, 1 << max(0, math.ceil(math.log2(max(v, 1)))))


def pick_config(M, N, K, is_conv, device_sms=132):
    """Tile shape ``(BM, BN, BK, num_warps, num_stages)`` for a problem size.

    Small M (memory-bound, e.g. batch-1 layers) uses thin 16-row tiles and narrow
    columns so that enough programs stream the weight in parallel; large M uses
    128x128 tensor-core tiles.  Under the interpreter, big tiles mean fewer
    (slow, Python-level) programs.
    """
    if interpreter_active():
        return (min(32, _pow2_at_least(M, 16)), min(32, _pow2_at_least(N, 16)),
                min(32, _pow2_at_least(K, 16)), 4, 1)
    # One warpgroup (4 warps) per program.  (Before the checksum got its own load
    # of the A fragment, Triton 3.6 produced wrong tiles for 128x128/8-warp and
    # 64x128/4-warp configurations on an H200 -- caught by the kernel's own
    # check; see benchmarks/results/abft_h200_v0_quick.log.)
    warps = 4
    if M <= 16:
        bm, bk, stages = 16, 128, 4
        bn = 64 if triton().cdiv(N, 64) >= device_sms else 32
    elif M <= 64:
        bm = _pow2_at_least(M, 32)
        bk, stages = (128 if bm == 32 else 64), 4
        bn = 64 if triton().cdiv(N, 64) * triton().cdiv(M, bm) >= device_sms else 32
    elif M <= 512:
        bm, bn, bk, stages = 64, 128, 64, 4
    else:
        bm, bn, bk, stages = 128, 128, 64, 3
    if is_conv:
        bk = min(bk, 64)
    bk = min(bk, _pow2_at_least(K, 16))
    bn = min(bn, _pow2_at_least(N, 16))
    return bm, bn, bk, warps, stages


_SM_COUNT = {}


def _sms(device):
    if device.type != "cuda":
        return 132
    idx = device.index if device.index is not None else torch().cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch().cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def tile_gemm(x, weight, bias, ck, geo, out=None, inject=None, config=None, check=True):
    """Run the checked Triton GEMM / implicit-GEMM convolution.

    Parameters
    ----------
    x : torch.Tensor
        ``(M, K)`` (linear) or ``(B, C, H, W)`` (convolution), fp16, bf16 or fp32.
    weight : torch.Tensor
        ``(N, K)`` or ``(N, C, kh, kw)``, same dtype and device as ``x``.
    bias : torch.Tensor or None
    ck : LayerChecksums
    geo : ConvGeometry
    out : torch.Tensor, optional
        Preallocated output.
    inject : tuple, optional
        ``(mode, row, col, bit, k_step)`` fault to inject (testing only).
    config : tuple, optional
        Overrides :func:`pick_config`.
    check : bool, default=True
        ``False`` runs the same GEMM without the checksum work (benchmark
        baseline; ``ratio`` is then left unwritten).

    Returns
    -------
    y : torch.Tensor
        ``(M, N)`` or ``(B, N, OH, OW)``.
    ratio : torch.Tensor
        ``(ceil(M/BM) * ceil(N/BN),)`` float32, largest row ratio of each tile.
    block_n : int
        Tile width used (for locating faulty tiles).
    """
    from ._kernels import abft_tile_gemm_kernel
    t = torch()
    bm, bn, bk, warps, stages = config or pick_config(geo.M, geo.N, geo.K, geo.is_conv,
                                                      _sms(x.device))
    if out is None:
        shape = (geo.batch, geo.N, geo.OH, geo.OW) if geo.is_conv else (geo.M, geo.N)
        out = t.empty(shape, dtype=x.dtype, device=x.device)
    wsum, c_x = ck.tile_sums(weight, bn)
    n_pm, n_pn = -(-geo.M // bm), -(-geo.N // bn)
    ratio = t.empty(n_pm * n_pn, dtype=t.float32, device=x.device)
    w2 = weight.reshape(geo.N, geo.K)
    c_y = unit_roundoff(x.dtype) + 2.0 ** -24 * math.sqrt(bn)
    mode, irow, icol, ibit, ik = inject if inject is not None else (0, -1, -1, 0, -1)
    interp = interpreter_active()
    kwargs = {} if interp else {"num_warps": warps, "num_stages": stages}
    abft_tile_gemm_kernel[(n_pm * n_pn,)](
        x, w2, bias if bias is not None else w2, out, wsum, c_x, ratio,
        geo.M, geo.N, geo.K, *geo.conv_args(),
        *_x_strides(x, geo), w2.stride(0), w2.stride(1), *_y_strides(out, geo),
        float(c_y), int(irow), int(icol), int(ibit), int(ik),
        IS_CONV=geo.is_conv, HAS_BIAS=bias is not None, INJECT=int(mode),
        UPCAST=interp, IEEE_F32=(x.dtype == t.float32), CHECK=bool(check),
        ACC2D=bm * bk <= 4096,
        BM=bm, BN=bn, BK=bk, GROUP_M=8, **kwargs)
    return out, ratio, bn


def tile_gemm_reference(x, weight, bias, ck, geo, block_m=32, block_n=32, conv_params=None):
    """Tile-level ABFT emulated with torch ops (CPU path and test oracle).

    Computes the layer with torch, then the per-tile ratios exactly as the
    kernel defines them (same tiles, same tolerance), in float64.

    Returns
    -------
    y, ratio, block_n : as :func:`tile_gemm`
    """
    F = torch().nn.functional
    if geo.is_conv:
        stride, padding, dilation = conv_params
        y = F.conv2d(x, weight, bias, stride, padding, dilation)
    else:
        y = F.linear(x, weight, bias)
    ratio = tile_ratios_reference(x, y, weight, bias, ck, geo, block_m, block_n, conv_params)
    return y, ratio, block_n


def tile_ratios_reference(x, y, weight, bias, ck, geo, block_m=32, block_n=32,
                          conv_params=None):
    """Per-tile ratios (as the fused kernel defines them) of a given output ``y``."""
    t = torch()
    F = t.nn.functional
    if geo.is_conv:
        stride, padding, dilation = conv_params
        cols = F.unfold(x.to(t.float64), (geo.KH, geo.KW), dilation, padding, stride)
        a = cols.transpose(1, 2).reshape(geo.M, geo.K)
        y2 = y.permute(0, 2, 3, 1).reshape(geo.M, geo.N)
    else:
        a = x.to(t.float64)
        y2 = y
    wsum, c_x = ck.tile_sums(weight, block_n, accumulation_roundoff(x.dtype, x.device.type,
                                                                    geo.is_conv))
    n_pm, n_pn = -(-geo.M // block_m), -(-geo.N // block_n)
    c_y = unit_roundoff(x.dtype) + 2.0 ** -24 * math.sqrt(block_n)
    bias64 = (bias.to(t.float64) if bias is not None
              else t.zeros(geo.N, dtype=t.float64, device=x.device))
    ratios = t.empty(n_pm, n_pn, dtype=t.float64, device=x.device)
    y64 = y2.to(t.float64)
    xn = a.norm(dim=1)
    for j in range(n_pn):
        cs = slice(j * block_n, min(geo.N, (j + 1) * block_n))
        R = a @ wsum[j].to(t.float64) + bias64[cs].sum()
        yt = y64[:, cs]
        d = (yt.sum(1) - R).abs()
        scale = float(c_x[j]) * xn + c_y * yt.norm(dim=1) + 1e-300
        r = t.where(t.isfinite(d) & t.isfinite(scale), d / scale, t.full_like(d, float("inf")))
        pad = n_pm * block_m - geo.M
        if pad:
            r = t.cat([r, r.new_zeros(pad)])
        ratios[:, j] = r.reshape(n_pm, block_m).amax(1)
    return ratios.reshape(-1).to(t.float32)
