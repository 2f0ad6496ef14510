"""The checked layers that :func:`dartboost.gpu.protect` swaps in.

Imported only once torch is needed (module level torch import keeps the
classes picklable).
"""
import torch as t
from torch import nn
from torch.nn import functional as F

from ._abft import ConvGeometry, LayerChecksums, accumulation_roundoff, global_check, \
    unit_roundoff, use_triton_for
from ._augmented import AugmentedWeight, apply_activation, check_on_side, check_workspace, \
    fused_linear, fused_linear_reference, tf32_enabled
from ._auto import automatic_candidates, plan_layer
from ._calibration import default_calibration


class _Entry:
    __slots__ = ("layer", "x", "y", "ratio", "scheme", "block_n")

    def __init__(self, layer, x, y, ratio, scheme, block_n=None):
        self.layer, self.x, self.y, self.ratio = layer, x, y, ratio
        self.scheme, self.block_n = scheme, block_n


class _ReducedPrecisionOff:
    """Run a half-precision cuBLAS GEMM with fp32 reductions (the tolerance assumes it)."""

    def __enter__(self):
        m = t.backends.cuda.matmul
        self.saved = (m.allow_fp16_reduced_precision_reduction,
                      m.allow_bf16_reduced_precision_reduction)
        m.allow_fp16_reduced_precision_reduction = False
        m.allow_bf16_reduced_precision_reduction = False

    def __exit__(self, *exc):
        m = t.backends.cuda.matmul
        (m.allow_fp16_reduced_precision_reduction,
         m.allow_bf16_reduced_precision_reduction) = self.saved
        return False


class _Checked(nn.Module):
    def _setup(self, orig, name, state):
        self.weight = orig.weight
        self.bias = orig.bias
        self.__dict__["_orig"] = orig  # not a submodule: state_dict keys stay the same
        self.__dict__["_state"] = state
        self.layer_name = name
        self.scheme = state.scheme
        self.alpha = state.alpha
        self._ck = None
        self._ck_key = None
        self._aug = None
        self._auto_cache = {}
        self._plans = {}
        self._workspaces = {}
        #: Activation fused after the GEMM by :func:`protect` (None, 'relu', ...).
        self.activation = None

    # -- checksums ------------------------------------------------------------
    def checksums(self):
        key = (self.weight.dtype, self.weight.device)
        if self._ck is None or self._ck_key != key:
            # First use, or the model was legitimately cast/moved: checksum the
            # weights as they now are.  In-place changes keep the key, so a later
            # corruption is still caught.
            self._ck = LayerChecksums(self.weight, self.bias)
            self._ck_key = key
        return self._ck

    def augmented(self):
        """The augmented GEMM operands of the fused scheme (built on first use)."""
        tf32 = tf32_enabled(self.weight.dtype, self.weight.device)
        aug = self._aug
        if aug is None or aug.tf32 != tf32 or not aug.current_for(self.weight):
            # First use, a cast/move (new storage) or a tf32 switch: rebuild.
            aug = self._aug = AugmentedWeight(self.weight, self.bias, tf32)
            self._ck = None  # checksums of the weights as they now are
        return aug

    def refresh(self):
        if self._aug is not None:
            self._aug.release(self.weight, self.bias)
        self._aug = None
        self._ck = None
        self._auto_cache.clear()
        return self.checksums()

    def gemm_operand(self):
        """The weight tensor the layer's GEMM actually reads (fault-injection target)."""
        if self._aug is not None and not self._aug.aliased:
            return self._aug.gemm_weight[:self._aug.N]
        return self.weight

    def weights_intact(self):
        """True when the weights (and checksum rows) still match their checksums."""
        ok = self.checksums().matches(self.weight)
        if self._aug is not None:
            ok = ok and self._aug.rows_intact()
            if not self._aug.aliased:
                ok = ok and self._aug.main_intact()
        return ok

    # -- input validation -----------------------------------------------------
    def _validate(self, x):
        w = self.weight
        if not isinstance(x, t.Tensor):
            raise TypeError(f"{self.layer_name}: expected a torch.Tensor input, got "
                            f"{type(x).__name__}")
        if x.device != w.device:
            raise RuntimeError(
                f"{self.layer_name}: input is on {x.device} but the protected layer's "
                f"weights are on {w.device}; move the input or the model first")
        if x.dtype != w.dtype:
            raise TypeError(
                f"{self.layer_name}: input dtype {x.dtype} does not match the weight dtype "
                f"{w.dtype}; ABFT checks need both equal (cast with .to({w.dtype}))")

    def _pick(self, geo, x):
        scheme = self.scheme
        if scheme in ("tile", "fused", "auto") and t.is_grad_enabled() and (
                x.requires_grad or self.weight.requires_grad):
            # The fused kernel has no backward; under autograd the library
            # operator (checked globally) keeps gradients flowing.
            return "global"
        if scheme in ("tile", "fused") and x.dtype == t.float64:
            return "global"  # the Triton kernels have no fp64 tensor-core path
        if scheme in ("fused", "stream") and geo.is_conv:
            return "global"  # augmented filters: not implemented for convolutions
        if scheme == "stream" and x.dtype == t.float64:
            return "global"
        if scheme not in ("auto", "fused"):
            return scheme
        if scheme == "fused" and not (x.is_cuda and use_triton_for(x, self._state.backend)):
            return "fused"  # the stream kernel needs Triton on a GPU to pay off
        hit = self._auto_cache.get(geo.M)
        if hit is None:
            if x.is_cuda and x.dtype != t.float64:
                st = self._state
                if st.calibration is None:
                    st.calibration = default_calibration(x.device)
                # 'fused' picks between its two implementations (cuBLAS + check
                # pass, or the stream kernel); 'auto' among every scheme.
                plan = plan_layer(geo.M, geo.N, geo.K, x.element_size(), self.activation,
                                  geo.is_conv, st.calibration,
                                  candidates=automatic_candidates(scheme),
                                  norm_known=not geo.is_conv and st.norms_of(x) is not None)
                self._plans[geo.M] = plan
                hit = plan["scheme"]
            else:
                # On CPU the kernels are emulated or interpreted and never cheaper
                # than one checked library call, so auto means global.
                hit = "global"
                self._plans[geo.M] = {"scheme": hit, "reason": "CPU or float64: global",
                                      "costs": {}, "baseline": None}
            self._auto_cache[geo.M] = hit
        return hit

    def plan(self, batch_rows):
        """The recorded ``scheme='auto'`` decision for ``batch_rows`` GEMM rows, or None."""
        return self._plans.get(batch_rows)

    def _record(self, x, y, ratio, scheme, block_n=None, out=None):
        """Ledger the check of one call; ``out`` is what the layer returns (default y)."""
        st = self._state
        out = y if out is None else out
        st.counts["layer_calls"] += 1
        st.ledger.append(_Entry(self, x, y, ratio, scheme, block_n))
        if not st.in_root:
            # Called on its own, outside the protected root: resolve right away.
            from ._resolution import apply_on_fault, resolve_pending
            confirmed = resolve_pending(st)
            if confirmed:
                fixed = apply_on_fault(st, confirmed, lambda: (self._rerun(x), []),
                                       stacklevel=4)
                if fixed is not None:
                    return fixed
        return out

    def _rerun(self, x):
        with t.no_grad():
            return self.reference(x)

    def _run(self, x, geo, conv_params):
        st = self._state
        scheme = self._pick(geo, x)
        inj = self.__dict__.get("_injection")  # set only by dartboost.gpu._faults
        if inj is not None and inj.fired:
            inj = None  # one-shot
        if scheme == "fused":
            return self._run_fused(x, inj)
        if scheme == "stream":
            return self._run_stream(x, inj)
        ck = self.checksums()
        if scheme == "tile":
            from ._triton_gemm import tile_gemm, tile_gemm_reference, tile_ratios_reference
            if use_triton_for(x, st.backend):
                y, ratio, bn = tile_gemm(x, self.weight, self.bias, ck, geo,
                                         inject=inj.kernel_args() if inj else None)
            else:
                # Torch emulation of the tile scheme (CPU without the interpreter).
                y, ratio, bn = tile_gemm_reference(x, self.weight, self.bias, ck, geo,
                                                   conv_params=conv_params)
                if inj is not None:
                    y = inj.apply_after(self, x, y, geo, conv_params)
                    ratio = tile_ratios_reference(x, y, self.weight, self.bias, ck, geo,
                                                  block_n=bn, conv_params=conv_params)
            if inj is not None:
                inj.fired = True
            return self._record(x, y, ratio, "tile", bn,
                                out=apply_activation(y, self.activation))
        with _ReducedPrecisionOff():
            y = self._plain(x)
        if inj is not None:
            y = inj.apply_after(self, x, y, geo, conv_params)
            inj.fired = True
        u_acc = accumulation_roundoff(x.dtype, x.device.type, geo.is_conv)
        # The Triton check sums in fp32; the torch check runs in float64.
        u_ck = 2.0 ** -24 if use_triton_for(x, st.backend) else 0.0
        c_x, c_y = ck.coefficients(u_acc, unit_roundoff(x.dtype), u_ck)
        ratio = global_check(x, y, ck, geo, c_x, c_y, st.backend, conv_params)
        return self._record(x, y, ratio, "global",
                            out=apply_activation(y, self.activation))

    def _run_fused(self, x, inj):
        """Augmented cuBLAS GEMM; check fused into the epilogue / on a side stream."""
        st = self._state
        aug = self.augmented()
        self.checksums()
        corrupt = None
        on_side = x.is_cuda and use_triton_for(x, st.backend) and check_on_side(
            x.shape[0], aug.N, x.element_size(), self.activation)
        if inj is not None:
            inj.fired = True
            # The GEMM adds the bias itself when the activation is not fused into
            # the check pass (no activation, or the side-stream check).
            corrupt = (lambda y_aug: inj.apply_after(self, x, y_aug[:, :aug.N],
                                                     ConvGeometry.linear(x, aug.N), None,
                                                     with_bias=self.activation is None
                                                     or on_side))
        with _ReducedPrecisionOff():
            if use_triton_for(x, st.backend):
                # Only a call that checks on the side stream forks it (joined when
                # the forward pass ends).
                side = st.side_stream(x.device) if on_side else None
                M = x.shape[0]
                ws = self._workspaces.get((M, x.device))
                if ws is None:
                    # Zeroed once; the check kernel leaves it zeroed (graph replays).
                    ws = self._workspaces[(M, x.device)] = check_workspace(M, x.device)
                # ||out||^2 comes for free from the fused pass (not from a side check).
                on = (t.empty(M, dtype=t.float32, device=x.device)
                      if self.activation is not None and not on_side else None)
                out, ratio, y_aug = fused_linear(x, aug, self.activation, side, corrupt,
                                                 x_norm2=st.norms_of(x), out_norm2=on,
                                                 workspace=ws)
                if on is not None:
                    st.remember_norms(out, on)
            else:
                out, ratio, y_aug = fused_linear_reference(x, aug, self.activation, corrupt)
        return self._record(x, y_aug, ratio, "fused", out=out)

    def _run_stream(self, x, inj):
        """One weight-streaming Triton kernel: GEMM, epilogue and check together."""
        from ._stream import stream_config, stream_linear, stream_linear_reference, \
            stream_workspace
        st = self._state
        aug = self.augmented()
        self.checksums()
        if inj is not None:
            inj.fired = True
            if inj.site == "swap":
                raise ValueError(
                    "site 'swap' cannot be injected into the 'stream' scheme: a misrouted "
                    "store happens after its in-kernel check (the 'fused' and 'global' "
                    "schemes read the output back)")
        with _ReducedPrecisionOff():
            if use_triton_for(x, st.backend):
                from ._triton_gemm import _sms
                M = x.shape[0]
                cfg = stream_config(M, aug.N, aug.K, x.element_size(), _sms(x.device))
                key = ("stream", M, x.device, cfg[3])
                ws = self._workspaces.get(key)
                if ws is None:
                    # Zeroed once; the kernel leaves it zeroed (graph replays).
                    ws = self._workspaces[key] = stream_workspace(M, aug.N, cfg[3], x.device)
                out, ratio, _ = stream_linear(
                    x, aug, self.activation, workspace=ws, config=cfg,
                    inject=inj.kernel_args() if inj is not None else None)
            else:
                # Output flips hit the rounded values; accumulator and input
                # flips the fp32 values before rounding (as in the kernel).
                corrupt = None
                if inj is not None:
                    corrupt = (lambda y: inj.apply_after(
                        self, x, y, ConvGeometry.linear(x, aug.N), None))
                out_site = inj is not None and inj.site == "output"
                out, ratio = stream_linear_reference(
                    x, aug, self.activation, corrupt if out_site else None,
                    corrupt_acc=None if out_site else corrupt)
        return self._record(x, out, ratio, "stream", out=out)


class CheckedLinear(_Checked):
    """``nn.Linear`` with ABFT checks (created by :func:`protect`)."""

    def __init__(self, orig, name, state):
        super().__init__()
        self.in_features, self.out_features = orig.in_features, orig.out_features
        self._setup(orig, name, state)

    def _plain(self, x):
        return F.linear(x, self.weight, self.bias)

    def reference_preactivation(self, x):
        with _ReducedPrecisionOff():
            return F.linear(x, self.weight, self.bias)

    def reference(self, x):
        return apply_activation(self.reference_preactivation(x), self.activation)

    def forward(self, x):
        self._validate(x)
        if self.scheme == "off":
            return apply_activation(self._plain(x), self.activation)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{self.layer_name}: expected {self.in_features} input "
                             f"features, got {x.shape[-1]}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        geo = ConvGeometry.linear(x2, self.out_features)
        y = self._run(x2, geo, None)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self):
        act = f", activation={self.activation!r}" if self.activation else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, scheme={self.scheme!r}{act}")

class CheckedConv2d(_Checked):
    """``nn.Conv2d`` (groups=1, zero padding) with ABFT checks, as a GEMM."""

    def __init__(self, orig, name, state, padding):
        super().__init__()
        self.in_channels, self.out_channels = orig.in_channels, orig.out_channels
        self.kernel_size, self.stride = orig.kernel_size, orig.stride
        self.padding, self.dilation = padding, orig.dilation
        self._setup(orig, name, state)

    def _plain(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def reference_preactivation(self, x):
        return self._plain(x)

    def reference(self, x):
        return self._plain(x)

    def forward(self, x):
        self._validate(x)
        if self.scheme == "off":
            return self._plain(x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.layer_name}: expected input (N, {self.in_channels}, "
                             f"H, W), got {tuple(x.shape)}")
        geo = ConvGeometry.conv(x, self.weight, self.stride, self.padding, self.dilation)
        return self._run(x, geo, (self.stride, self.padding, self.dilation))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, scheme={self.scheme!r}")


class _Folded(nn.Identity):
    """Stands in for an activation that :func:`protect` folded into the checked layer."""

    def __init__(self, original):
        super().__init__()
        self.__dict__["original"] = original  # not a submodule: state_dict unchanged

    def extra_repr(self):
        return f"folded {type(self.original).__name__} (applied by the checked layer)"
