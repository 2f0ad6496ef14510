"""Fault resolution: from recorded check ratios to events, and the one ``on_fault`` policy.

A checked layer only *records* its check (a ratio tensor on the device) in the
ledger of its protected root's :class:`ProtectionState`.  Resolution happens once
per forward pass (or after a CUDA-graph replay):

1. side streams that ran checks are joined into the streams that forked them;
2. the largest ratio of every entry is read with one host copy per device;
3. every entry above ``alpha`` is *confirmed* by recomputing the layer with the
   plain torch operator and the float64 reference check, and by comparing the
   weights with their checksums -> ``'weight'``, ``'transient'`` or
   ``'unconfirmed'`` :class:`FaultEvent` (see :mod:`dartboost.gpu._protect`);
4. :func:`apply_on_fault` applies the configured policy to the confirmed events.
"""
import warnings

from ._abft import ConvGeometry, _global_check_torch, accumulation_roundoff, unit_roundoff
from ._events import ABFTFaultError, ABFTFaultWarning, FaultEvent, fault_message
from ._lazy import torch

__all__ = ["ProtectionState", "confirm", "resolve", "resolve_pending", "apply_on_fault",
           "capturing"]


class ProtectionState:
    """Configuration and bookkeeping attached to a protected root module."""

    def __init__(self, scheme, on_fault, alpha, backend, ai_threshold, max_retries):
        self.scheme, self.on_fault, self.alpha = scheme, on_fault, alpha
        self.backend, self.ai_threshold, self.max_retries = backend, ai_threshold, max_retries
        self.calibration = None  # cost-model constants of scheme='auto' (lazy)
        self.ledger = []
        self.captured = []
        self.events = []
        self.counts = {"layer_calls": 0, "flagged": 0, "transient": 0, "weight": 0,
                       "unconfirmed": 0, "forwards": 0, "recomputed_forwards": 0}
        self.in_root = False
        self.inner = False
        self.hooks = []
        self.report = []
        self._side = {}
        self._forks = []
        #: Row norms ||out_i||^2 written by checked activation layers during the
        #: current forward pass: data_ptr -> (tensor, version, norms).
        self.norms = {}

    def remember_norms(self, out, norms):
        """Record ``||out_i||^2`` of a layer output for the layer that consumes it."""
        if self.in_root:
            self.norms[out.data_ptr()] = (out, out._version, norms)

    def norms_of(self, x2):
        """``||x_i||^2`` of a 2-D layer input if a checked layer wrote it unchanged."""
        hit = self.norms.get(x2.data_ptr()) if self.in_root else None
        if hit is None:
            return None
        out, version, norms = hit
        # Same storage, same layout, not modified in place since (the version
        # counter is shared by views); the stored reference keeps the memory from
        # being reused by another tensor.
        if (out._version != version or tuple(out.shape) != tuple(x2.shape)
                or out.stride() != x2.stride() or out.dtype != x2.dtype):
            return None
        return norms

    def log(self, events):
        self.events.extend(events)
        del self.events[:-1000]

    def side_stream(self, device):
        """The side stream checks run on for ``device``; remembers the fork to join."""
        t = torch()
        key = device.index if device.index is not None else t.cuda.current_device()
        side = self._side.get(key)
        if side is None:
            side = self._side[key] = t.cuda.Stream(device=device)
        self._forks.append((t.cuda.current_stream(device), side))
        return side

    def join(self):
        """Make every stream that forked a side-stream check wait for it."""
        forks, self._forks = self._forks, []
        seen = set()
        for main, side in forks:
            if (id(main), id(side)) not in seen:
                seen.add((id(main), id(side)))
                main.wait_stream(side)


def capturing():
    t = torch()
    return t.cuda.is_available() and t.cuda.is_current_stream_capturing()


def confirm(entry):
    """Recompute a flagged layer call and classify it."""
    t = torch()
    layer = entry.layer
    ck = layer.checksums()
    weights_ok = layer.weights_intact()
    ratio_np = entry.ratio.detach().float().cpu()
    worst = float(ratio_np.max()) if ratio_np.numel() else 0.0
    bad = t.nonzero(~(ratio_np <= layer.alpha)).reshape(-1).tolist()
    if entry.scheme == "tile":
        n_pn = -(-ck.N // entry.block_n)
        where = [(i // n_pn, i % n_pn) for i in bad[:16]]
    else:
        where = bad[:16]
    x = entry.x
    y_ref = layer.reference_preactivation(x)
    if x.dim() == 4:
        geo = ConvGeometry.conv(x, layer.weight, layer.stride, layer.padding, layer.dilation)
        conv_params = (layer.stride, layer.padding, layer.dilation)
    else:
        geo = ConvGeometry.linear(x, ck.N)
        conv_params = None
    u_acc = accumulation_roundoff(x.dtype, x.device.type, geo.is_conv)
    c_x, c_y = ck.coefficients(u_acc, unit_roundoff(x.dtype), 0.0)
    r_ref = _global_check_torch(x, y_ref, ck, geo, c_x, c_y, conv_params)
    rec = float(r_ref.max()) if r_ref.numel() else 0.0
    if not weights_ok:
        kind = "weight"
    elif rec <= layer.alpha:
        kind = "transient"
    else:
        kind = "unconfirmed"
    return FaultEvent(layer.layer_name, entry.scheme, kind, worst, rec, where, layer.alpha)


def resolve(state, entries):
    """Check ratios of ``entries`` (one host sync per device); return their events."""
    t = torch()
    state.join()
    if not entries:
        return []
    by_dev = {}
    for e in entries:
        by_dev.setdefault(e.ratio.device, []).append(e)
    flagged = []
    for es in by_dev.values():
        maxes = t.stack([e.ratio.max() if e.ratio.numel() else e.ratio.new_zeros(())
                         for e in es]).cpu()
        for e, m in zip(es, maxes.tolist()):
            if not (m <= e.layer.alpha):  # NaN-safe
                flagged.append(e)
    with t.no_grad():
        events = [confirm(e) for e in flagged]
    state.counts["flagged"] += len(events)
    for ev in events:
        state.counts[ev.kind] += 1
    state.log(events)
    return events


def resolve_pending(state):
    """Resolve the ledger of the forward pass that just ended; return confirmed events.

    Inside CUDA-graph capture nothing can be read: the (graph-owned) ratio tensors
    are kept for :func:`dartboost.gpu.check` after a replay.
    """
    if capturing():
        state.join()  # side streams must rejoin before the capture ends
        state.captured = list(state.ledger)
        state.ledger = []
        return []
    entries, state.ledger = state.ledger, []
    return [e for e in resolve(state, entries) if e.confirmed]


def apply_on_fault(state, confirmed, rerun, stacklevel=3):
    """The single ``on_fault`` policy, for forward passes, bare layers and graph checks.

    Parameters
    ----------
    state : ProtectionState
    confirmed : list of FaultEvent
        Non-empty.
    rerun : callable or None
        Recomputes the output; returns ``(output, confirmed_events_of_the_rerun)``.
        ``None`` where nothing can be re-run (a CUDA-graph replay).
    stacklevel : int
        Of the :class:`ABFTFaultWarning`.

    Returns
    -------
    The recomputed output, or None to keep the original one (``'flag'``).
    """
    if state.on_fault == "flag":
        warnings.warn(fault_message(confirmed), ABFTFaultWarning, stacklevel=stacklevel)
        return None
    if state.on_fault == "raise" or rerun is None or any(e.kind == "weight"
                                                           for e in confirmed):
        raise ABFTFaultError(fault_message(confirmed), confirmed)
    for _ in range(state.max_retries):
        state.counts["recomputed_forwards"] += 1
        output, confirmed = rerun()
        if not confirmed:
            return output
    raise ABFTFaultError(fault_message(confirmed) + "\n(persisted after recomputation)",
                         confirmed)
