"""Augmented-weight ABFT: the library GEMM computes the outputs *and* their checksums.

The ``'fused'`` scheme keeps cuBLAS/cuBLASLt for the matrix product.  Once per
layer it appends ``2 * N_VECTORS`` checksum rows to the weight::

    W_aug = [ W ; hi_0 ; lo_0 ; ... ; hi_7 ; lo_7 ]          (N + 16, K)
    c_v   = sigma * sum_j r_vj * w_j        (float64, from W as the GEMM sees it)
    hi_v  = round(c_v),  lo_v = round(c_v - hi_v)           (the layer's dtype)

with ``r_v`` random *balanced* ±1 vectors (exactly half +1 over the ``N``
outputs) and ``sigma`` the power of two nearest ``1/sqrt(N)``.  One GEMM
``Y_aug = X W_aug^T`` then yields the outputs ``Y`` and, in its last 16 columns,
``z_v = x . (hi_v + lo_v)``, which must equal ``sigma * sum_j r_vj y_j`` up to
rounding.  Design choices, each answering a weakness of an all-ones checksum:

* **±1 random signs** make the check sensitive to values swapped within a row
  (a swap of outputs ``a, b`` escapes vector ``v`` only if ``r_va = r_vb``; with
  8 vectors, ``1/256`` of the pairs escape all of them), and *balanced* signs
  cancel a common offset of the outputs exactly instead of summing it ``N``
  times.
* **hi/lo split** of the checksum rows: stored in fp16/bf16 a checksum row loses
  ``u * |c|``; the split keeps it to ``u^2 * |c|`` so the GEMM's checksum columns
  are as precise as fp32 although they live in the layer's dtype.
* **sigma ~ 1/sqrt(N)** keeps the checksum columns at the magnitude of one output
  (no fp16 overflow where an all-ones sum of ``N`` outputs would overflow), and
  being a power of two it costs no rounding.
* **tf32**: when fp32 GEMMs may use tf32 the GEMM's operand is the weight rounded
  to tf32 (a copy), so the checksum rows describe exactly what the tensor cores
  multiply; the input's own tf32 rounding is common to outputs and checksums.

The comparison runs in fp32 in *one* Triton launch per layer call
(:func:`dartboost.gpu._kernels.abft_check_kernel`): the elementwise pass that
applies bias and activation also accumulates ``sum_j r_vj y_ij`` with a
tensor-core dot against the ±1 signs (exact products, fp32 sums; fp32 outputs
are split into three tf32-exact parts), ``||y_i||^2`` and ``||out_i||^2``; the
column blocks of a row meet through atomics in a small workspace and the last
one to arrive reads the 16 checksum columns and writes one ratio per row.
``||x_i||`` comes from the check of the layer that produced ``x`` (it wrote
``||out||^2`` for free) or, for a network's first layer, from the same launch
reading ``x`` once.  For layers without an activation the GEMM also adds the
bias (cuBLASLt epilogue) and the check runs on a side stream, off the critical
path.

Tolerance per row ``i`` and vector ``v`` (``u`` = unit round-off of the storage
type, ``u32`` of fp32, ``u_acc`` of the GEMM accumulation)::

    |sigma * s_iv - z_iv| <= alpha * (c_y ||y_i|| + c_z |hi-part of z_iv| + c_x ||x_i||)
    c_y = sigma * (u + u32 * sqrt(N))      storage rounding of y, fp32 sum of N terms
    c_z = u + u32                          storage rounding of the checksum column
    c_x = u_acc * sqrt(K) * (sigma ||W||_F + max_v ||c_v||) + u^2 * max_v ||c_v||
"""
import math

from ._lazy import interpreter_active, torch

__all__ = ["N_VECTORS", "AUG_ROWS", "ACTIVATIONS", "AugmentedWeight", "check_signs",
           "round_tf32", "tf32_enabled", "fused_linear", "fused_ratios_reference",
           "check_workspace", "check_on_side", "SIDE_CHECK_BYTES"]

#: Independent ±1 check vectors per layer.
N_VECTORS = 8
#: Rows appended to the weight (a hi and a lo row per vector).
AUG_ROWS = 2 * N_VECTORS
#: Activations the fused epilogue applies (name -> kernel code).
ACTIVATIONS = {None: 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4}
_U32 = 2.0 ** -24
_SEED = 0x5EEDABF  # fixed: checksums are reproducible


def check_signs(n, n_vectors=N_VECTORS, seed=_SEED):
    """Balanced random ±1 vectors, ``(n_vectors, n)`` float64 on the CPU.

    Each row is a random permutation of ``ceil(n/2)`` ones and ``floor(n/2)``
    minus ones, so the sum of a row is 0 (or 1 for odd ``n``).
    """
    t = torch()
    g = t.Generator().manual_seed(int(seed) + int(n))
    base = t.ones(n, dtype=t.float64)
    base[n - n // 2:] = -1.0
    return t.stack([base[t.randperm(n, generator=g)] for _ in range(n_vectors)])


def sign_scale(n):
    """Power of two closest to ``1/sqrt(n)`` from above (exact scaling)."""
    return 2.0 ** -math.floor(0.5 * math.log2(max(int(n), 1)))


def round_tf32(x):
    """Round an fp32 tensor to tf32 (10 mantissa bits), nearest-even, as fp32."""
    t = torch()
    iv = x.detach().to(t.float32).contiguous().view(t.int32)
    # Add half an ulp of tf32 (plus the tie-to-even bit) and clear the 13 low bits.
    lsb = (iv >> 13) & 1
    r = ((iv + 0x0FFF + lsb) & ~0x1FFF)
    finite = t.isfinite(x.detach().to(t.float32))
    return t.where(finite, r.view(t.float32), x.detach().to(t.float32))


def tf32_enabled(dtype, device):
    """Whether an fp32 GEMM on ``device`` may run in tf32."""
    t = torch()
    if dtype != t.float32 or getattr(device, "type", device) != "cuda":
        return False
    if t.get_float32_matmul_precision() != "highest":
        return True
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(t.backends.cuda.matmul.allow_tf32)


def _u(dtype):
    from ._abft import unit_roundoff
    return unit_roundoff(dtype)


class AugmentedWeight:
    """The augmented GEMM operands of one linear layer.

    Parameters
    ----------
    weight : torch.nn.Parameter
        ``(N, K)``.  When no rounding is needed (fp16, bf16, fp32 without tf32)
        the parameter's storage is *moved into* the augmented matrix: afterwards
        ``weight`` is the view ``gemm_weight[:N]``, so the weight exists once in
        memory and an in-place change of it is seen by the GEMM (and caught by the
        stale checksums unless :func:`refresh_checksums` is called).
    bias : torch.nn.Parameter or None
        Moved into ``gemm_bias[:N]`` in the same way.
    tf32 : bool
        The GEMM will run in tf32: operate on a tf32-rounded copy of the weight.

    Attributes
    ----------
    gemm_weight : (N + 16, K) tensor, the GEMM's B operand.
    gemm_bias : (N + 16,) tensor or None, bias of the cuBLASLt-epilogue path.
    signs : (N, 16) tensor of the storage dtype (fp32 for fp32), columns 0-7 the
        ±1 vectors, 8-15 zero (tensor-core dots need 16 columns).
    sigma, c_x, c_y, c_z : floats of the tolerance (module docstring).
    """

    def __init__(self, weight, bias, tf32=False):
        t = torch()
        w = weight.detach()
        if w.dim() != 2:
            raise ValueError(f"augmented checksums need a 2-D weight, got {tuple(w.shape)}")
        self.N, self.K = w.shape
        self.dtype, self.device, self.tf32 = w.dtype, w.device, bool(tf32)
        w_gemm = round_tf32(w) if self.tf32 else w
        w64 = w_gemm.to(t.float64)
        signs = check_signs(self.N).to(w.device)
        self.sigma = sign_scale(self.N)
        c = (signs @ w64) * self.sigma                            # (8, K) exact-ish
        hi, lo = self._split(c)
        aug = t.empty(self.N + AUG_ROWS, self.K, dtype=w.dtype, device=w.device)
        aug[:self.N].copy_(w_gemm)
        aug[self.N::2] = hi
        aug[self.N + 1::2] = lo
        self.gemm_weight = aug
        self.aliased = not self.tf32
        if self.aliased:
            weight.data = aug[:self.N]
        self.gemm_bias = None
        if bias is not None:
            b64 = bias.detach().to(t.float64)
            bc = (signs @ b64) * self.sigma
            bhi, blo = self._split(bc)
            self.b_rep = float((bc - bhi.to(t.float64) - blo.to(t.float64)).abs().max())
            self.b_max = float(bc.abs().max())
            baug = t.empty(self.N + AUG_ROWS, dtype=w.dtype, device=w.device)
            baug[:self.N].copy_(bias.detach())
            baug[self.N::2] = bhi
            baug[self.N + 1::2] = blo
            self.gemm_bias = baug
            if self.aliased:
                bias.data = baug[:self.N]
        sdt = t.float32 if w.dtype in (t.float32, t.float64) else w.dtype
        s16 = t.zeros(self.N, 16, dtype=sdt, device=w.device)
        s16[:, :N_VECTORS] = signs.t().to(sdt)
        self.signs = s16.contiguous()
        self.signs64 = signs
        u = _u(w.dtype)
        c_norm = float(c.norm(dim=1).max())
        self.c_y = self.sigma * (u + _U32 * math.sqrt(self.N))
        self.c_z = u + _U32
        # fp32 accumulation over K of the outputs and of the checksum rows.
        self.c_acc = _U32 * math.sqrt(self.K) * (self.sigma * float(w64.norm()) + c_norm)
        self.c_x = self.c_acc + u * u * c_norm
        # The exact representation error of the checksum rows, ||c_v - hi_v - lo_v||
        # (at most u^2 ||c_v||; the stream check, whose checksums are never
        # rounded again, uses it instead of that bound).
        self.c_rep = float((c - hi.to(t.float64) - lo.to(t.float64)).norm(dim=1).max())
        self._rows64 = aug[self.N:].to(t.float64).sum()
        self._main64 = aug[:self.N].to(t.float64).sum(0)
        self._weight_ptr = weight.data_ptr()

    def _split(self, c):
        t = torch()
        if self.tf32:
            hi = round_tf32(c.to(t.float32))
            lo = round_tf32((c - hi.to(t.float64)).to(t.float32))
        else:
            hi = c.to(self.dtype)
            lo = (c - hi.to(t.float64)).to(self.dtype)
        return hi, lo

    def current_for(self, weight):
        """True when this operand still describes ``weight`` (same storage/dtype)."""
        if weight.dtype != self.dtype or weight.device != self.device:
            return False
        if self.aliased:
            return weight.data_ptr() == self.gemm_weight.data_ptr()
        return weight.data_ptr() == self._weight_ptr

    def release(self, weight, bias):
        """Give the parameters their own storage again (used by ``unprotect``)."""
        if self.aliased and weight.data_ptr() == self.gemm_weight.data_ptr():
            weight.data = weight.data.clone()
            if bias is not None and self.gemm_bias is not None:
                bias.data = bias.data.clone()

    def main_intact(self):
        """True when the GEMM's weight rows still have their build-time column sums."""
        t = torch()
        return bool(t.equal(self.gemm_weight[:self.N].to(t.float64).sum(0), self._main64))

    def rows_intact(self):
        """True when the checksum rows still hold what was computed at build time."""
        t = torch()
        return bool(self.gemm_weight[self.N:].to(t.float64).sum() == self._rows64)


def _pick_blocks(M, N):
    """(BM, BN, CHUNKS) of the check kernel: enough programs, few column blocks."""
    bm = 16 if M <= 256 else (32 if M <= 2048 else 64)
    bn = 128 if N >= 128 else max(16, 1 << max(4, math.ceil(math.log2(max(N, 1)))))
    n_chunks = -(-N // bn)
    row_blocks = -(-M // bm)
    # Aim at ~2 programs per SM (an H200 has 132); at most 16 chunks per program.
    want_cb = max(1, min(n_chunks, -(-264 // row_blocks)))
    chunks = max(1, min(16, -(-n_chunks // want_cb)))
    return bm, bn, chunks


#: Largest GEMM output (bytes) whose check leaves the critical path when a side
#: stream is given: below it a layer with an activation lets cuBLASLt add the bias,
#: applies the activation in one plain elementwise kernel and checks on the side
#: stream (overlapping the next layer); above it one fused pass does both.
SIDE_CHECK_BYTES = 1 << 20


def check_on_side(M, N, element_size, activation):
    """True when :func:`fused_linear` checks this call on a side stream (if given)."""
    return activation is None or element_size * M * (N + AUG_ROWS) <= SIDE_CHECK_BYTES


def check_workspace(M, device):
    """A zeroed ``(M, 16)`` fp32 workspace and ``ceil(M / 16)`` int32 tickets.

    The check kernel returns both to zero, so one pair serves every later call
    with the same ``M`` on one stream (and every replay of a CUDA graph).
    """
    t = torch()
    return (t.zeros(M, 16, dtype=t.float32, device=device),
            t.zeros(-(-M // 16) + 1, dtype=t.int32, device=device))


def fused_linear(x2, aug, activation=None, side_stream=None, corrupt=None, *,
                 x_norm2=None, out_norm2=None, workspace=None, blocks=None):
    """Checked ``act(x2 @ W^T + b)`` through the augmented cuBLAS GEMM.

    One cuBLAS GEMM computes the outputs and their checksum columns; one Triton
    launch applies bias + activation, checks every row and writes its ratio.

    Parameters
    ----------
    x2 : (M, K) CUDA tensor (or CPU under ``TRITON_INTERPRET=1``).
    aug : AugmentedWeight
    activation : str or None
        Key of :data:`ACTIVATIONS`.
    side_stream : torch.cuda.Stream, optional
        Where the check runs when :func:`check_on_side` says so (then nothing of
        the check is on the critical path); ``None`` runs it on the current stream.
    corrupt : callable, optional
        Applied to the GEMM output in place before anything reads it (fault
        injection, :mod:`dartboost.gpu._faults`).
    x_norm2 : (M,) float32 tensor, optional
        ``||x_i||^2`` when already known (written by the check of the layer that
        produced ``x2``); otherwise the check kernel reads ``x2`` for it.
    out_norm2 : (M,) float32 tensor, optional
        Receives ``||out_i||^2`` of the written output (activation layers only),
        for the next layer's ``x_norm2``.
    workspace : tuple, optional
        :func:`check_workspace` of this ``M`` (allocated per call if omitted).
    blocks : tuple, optional
        ``(BM, BN, CHUNKS, num_warps)`` overriding the default tiling (tuning).

    Returns
    -------
    out : (M, N) tensor
        The layer output (a view of the GEMM's output when there is no
        activation).
    ratio : (M,) float32 tensor
        Largest residual / tolerance ratio over the check vectors, per row.
    y_aug : (M, N + 16) tensor
        The raw GEMM output (kept for fault resolution).
    """
    from ._kernels import abft_check_kernel
    t = torch()
    M, K = x2.shape
    N = aug.N
    act = ACTIVATIONS[activation]
    interp = interpreter_active()
    # Small outputs with an activation and a side stream: the check leaves the
    # critical path (bias in the GEMM epilogue, activation as its own kernel).
    split = (act != 0 and side_stream is not None
             and check_on_side(M, N, x2.element_size(), activation))
    if act == 0 or split:
        # cuBLASLt adds the bias; the output is a view; the whole check is off-path.
        y_aug = (t.addmm(aug.gemm_bias, x2, aug.gemm_weight.t()) if aug.gemm_bias is not None
                 else t.mm(x2, aug.gemm_weight.t()))
        out = y_aug[:, :N]
    else:
        y_aug = t.mm(x2, aug.gemm_weight.t())
        out = t.empty(M, N, dtype=x2.dtype, device=x2.device)
    if corrupt is not None:
        corrupt(y_aug)
    ratio = t.empty(M, dtype=t.float32, device=x2.device)
    if M == 0:
        return (apply_activation(out, activation) if split else out), ratio, y_aug
    write = act != 0 and not split
    bm, bn, chunks = _pick_blocks(M, N)
    warps = 4
    if blocks is not None:
        bm, bn, chunks, warps = blocks
    n_cb = -(-(-(-N // bn)) // chunks)
    one_pass = n_cb == 1
    if not one_pass and workspace is None:
        workspace = check_workspace(M, x2.device)
    ws, cnt = workspace if not one_pass else (ratio, ratio)
    has_xn = x_norm2 is not None
    k_per = -(-K // n_cb)
    bk = 16 if k_per <= 16 else (64 if k_per <= 64 else 128)  # few variants
    on = out_norm2 if (write and out_norm2 is not None) else ratio
    bias = aug.gemm_bias
    kw = {} if interp else {"num_warps": warps}

    def launch():
        abft_check_kernel[(-(-M // bm), n_cb)](
            y_aug, bias if (bias is not None and write) else y_aug, aug.signs, out, x2,
            x_norm2 if has_xn else ratio, ws, cnt, ratio, on,
            M, N, K, n_cb, k_per, y_aug.stride(0), out.stride(0), x2.stride(0),
            float(aug.sigma), float(aug.c_y), float(aug.c_z), float(aug.c_x),
            HAS_BIAS=(bias is not None) and write, ACT=act, WRITE=write, HAS_XN=has_xn,
            OUT_NORM=write and out_norm2 is not None, ONE_PASS=one_pass, UPCAST=interp,
            F32=x2.dtype == t.float32, BM=bm, BN=bn, CHUNKS=chunks, BK=bk, **kw)

    if side_stream is not None and not write:
        side_stream.wait_stream(t.cuda.current_stream())
        with t.cuda.stream(side_stream):
            launch()
    else:
        launch()
    if split:  # after the fork: the side check need not wait for it
        out = apply_activation(out, activation)
    return out, ratio, y_aug


def apply_activation(y, activation):
    """Torch version of the epilogue's activations."""
    F = torch().nn.functional
    if activation is None:
        return y
    if activation == "relu":
        return F.relu(y)
    if activation == "gelu":
        return F.gelu(y)
    if activation == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    if activation == "silu":
        return F.silu(y)
    raise ValueError(f"unknown activation {activation!r}; choose from "
                     f"{sorted(k for k in ACTIVATIONS if k)}")


def fused_ratios_reference(x2, y_aug, aug):
    """Per-row ratios of the fused check computed with torch in float64 (oracle)."""
    t = torch()
    N = aug.N
    y = y_aug[:, :N].to(t.float64)
    s = (y @ aug.signs64.t().to(y.device)) * aug.sigma                  # (M, 8)
    zh = y_aug[:, N::2].to(t.float64)
    z = zh + y_aug[:, N + 1::2].to(t.float64)
    tol = (aug.c_y * y.norm(dim=1, keepdim=True) + aug.c_z * zh.abs()
           + aug.c_x * x2.to(t.float64).norm(dim=1, keepdim=True) + 1e-30)
    d = (s - z).abs()
    r = t.where(t.isfinite(d) & t.isfinite(tol), d / tol, t.full_like(d, float("inf")))
    return r.amax(1).to(t.float32) if r.shape[0] else r.new_zeros(0, dtype=t.float32)


def fused_linear_reference(x2, aug, activation=None, corrupt=None):
    """Torch emulation of :func:`fused_linear` (CPU path without Triton)."""
    t = torch()
    N = aug.N
    if aug.gemm_bias is not None and activation is None:
        y_aug = t.addmm(aug.gemm_bias, x2, aug.gemm_weight.t())
        if corrupt is not None:
            corrupt(y_aug)
        out = y_aug[:, :N]
    else:
        y_aug = x2 @ aug.gemm_weight.t()
        if corrupt is not None:
            corrupt(y_aug)
        pre = y_aug[:, :N]
        if aug.gemm_bias is not None:
            pre = pre + aug.gemm_bias[:N]
        out = apply_activation(pre, activation)
    return out, fused_ratios_reference(x2, y_aug, aug), y_aug
