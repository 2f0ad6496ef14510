"""``protect`` / ``unprotect``: swap GEMM layers of a torch model for checked ones.

``protect(model)`` replaces every ``nn.Linear`` and ``nn.Conv2d`` (exact types;
convolutions with ``groups == 1`` and zero padding) by a checked layer that shares
the original parameters, precomputes the weight checksums once, and records a
check result on every call.  The checks of one forward pass are resolved once,
when the protected root module returns (one host synchronisation per forward,
none per layer), so the checked layers can also be captured in CUDA graphs; call
:func:`check` after a graph replay to resolve them.

Resolution: a layer whose largest ratio exceeds ``alpha`` is *recomputed* with the
plain torch operator and the float64 reference check, and its weights are
compared with their checksums:

* weights no longer match their checksums -> ``'weight'`` fault (persistent);
* the recomputation passes                -> ``'transient'`` fault;
* the recomputation fails the same way    -> ``'unconfirmed'`` (numerics, or
  non-finite inputs from upstream): logged, never raised.

Confirmed faults are then handled by ``on_fault``: ``'raise'`` raises
:class:`ABFTFaultError`; ``'flag'`` warns (:class:`ABFTFaultWarning`), records the
events (:func:`fault_log`) and returns the output; ``'recompute'`` runs the
forward pass again (up to ``max_retries`` times) and raises if faults persist or
the weights are corrupt.

Layers that cannot be protected are left exactly as they were and listed by
:func:`protection_report` (and in a warning from :func:`protect`).
"""
import math
import warnings

from ._abft import DEFAULT_ALPHA
from ._events import ABFTFaultError, ABFTFaultWarning, FaultEvent
from ._lazy import torch
from ._resolution import ProtectionState, apply_on_fault, resolve, resolve_pending

__all__ = ["protect", "unprotect", "is_protected", "protection_report", "check",
           "refresh_checksums", "verify_weights", "fault_log", "ABFTFaultError",
           "ABFTFaultWarning", "FaultEvent"]

SCHEMES = ("auto", "fused", "stream", "global", "tile", "off")
ON_FAULT = ("raise", "recompute", "flag")
_STATE_ATTR = "_dartboost_abft"
_State = ProtectionState


def _classes():
    from ._layers import CheckedConv2d, CheckedLinear, _Checked
    return _Checked, CheckedLinear, CheckedConv2d


def _Folded(act):
    from ._layers import _Folded as cls
    return cls(act)


# --------------------------------------------------------------------------------------
# Forward hooks of the protected root: one resolution per forward pass
# --------------------------------------------------------------------------------------

def _pre_hook(module, args, kwargs):
    state = getattr(module, _STATE_ATTR)
    if state.inner:
        return None
    state.in_root = True
    state.ledger = []
    state.norms = {}
    return None


def _post_hook(module, args, kwargs, output):
    state = getattr(module, _STATE_ATTR)
    if state.inner:
        return None
    state.in_root = False
    state.norms = {}
    state.counts["forwards"] += 1
    confirmed = resolve_pending(state)
    if not confirmed:
        return None

    def rerun():
        state.inner = state.in_root = True
        state.ledger = []
        try:
            out = module(*args, **kwargs)
        finally:
            state.inner = state.in_root = False
        return out, resolve_pending(state)

    return apply_on_fault(state, confirmed, rerun, stacklevel=3)

# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------

def _conv_padding(m):
    """Numeric (ph, pw) padding of a Conv2d, or None when the kernel cannot express it."""
    if m.padding_mode != "zeros":
        return None
    p = m.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0)
        pads = []
        for k, d in zip(m.kernel_size, m.dilation):
            total = d * (k - 1)
            if total % 2:
                return None  # asymmetric 'same' padding
            pads.append(total // 2)
        return tuple(pads)
    return tuple(p)


def _classify(m):
    """(status, reason) of one module for protection."""
    nn = torch().nn
    if type(m) is nn.Linear:
        return "protectable", ""
    if type(m) is nn.Conv2d:
        if m.groups != 1:
            return "unsupported", f"grouped convolution (groups={m.groups})"
        if _conv_padding(m) is None:
            return "unsupported", (f"padding {m.padding!r} with padding_mode "
                                   f"{m.padding_mode!r}")
        return "protectable", ""
    gemm_like = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                 nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear, nn.MultiheadAttention,
                 nn.RNNBase, nn.Embedding, nn.EmbeddingBag)
    if isinstance(m, gemm_like):
        return "unsupported", f"{type(m).__name__} has no checked implementation"
    if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
        return "unsupported", "lazy module with uninitialised parameters"
    if any(True for _ in m.parameters(recurse=False)):
        return "not_gemm", "has parameters but is not a GEMM; not covered by ABFT"
    return None, ""


def _validate_args(scheme, on_fault, alpha, backend):
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if on_fault not in ON_FAULT:
        raise ValueError(f"on_fault must be one of {ON_FAULT}, got {on_fault!r}")
    if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0
                                  and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")


def protect(module, scheme="auto", on_fault="raise", *, alpha=None, backend="auto",
            ai_threshold=None, max_retries=1, warn=True, fuse_activations=True):
    """Protect the GEMM layers of a torch model with algorithm-based fault tolerance.

    Parameters
    ----------
    module : torch.nn.Module
        Model to protect in place.  A bare ``nn.Linear``/``nn.Conv2d`` cannot be
        swapped inside itself: the checked layer is returned instead.
    scheme : {'auto', 'fused', 'stream', 'global', 'tile', 'off'}, default='auto'
        ``'fused'`` (linear layers): weights augmented with 16 ±1-checksum rows;
        memory-bound calls (small batches, :func:`dartboost.gpu._auto.fused_path`)
        run the ``'stream'`` kernel, the others the cuBLAS GEMM with the
        comparison fused into the bias/activation pass (or on a side stream when
        there is no activation), see :mod:`dartboost.gpu._augmented`;
        ``'stream'`` (linear layers): always the weight-streaming Triton GEMM
        that checks the augmented product in its own epilogue, see
        :mod:`dartboost.gpu._stream`;
        ``'global'``: library GEMM plus one fused check pass per layer;
        ``'tile'``: the fused Triton GEMM that checks every output tile;
        ``'auto'``: per layer and batch size, the scheme a calibrated cost model
        predicts cheapest (:func:`dartboost.gpu.plan_layer`; recorded per layer,
        see :func:`protection_report`), global for convolutions and on CPU;
        ``'off'``: keep the checked layers but skip checking.
    on_fault : {'raise', 'recompute', 'flag'}, default='raise'
    alpha : float, optional
        Safety factor on the rounding-error bound (default 8; see
        :func:`calibrate`).
    backend : {'auto', 'triton', 'torch'}, default='auto'
        How checks run: Triton on CUDA tensors (or CPU tensors under
        ``TRITON_INTERPRET=1``), torch ops otherwise.
    ai_threshold : float, optional
        FLOP/byte threshold of ``'auto'``; default :func:`auto_threshold` (the
        crossover measured by :func:`calibrate_auto` if cached, else 0.2 x the
        device's roofline ridge).
    max_retries : int, default=1
        Forward re-runs allowed by ``on_fault='recompute'``.
    warn : bool, default=True
        Warn when GEMM-like layers had to be left unprotected.
    fuse_activations : bool, default=True
        Inside ``nn.Sequential`` containers, an ``nn.ReLU``/``nn.GELU``/``nn.SiLU``
        right after a protected ``nn.Linear`` is folded into the checked layer (the
        activation module is replaced by ``nn.Identity``; :func:`unprotect` puts it
        back), so the check shares the activation's elementwise pass.

    Returns
    -------
    module : torch.nn.Module
        The protected model (the same object unless ``module`` was a bare layer).

    Notes
    -----
    Calling ``protect`` again updates the settings and protects layers added
    since; :func:`unprotect` restores the original layers.  Checksums are taken
    when a layer first runs after protection (or after a dtype/device change);
    call :func:`refresh_checksums` after changing weights in place (training,
    ``load_state_dict``), otherwise the change is reported as a weight fault.
    """
    t = torch()
    nn = t.nn
    if not isinstance(module, nn.Module):
        raise TypeError(f"protect expects a torch.nn.Module, got {type(module).__name__}")
    _validate_args(scheme, on_fault, alpha, backend)
    _, CheckedLinear, CheckedConv2d = _classes()
    alpha = DEFAULT_ALPHA if alpha is None else float(alpha)
    state = getattr(module, _STATE_ATTR, None)
    if state is None:
        root = module
        status, _ = _classify(module)
        if status == "protectable":  # bare layer: wrap it and protect the wrapper
            state = _State(scheme, on_fault, alpha, backend, ai_threshold, max_retries)
            root = _wrap(module, "", state, CheckedLinear, CheckedConv2d)
        else:
            state = _State(scheme, on_fault, alpha, backend, ai_threshold, max_retries)
        setattr(root, _STATE_ATTR, state)
        state.hooks = [root.register_forward_pre_hook(_pre_hook, with_kwargs=True),
                       root.register_forward_hook(_post_hook, with_kwargs=True)]
        module = root
    else:
        state.scheme, state.on_fault, state.alpha = scheme, on_fault, alpha
        state.backend, state.max_retries = backend, max_retries
        if ai_threshold is not None:
            state.ai_threshold = ai_threshold
    report = []
    _Checked = _classes()[0]
    for name, parent, child_name, child in _walk(module):
        if isinstance(child, _Checked):
            child.scheme, child.alpha = scheme, alpha
            child._auto_cache.clear()
            report.append({"name": name, "type": type(child._orig).__name__,
                           "status": "protected", "scheme": scheme, "reason": ""})
            continue
        status, reason = _classify(child)
        if status == "protectable":
            setattr(parent, child_name, _wrap(child, name, state, CheckedLinear, CheckedConv2d))
            report.append({"name": name, "type": type(child).__name__, "status": "protected",
                           "scheme": scheme, "reason": ""})
        elif status is not None:
            report.append({"name": name, "type": type(child).__name__, "status": status,
                           "scheme": None, "reason": reason})
    if isinstance(module, _Checked):
        module.scheme, module.alpha = scheme, alpha
        report.insert(0, {"name": "", "type": type(module._orig).__name__,
                          "status": "protected", "scheme": scheme, "reason": ""})
    if fuse_activations:
        _fuse_activations(module, report)
    state.report = report
    unsupported = [r for r in report if r["status"] == "unsupported"]
    if warn and unsupported:
        warnings.warn("ABFT left these layers unprotected: " + "; ".join(
            f"{r['name']} ({r['reason']})" for r in unsupported), UserWarning, stacklevel=2)
    return module


def _activation_name(m):
    nn = torch().nn
    if type(m) is nn.ReLU:
        return "relu"
    if type(m) is nn.GELU:
        return "gelu" if m.approximate == "none" else "gelu_tanh"
    if type(m) is nn.SiLU:
        return "silu"
    return None


def _fuse_activations(module, report):
    """Fold activations that directly follow a checked Linear in a Sequential."""
    nn = torch().nn
    _Checked, CheckedLinear, _ = _classes()
    by_name = {r["name"]: r for r in report}
    for prefix, seq in [("", module)] + list(module.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        kids = list(seq._modules.items())
        for (lname, lin), (aname, act) in zip(kids, kids[1:]):
            name = _activation_name(act)
            if isinstance(lin, CheckedLinear) and lin.activation is None and name:
                lin.activation = name
                lin._auto_cache.clear()
                folded = _Folded(act)
                seq._modules[aname] = folded
                full = f"{prefix}.{lname}" if prefix else lname
                if full in by_name:
                    by_name[full]["activation"] = name


def _wrap(child, name, state, CheckedLinear, CheckedConv2d):
    nn = torch().nn
    if type(child) is nn.Linear:
        return CheckedLinear(child, name, state)
    return CheckedConv2d(child, name, state, _conv_padding(child))


def _walk(module, prefix=""):
    """Yield (qualified name, parent, attribute name, child) without entering leaves
    that we protect or that own their GEMMs (e.g. MultiheadAttention)."""
    nn = torch().nn
    _Checked = _classes()[0]
    for child_name, child in list(module.named_children()):
        name = f"{prefix}.{child_name}" if prefix else child_name
        yield name, module, child_name, child
        if isinstance(child, (_Checked, nn.MultiheadAttention, nn.RNNBase)):
            continue
        yield from _walk(child, name)


def is_protected(module):
    """True when ``module`` was returned by :func:`protect` (and not unprotected)."""
    return hasattr(module, _STATE_ATTR)


def _state_of(module):
    state = getattr(module, _STATE_ATTR, None)
    if state is None:
        raise ValueError("module is not protected; call dartboost.gpu.protect first")
    return state


def unprotect(module):
    """Restore the original layers; returns the unprotected model.

    The original ``nn.Linear``/``nn.Conv2d`` objects come back, holding the
    (possibly moved or updated) parameters of the checked layers.  Calling it on
    a model that is not protected returns the model unchanged.
    """
    state = getattr(module, _STATE_ATTR, None)
    if state is None:
        return module
    for h in state.hooks:
        h.remove()
    delattr(module, _STATE_ATTR)
    _Checked = _classes()[0]

    def restore(layer):
        if layer._aug is not None:
            layer._aug.release(layer.weight, layer.bias)
        orig = layer._orig
        orig.weight = layer.weight
        orig.bias = layer.bias
        orig.train(layer.training)
        return orig

    for _, parent, child_name, child in list(_walk(module)):
        if isinstance(child, _Checked):
            setattr(parent, child_name, restore(child))
        elif type(child).__name__ == "_Folded" and hasattr(child, "original"):
            setattr(parent, child_name, child.original)
    if isinstance(module, _Checked):
        return restore(module)
    return module


def protection_report(module):
    """List of ``{'name', 'type', 'status', 'scheme', 'reason'}`` per relevant layer.

    ``status`` is ``'protected'``, ``'unsupported'`` (a GEMM-like layer left as it
    was) or ``'not_gemm'`` (has parameters, e.g. normalisation, not covered).
    Protected layers also list ``activation`` (folded into the layer, or None)
    and ``plans``: for every batch size seen under ``scheme='auto'``, the
    decision of the cost model and its one-line explanation.
    """
    st = _state_of(module)
    _Checked = _classes()[0]
    layers = {m.layer_name: m for m in module.modules() if isinstance(m, _Checked)}
    out = []
    for r in st.report:
        r = dict(r)
        m = layers.get(r["name"])
        if m is not None:
            r["activation"] = m.activation
            r["plans"] = {rows: {"scheme": p["scheme"], "reason": p["reason"]}
                          for rows, p in sorted(m._plans.items())}
        out.append(r)
    return out


def fault_log(module):
    """Events and counters of a protected model.

    Returns
    -------
    dict with ``events`` (list of :class:`FaultEvent`, latest last, at most 1000)
    and ``counts`` (layer calls, flagged, transient, weight, unconfirmed,
    forwards, recomputed forwards).
    """
    st = _state_of(module)
    return {"events": list(st.events), "counts": dict(st.counts)}


def check(module):
    """Resolve the checks recorded during CUDA-graph capture (after a replay).

    Returns the list of :class:`FaultEvent` and applies ``on_fault`` like a
    normal forward would (except that ``'recompute'`` cannot re-run a graph and
    raises instead).
    """
    st = _state_of(module)
    events = resolve(st, list(st.captured))
    confirmed = [e for e in events if e.confirmed]
    if confirmed:
        apply_on_fault(st, confirmed, None, stacklevel=3)
    return events


def weight_events(module):
    """``'weight'`` events of the protected layers whose weights changed (exact test)."""
    _Checked = _classes()[0]
    events = []
    with torch().no_grad():
        for m in module.modules():
            if isinstance(m, _Checked) and m.scheme != "off" and not m.weights_intact():
                events.append(FaultEvent(m.layer_name, "scrub", "weight", float("inf"),
                                         float("inf"), [], m.alpha))
    return events


def verify_weights(module):
    """Scrub: compare every protected layer's weights with their checksums, exactly.

    The per-call checks compare sums of rounded outputs, so a weight fault whose
    effect on the outputs is below their rounding noise (a flipped low mantissa
    bit, a weight flushed towards zero) passes them; such faults can still flip
    the prediction of a near-tie sample. Weights do not change between
    :func:`refresh_checksums` calls, so this compares them exactly with the
    build-time column sums (float64 sums of fp16 weights are exact) and the
    augmented checksum rows. It reads every weight once and synchronises, so
    call it on a schedule (every so many batches, or between CUDA-graph replays),
    not inside a capture.

    Returns
    -------
    list of FaultEvent
        One ``kind='weight'`` event per corrupted layer; ``on_fault`` is applied
        (``'flag'`` warns, otherwise :class:`ABFTFaultError`: recomputation
        cannot repair a stored weight).
    """
    st = _state_of(module)
    events = weight_events(module)
    if events:
        st.log(events)
        st.counts["weight"] += len(events)
        apply_on_fault(st, events, None, stacklevel=3)
    return events


def refresh_checksums(module):
    """Recompute the weight checksums (after legitimately changing the weights)."""
    _state_of(module)
    _Checked = _classes()[0]
    for m in module.modules():
        if isinstance(m, _Checked):
            m.refresh()
    return module
