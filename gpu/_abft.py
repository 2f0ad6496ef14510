"""Checksums, floating-point tolerance and the global (per-layer) ABFT check.

Algorithm-based fault tolerance for ``Y = X W^T + b`` compares, for every row
``i`` of the output, the sum of the computed outputs ``S_i = sum_j Y_ij`` with
an independently computed checksum ``R_i = X_i . w_sum + sum(b)``, where
``w_sum = sum_j W_j`` (the column-summed weights) is precomputed once.  A
convolution lowered to a GEMM (``M = batch * H_out * W_out``, ``N = C_out``,
``K = C_in * kh * kw``) obeys the same identity per output pixel, with
``w_sum`` summed over output channels.

Tolerance.  Both sides carry rounding error, so ``|S_i - R_i|`` is compared with
a bound built from unit round-offs and the magnitudes involved, never with a
fixed constant::

    scale_i = c_x * ||x_i||_2 + c_y * ||y_i||_2
    c_x     = u_acc * sqrt(K) * (||W||_F + ||w_sum||_2) + u_ck * ||w_sum||_2
    c_y     = u_out + u32 * sqrt(N)

* ``u_acc`` is the unit round-off of the GEMM's accumulation (fp32, or tf32 /
  the input type when the backend is allowed reduced-precision arithmetic),
  and ``sqrt(K)`` is the usual probabilistic growth of accumulated rounding
  error over K terms; ``||x_i|| ||w_j||`` bounds ``sum_k |x_ik w_jk|`` (Cauchy-
  Schwarz), and summing N independent errors gives ``||x_i|| ||W||_F``.
* ``u_out`` covers rounding each output to its storage type (fp16/bf16): N
  independent relative errors sum to about ``u_out * ||y_i||_2``.
* ``u32 * sqrt(N)`` covers the fp32 summation of the N outputs, ``u_ck`` the
  rounding of the checksum operands when the checksum runs in a lower precision.

A row is suspicious when ``|S_i - R_i| > alpha * scale_i`` (or is not finite);
``alpha`` is a safety factor (default 8, i.e. well above the typical ratio of
< 1 seen on clean data) that :func:`dartboost.gpu.calibrate` can raise from
fault-free runs.  A suspicious layer is recomputed before a fault is declared
(see :mod:`dartboost.gpu._protect`).
"""
import math

import numpy as np

from ._lazy import interpreter_active, torch, triton, triton_available

__all__ = ["unit_roundoff", "LayerChecksums", "global_check", "DEFAULT_ALPHA"]

#: Default safety factor on the analytic rounding-error scale.
DEFAULT_ALPHA = 8.0

_U = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -24,
      "float64": 2.0 ** -53, "tf32": 2.0 ** -11}
U32 = _U["float32"]


def unit_roundoff(dtype):
    """Unit round-off of a torch dtype (or of ``"tf32"``).

    Parameters
    ----------
    dtype : torch.dtype or str

    Returns
    -------
    float
    """
    name = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
    try:
        return _U[name]
    except KeyError:
        raise TypeError(f"ABFT supports float16, bfloat16, float32 and float64, not {name}") from None


def accumulation_roundoff(dtype, device_type, conv=False):
    """Round-off of the library GEMM/conv accumulation for inputs of ``dtype``.

    fp16/bf16 GEMMs accumulate in fp32 (protected layers switch off cuBLAS's
    reduced-precision reductions while they run); fp32 on CUDA may use tf32 when
    the user allowed it, in which case the inputs are rounded to tf32.
    """
    name = str(dtype).replace("torch.", "")
    if name == "float64":
        return _U["float64"]
    if name == "float32" and device_type == "cuda":
        allowed = (torch().backends.cudnn.allow_tf32 if conv
                   else torch().backends.cuda.matmul.allow_tf32)
        return _U["tf32"] if allowed else U32
    # fp16/bf16: fp32 accumulation (CUDA: with reduced-precision reductions switched
    # off by the protected layer; CPU: measured, the error does not grow with K).
    return U32


class LayerChecksums:
    """Precomputed weight checksums of one GEMM-like layer.

    Parameters
    ----------
    weight : torch.Tensor
        ``(N, K)`` for linear layers or ``(N, C, kh, kw)`` for convolutions.
    bias : torch.Tensor or None

    Attributes
    ----------
    w_sum : torch.Tensor
        ``(K,)`` float32, column sums of the weight (computed in float64).
    b_sum : torch.Tensor
        ``(1,)`` float32, sum of the bias (0 without bias).
    w_fro, ws_norm : float
        Frobenius norm of the weight and 2-norm of ``w_sum``, for the tolerance.
    """

    def __init__(self, weight, bias):
        t = torch()
        w2 = weight.detach().reshape(weight.shape[0], -1).to(t.float64)
        self.N, self.K = w2.shape
        self.dtype = weight.dtype
        self.device = weight.device
        ws = w2.sum(0)
        self.w_sum = ws.to(t.float32).contiguous()
        self.b_sum = (bias.detach().to(t.float64).sum().reshape(1) if bias is not None
                      else t.zeros(1, dtype=t.float64, device=weight.device)).to(t.float32)
        self.w_fro = float(w2.norm())
        self.ws_norm = float(ws.norm())
        self._w64 = None
        self._tiles = {}
        # Fingerprint to detect later weight corruption during confirmation.
        self.w_sum64 = ws

    def coefficients(self, u_acc, u_out, u_ck=0.0):
        """Return ``(c_x, c_y)`` of the tolerance scale for this layer."""
        c_x = u_acc * math.sqrt(self.K) * (self.w_fro + self.ws_norm) + u_ck * self.ws_norm
        c_y = u_out + U32 * math.sqrt(self.N)
        return c_x, c_y

    def tile_sums(self, weight, block_n, u_acc=U32):
        """Per-output-tile checksums for the fused kernel (cached per block size).

        Returns ``(w_sum_tiles (n_tiles, K) float32, c_x_tiles (n_tiles,) float32)``
        where tile ``t`` covers output columns ``[t*block_n, (t+1)*block_n)``.
        """
        hit = self._tiles.get((block_n, u_acc))
        if hit is not None:
            return hit
        t = torch()
        w2 = weight.detach().reshape(self.N, self.K).to(t.float64)
        n_tiles = -(-self.N // block_n)
        pad = n_tiles * block_n - self.N
        if pad:
            w2 = t.cat([w2, w2.new_zeros(pad, self.K)])
        w3 = w2.reshape(n_tiles, block_n, self.K)
        ws = w3.sum(1)
        c_x = u_acc * math.sqrt(self.K) * (w3.pow(2).sum((1, 2)).sqrt() + ws.norm(dim=1))
        out = (ws.to(t.float32).contiguous(), c_x.to(t.float32).contiguous())
        self._tiles[(block_n, u_acc)] = out
        return out

    def matches(self, weight):
        """True when ``weight`` still has the column sums it was checksummed with."""
        t = torch()
        ws = weight.detach().reshape(self.N, self.K).to(t.float64).sum(0)
        return bool(t.equal(ws, self.w_sum64))


# --------------------------------------------------------------------------------------
# Geometry: a linear layer is a convolution with a 1x1 "image" per row.
# --------------------------------------------------------------------------------------

class ConvGeometry:
    """Shape bookkeeping of a layer lowered to a GEMM (shared by both kernels)."""

    __slots__ = ("is_conv", "M", "N", "K", "C", "H", "W", "OH", "OW", "KH", "KW",
                 "sh", "sw", "ph", "pw", "dh", "dw", "batch")

    @classmethod
    def linear(cls, x2, n_out):
        g = cls()
        g.is_conv = False
        g.M, g.K = x2.shape
        g.N = n_out
        g.batch = g.M
        g.C, g.H, g.W, g.OH, g.OW, g.KH, g.KW = g.K, 1, 1, 1, 1, 1, 1
        g.sh = g.sw = g.dh = g.dw = 1
        g.ph = g.pw = 0
        return g

    @classmethod
    def conv(cls, x, weight, stride, padding, dilation):
        g = cls()
        g.is_conv = True
        nb, c, h, w = x.shape
        n, _, kh, kw = weight.shape
        g.sh, g.sw = stride
        g.ph, g.pw = padding
        g.dh, g.dw = dilation
        g.OH = (h + 2 * g.ph - g.dh * (kh - 1) - 1) // g.sh + 1
        g.OW = (w + 2 * g.pw - g.dw * (kw - 1) - 1) // g.sw + 1
        g.batch, g.C, g.H, g.W, g.KH, g.KW = nb, c, h, w, kh, kw
        g.M, g.N, g.K = nb * g.OH * g.OW, n, c * kh * kw
        return g

    def conv_args(self):
        return (self.C, self.H, self.W, self.OH, self.OW, self.KH, self.KW,
                self.sh, self.sw, self.ph, self.pw, self.dh, self.dw)


def _x_strides(x, geo):
    if geo.is_conv:
        return tuple(x.stride())
    return (x.stride(0), x.stride(1), 0, 0)


def _y_strides(y, geo):
    if geo.is_conv:
        return tuple(y.stride())
    return (y.stride(0), y.stride(1), 0, 0)


# --------------------------------------------------------------------------------------
# Global check: reference (torch, float64) and fused single-launch Triton kernel.
# --------------------------------------------------------------------------------------

def _global_check_torch(x, y, ck, geo, c_x, c_y, conv_params=None):
    """Per-row ratio ``|S - R| / scale`` computed with torch ops in float64.

    Used on CPU and as the oracle in tests; float64 makes its own rounding
    negligible so the ratio reflects the error of the layer computation.
    """
    t = torch()
    F = t.nn.functional
    ws = ck.w_sum.to(t.float64)
    if geo.is_conv:
        x64 = x.to(t.float64)
        stride, padding, dilation = conv_params
        R = F.conv2d(x64, ws.reshape(1, geo.C, geo.KH, geo.KW), None, stride, padding, dilation)
        R = R[:, 0] + ck.b_sum.to(t.float64)
        xn2 = F.conv2d(x64.square().sum(1, keepdim=True),
                       x64.new_ones(1, 1, geo.KH, geo.KW), None, stride, padding, dilation)[:, 0]
        y64 = y.to(t.float64)
        S = y64.sum(1)
        yn = y64.square().sum(1).sqrt()
        xn = xn2.clamp_min(0).sqrt()
        R, S, xn, yn = (v.reshape(-1) for v in (R, S, xn, yn))
    else:
        x64 = x.to(t.float64)
        y64 = y.to(t.float64)
        R = x64 @ ws + ck.b_sum.to(t.float64)
        S = y64.sum(1)
        xn = x64.norm(dim=1)
        yn = y64.norm(dim=1)
    d = (S - R).abs()
    scale = c_x * xn + c_y * yn + 1e-300
    # A non-finite residual, or a norm that overflows (a flipped exponent), is
    # reported as infinitely bad; recomputation then decides whether it is real.
    ok = t.isfinite(d) & t.isfinite(scale)
    ratio = t.where(ok, d / scale, t.full_like(d, float("inf")))
    return ratio.to(t.float32)


def _global_check_triton(x, y, ck, geo, c_x, c_y):
    from ._kernels import abft_global_check_kernel
    t = torch()
    ratio = t.empty(geo.M, dtype=t.float32, device=x.device)
    if interpreter_active():
        bm, bk, bn = 32, 64, 64
    elif geo.M <= 64:
        # Few rows: one program streams whole rows in wide blocks, so the pass is a
        # handful of dependent loads rather than K/128 + N/128 of them.
        bm, bk, bn = 2, 1024, 1024
    else:
        bm, bk, bn = (16, 256, 256) if geo.M >= 4096 else (8, 256, 256)
    bk = min(bk, max(16, triton().next_power_of_2(geo.K)))
    bn = min(bn, max(16, triton().next_power_of_2(geo.N)))
    grid = (triton().cdiv(geo.M, bm),)
    abft_global_check_kernel[grid](
        x, y, ck.w_sum, ck.b_sum, ratio, geo.M, geo.N, geo.K, *geo.conv_args(),
        *_x_strides(x, geo), *_y_strides(y, geo), float(c_x), float(c_y),
        IS_CONV=geo.is_conv, BM=bm, BK=bk, BN=bn, num_warps=4)
    return ratio


def use_triton_for(tensor, backend):
    """Whether a tensor's checks run through Triton under ``backend``."""
    if backend == "torch":
        return False
    ok = triton_available() and (tensor.is_cuda or interpreter_active())
    if backend == "triton" and not ok:
        raise RuntimeError(
            "backend='triton' needs a CUDA tensor, or TRITON_INTERPRET=1 set before triton "
            "is imported for CPU tensors")
    return ok


def global_check(x, y, ck, geo, c_x, c_y, backend="auto", conv_params=None):
    """Per-row check ratios ``|S_i - R_i| / scale_i`` of one layer call.

    Parameters
    ----------
    x : torch.Tensor
        Layer input, ``(M, K)`` or ``(B, C, H, W)``.
    y : torch.Tensor
        Layer output, ``(M, N)`` or ``(B, N, OH, OW)``.
    ck : LayerChecksums
    geo : ConvGeometry
    c_x, c_y : float
        Tolerance coefficients (:meth:`LayerChecksums.coefficients`).
    backend : {'auto', 'triton', 'torch'}

    Returns
    -------
    ratio : torch.Tensor of shape (M,), float32, on the input's device
        ``inf`` where the row is not finite.
    """
    if use_triton_for(x, backend):
        return _global_check_triton(x, y, ck, geo, c_x, c_y)
    return _global_check_torch(x, y, ck, geo, c_x, c_y, conv_params)


def as_numpy_ratio(r):
    """Host copy of a ratio tensor (used by reports and tests)."""
    return np.asarray(r.detach().float().cpu())
