"""Bit-flip fault injection and detection reports for protected models.

Fault sites (one bit of one element per trial):

``'output'``       the layer output element as computed, before it is checked
                   (tile: in the kernel's epilogue; global: in ``Y``);
``'accumulator'``  the fp32 partial sum of one output after a chosen K block
                   (tile: in the kernel's registers; global: emulated by
                   splitting the reduction at the same point);
``'input'``        one element of the input fragment that the GEMM multiplies
                   (not the copy the checksum read);
``'weight'``       one element of the weight the GEMM reads, in memory *after*
                   checksumming (a persistent fault; restored after the trial);
``'swap'``         two outputs of one row exchanged (a misrouted store), ``col``
                   and ``bit`` naming the two columns.

The injection is attached to the target layer only for the duration of
:func:`inject_fault` (the layer's compute is wrapped; no production state holds
it).

Bits are numbered from the least significant bit of the element's storage type
(fp16/bf16: 0-15, fp32: 0-31; the accumulator is always fp32).
"""
import math
import warnings
from contextlib import contextmanager

import numpy as np

from ._lazy import torch
from ._events import ABFTFaultWarning
from ._protect import _STATE_ATTR, _classes, weight_events
from ._resolution import resolve as _resolve

__all__ = ["flip_bit", "inject_fault", "detection_report", "SITES"]

SITES = ("output", "accumulator", "input", "weight")
#: Sites that are not single bit flips (drawn only when asked for).
EXTRA_SITES = ("swap",)
_SITE_CODE = {"accumulator": 1, "output": 2, "input": 3}


def _int_view(t_dtype):
    t = torch()
    return {t.float16: t.int16, t.bfloat16: t.int16, t.float32: t.int32,
            t.float64: t.int64}[t_dtype]


def _nbits(t_dtype):
    return 8 * torch().empty((), dtype=t_dtype).element_size()


def flip_bit(tensor, index, bit):
    """Flip one bit of one element of ``tensor`` in place.

    Parameters
    ----------
    tensor : torch.Tensor
        Floating-point tensor (fp16, bf16, fp32, fp64), any device.
    index : tuple of int
        Element index.
    bit : int
        Bit position, 0 = least significant bit of the storage format.

    Returns
    -------
    (old, new) : tuple of float
    """
    nbits = _nbits(tensor.dtype)
    if not 0 <= bit < nbits:
        raise ValueError(f"bit must be in [0, {nbits}) for {tensor.dtype}, got {bit}")
    data = tensor.detach()
    old = float(data[index])
    iv = data.view(_int_view(tensor.dtype))
    mask = (1 << bit) if bit < nbits - 1 else -(1 << (nbits - 1))
    iv[index] ^= mask
    return old, float(data[index])


def _flip_value(value, bit, dtype):
    """Return ``value`` (a 0-d tensor of ``dtype``) with ``bit`` flipped."""
    v = value.detach().clone().to(dtype).reshape(1)
    flip_bit(v, (0,), bit)
    return v[0]


class _Injection:
    """A one-shot fault consumed by the next call of ``layer``."""

    def __init__(self, layer, site, row, col, bit, k_step, block_k):
        self.layer, self.site = layer, site
        self.row, self.col, self.bit, self.k_step, self.block_k = row, col, bit, k_step, block_k
        self.fired = False

    def kernel_args(self):
        return (_SITE_CODE[self.site], self.row, self.col, self.bit, self.k_step)

    def _a_row(self, x, geo, conv_params):
        """Row ``self.row`` of the (implicit im2col) A matrix, float64."""
        t = torch()
        if not geo.is_conv:
            return x[self.row].to(t.float64)
        F = t.nn.functional
        stride, padding, dilation = conv_params
        nb, p = divmod(self.row, geo.OH * geo.OW)
        oh, ow = divmod(p, geo.OW)
        xp = F.pad(x[nb:nb + 1].to(t.float64), (padding[1], padding[1], padding[0], padding[0]))
        h0, w0 = oh * stride[0], ow * stride[1]
        patch = xp[0, :, h0:h0 + dilation[0] * (geo.KH - 1) + 1:dilation[0],
                   w0:w0 + dilation[1] * (geo.KW - 1) + 1:dilation[1]]
        return patch.reshape(-1)

    def _out_index(self, geo, col):
        if not geo.is_conv:
            return (self.row, col)
        nb, p = divmod(self.row, geo.OH * geo.OW)
        oh, ow = divmod(p, geo.OW)
        return (nb, col, oh, ow)

    def apply_after(self, layer, x, y, geo, conv_params, with_bias=True):
        """Torch emulation of the in-kernel faults on an already computed ``y``.

        ``with_bias=False``: ``y`` is the GEMM output before the bias is added.
        """
        t = torch()
        if self.site == "output":
            flip_bit(y, self._out_index(geo, self.col), self.bit)
            return y
        if self.site == "swap":
            i, j = self._out_index(geo, self.col), self._out_index(geo, self.bit % geo.N)
            a, b = y[i].clone(), y[j].clone()
            y[i], y[j] = b, a
            return y
        w = layer.weight.detach().reshape(geo.N, geo.K).to(t.float64)
        b = (layer.bias.detach().to(t.float64) if layer.bias is not None and with_bias
             else t.zeros(geo.N, dtype=t.float64, device=w.device))
        a = self._a_row(x, geo, conv_params)
        if self.site == "input":
            a_bad = a.clone()
            a_bad[self.col] = _flip_value(a[self.col], self.bit, x.dtype).to(t.float64)
            row = (w @ a_bad + b).to(y.dtype)
            for j in range(geo.N):
                y[self._out_index(geo, j)] = row[j]
            return y
        # accumulator: fp32 partial sum after K block k_step, bit flipped, then the rest
        k0 = min(geo.K, (self.k_step + 1) * self.block_k)
        j = self.col
        part = (a[:k0] * w[j, :k0]).sum().to(t.float32)
        part = _flip_value(part, self.bit, t.float32).to(t.float64)
        val = part + (a[k0:] * w[j, k0:]).sum() + b[j]
        y[self._out_index(geo, j)] = val.to(y.dtype)
        return y


def _layers(module):
    _Checked = _classes()[0]
    return [m for m in module.modules() if isinstance(m, _Checked)]


@contextmanager
def inject_fault(module, layer, site, bit, row=0, col=0, k_step=0, block_k=None):
    """Context manager that injects one bit flip into the next call of ``layer``.

    Parameters
    ----------
    module : protected torch.nn.Module
    layer : str
        Qualified layer name (see :func:`protection_report`).
    site : {'output', 'accumulator', 'input', 'weight'}
    bit : int
    row, col : int
        Output element ``(row, col)`` of the layer lowered to a GEMM (row = output
        pixel for convolutions); for ``'input'`` ``col`` is the K index; for
        ``'weight'`` ``(row, col)`` index the ``(N, K)`` weight matrix.
    k_step : int
        K block after which the accumulator is corrupted.
    block_k : int, optional
        K block size of the emulated accumulator fault (default: the kernel's).

    Yields
    ------
    None
    """
    st = getattr(module, _STATE_ATTR, None)
    if st is None:
        raise ValueError("module is not protected; call dartboost.gpu.protect first")
    if site not in SITES + EXTRA_SITES:
        raise ValueError(f"site must be one of {SITES + EXTRA_SITES}, got {site!r}")
    target = next((m for m in _layers(module) if m.layer_name == layer), None)
    if target is None:
        raise ValueError(f"no protected layer named {layer!r}")
    if site == "weight":
        w = target.gemm_operand().data.view(target.weight.shape[0], -1)
        saved = w[row, col].clone()
        flip_bit(w, (row, col), bit)
        try:
            yield
        finally:
            w[row, col] = saved
        return
    target.__dict__["_injection"] = _Injection(target, site, row, col, bit, k_step,
                                               block_k or 32)
    try:
        yield
    finally:
        target.__dict__.pop("_injection", None)


def _default_predict(out):
    out = out.detach().float()
    if out.dim() >= 2 and out.shape[-1] > 1:
        return out.argmax(-1).cpu().numpy()
    return (out.reshape(len(out), -1)[:, 0] > 0).cpu().numpy()


def _forward_with_ledger(module, st, x):
    """Run a forward pass keeping the checks unresolved; return (output, entries)."""
    st.inner, st.in_root, st.ledger = True, True, []
    try:
        out = module(x)
    finally:
        st.inner, st.in_root = False, False
    entries, st.ledger = st.ledger, []
    return out, entries


def _block_k(layer, entry):
    from ._abft import ConvGeometry
    from ._lazy import interpreter_active
    from ._triton_gemm import pick_config
    x = entry.x
    if x.dim() == 4:
        geo = ConvGeometry.conv(x, layer.weight, layer.stride, layer.padding, layer.dilation)
    else:
        geo = ConvGeometry.linear(x, layer.weight.shape[0])
    if entry.scheme == "tile" and (x.is_cuda or interpreter_active()):
        bk = pick_config(geo.M, geo.N, geo.K, geo.is_conv)[2]
    elif entry.scheme == "stream" and (x.is_cuda or interpreter_active()):
        from ._stream import stream_config
        from ._triton_gemm import _sms
        bk = stream_config(geo.M, geo.N, geo.K, x.element_size(), _sms(x.device))[2]
    else:
        bk = 32
    return geo, bk


def detection_report(module, X, n_trials=1000, *, sites=SITES, bits=None, n_clean=100,
                     predict=None, random_state=0, clean_noise=0.05, scrub=False):
    """Inject random bit flips into a protected model and measure detection.

    Parameters
    ----------
    module : protected torch.nn.Module
    X : torch.Tensor
        A batch of realistic inputs (on the model's device and dtype).
    n_trials : int, default=1000
        Faulty forward passes (one bit flip each).
    sites : sequence of str
        Fault sites to draw from (see module docstring), uniformly.
    bits : sequence of int, optional
        Bit positions to draw from (default: every bit of the site's type).
    n_clean : int, default=100
        Fault-free forward passes for the false-positive rate, on ``X`` plus
        Gaussian noise of ``clean_noise`` times its standard deviation.
    predict : callable, optional
        Maps the model output to predictions; default argmax over the last axis
        (or ``> 0`` for one output).  A trial "changes the prediction" when any
        row's prediction differs from the fault-free one.
    random_state : int
    scrub : bool, default=False
        Also run :func:`dartboost.gpu.verify_weights` after every faulty forward
        pass (a weight scrub per batch: exact, but it reads every weight once).
        Records then carry ``detected_by_check`` (the per-call checks alone).

    Returns
    -------
    report : dict
        ``by_site``, ``by_bit`` (per site and bit), ``by_magnitude`` (relative
        error of the corrupted layer output, decades), ``prediction_changing``
        (detection among trials that changed a prediction), ``false_positive``
        (flagged / confirmed over clean layer checks), ``trials`` (per-trial
        records) and ``counts``.
    """
    t = torch()
    st = getattr(module, _STATE_ATTR, None)
    if st is None:
        raise ValueError("module is not protected; call dartboost.gpu.protect first")
    bad_sites = set(sites) - set(SITES + EXTRA_SITES)
    if bad_sites:
        raise ValueError(f"unknown fault sites {sorted(bad_sites)}; choose from "
                         f"{SITES + EXTRA_SITES}")
    predict = predict or _default_predict
    rng = np.random.default_rng(random_state)
    layers = _layers(module)
    if not layers:
        raise ValueError("the model has no protected layers")
    trials = []
    with t.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ABFTFaultWarning)
        out_clean, entries = _forward_with_ledger(module, st, X)
        pred_clean = predict(out_clean)
        info = {}
        for e in entries:
            if e.layer not in info:
                geo, bk = _block_k(e.layer, e)
                info[e.layer] = (geo, bk, e.y.detach().clone(), e.scheme)
        targets = [m for m in layers if m in info]
        for _ in range(n_trials):
            site = sites[rng.integers(len(sites))]
            layer = targets[rng.integers(len(targets))]
            geo, bk, y_clean, scheme = info[layer]
            nbits = 32 if site == "accumulator" else _nbits(layer.weight.dtype)
            if site == "swap":
                nbits = geo.N  # 'bit' is the second column
            bit = int(rng.choice(bits)) if bits is not None else int(rng.integers(nbits))
            if bit >= nbits:
                continue
            if site == "weight":
                row, col, k_step = int(rng.integers(geo.N)), int(rng.integers(geo.K)), 0
            elif site == "input":
                row, col = int(rng.integers(geo.M)), int(rng.integers(geo.K))
                k_step = col // bk
            else:
                row, col = int(rng.integers(geo.M)), int(rng.integers(geo.N))
                k_step = int(rng.integers(-(-geo.K // bk)))
            n_before = len(st.events)
            with inject_fault(module, layer.layer_name, site, bit, row, col, k_step, bk):
                out, fentries = _forward_with_ledger(module, st, X)
                check_events = _resolve(st, fentries)
                by_check = any(e.confirmed for e in check_events)
                events = check_events + (weight_events(module) if scrub else [])
            del st.events[n_before:]  # injected faults are not the model's history
            for k in ("flagged", "transient", "weight", "unconfirmed"):
                st.counts[k] -= sum(1 for e in check_events if k == "flagged" or e.kind == k)
            y_f = next((e.y for e in fentries if e.layer is layer), None)
            err = float("inf")
            if y_f is not None:
                diff = (y_f.to(t.float64) - y_clean.to(t.float64)).abs()
                err = float(diff.max()) if bool(t.isfinite(diff).all()) else float("inf")
            scale = float(y_clean.abs().max().to(t.float64)) + 1e-30
            changed = bool(np.any(predict(out) != pred_clean))
            trials.append({
                "site": site, "layer": layer.layer_name, "scheme": scheme, "bit": bit,
                "abs_error": err, "rel_error": err / scale,
                "detected": any(e.confirmed for e in events),
                "flagged": bool(events), "prediction_changed": changed,
                **({"detected_by_check": by_check} if scrub else {})})
        # False positives on clean data.
        fp_checks = fp_flagged = fp_confirmed = 0
        std = float(X.float().std()) if X.numel() > 1 else 1.0
        gen = t.Generator(device="cpu").manual_seed(int(random_state))
        for _ in range(n_clean):
            noise = t.randn(X.shape, generator=gen).to(X.device, X.dtype)
            _, entries = _forward_with_ledger(module, st, X + clean_noise * std * noise)
            fp_checks += len(entries)
            n_before = len(st.events)
            events = _resolve(st, entries)
            fp_flagged += len(events)
            fp_confirmed += sum(e.confirmed for e in events)
    return _summarise(trials, fp_checks, fp_flagged, fp_confirmed, n_clean)


def _rate(d, n):
    return (d / n) if n else float("nan")


def _summarise(trials, fp_checks, fp_flagged, fp_confirmed, n_clean):
    by_site, by_bit, by_mag = {}, {}, {}
    for tr in trials:
        s = by_site.setdefault(tr["site"], [0, 0])
        s[0] += 1
        s[1] += tr["detected"]
        b = by_bit.setdefault(tr["site"], {}).setdefault(tr["bit"], [0, 0, 0, 0])
        b[0] += 1
        b[1] += tr["detected"]
        b[2] += tr["prediction_changed"]
        b[3] += tr["prediction_changed"] and tr["detected"]
        r = tr["rel_error"]
        if r == 0:
            key = "0"
        elif not math.isfinite(r) or r >= 1e6:
            key = ">=1e6 or non-finite"
        else:
            lo = max(-8, math.floor(math.log10(r)))
            key = f"[1e{lo},1e{lo + 1})" if lo > -8 else "<1e-7"
        m = by_mag.setdefault(key, [0, 0, 0])
        m[0] += 1
        m[1] += tr["detected"]
        m[2] += tr["prediction_changed"]
    changed = [tr for tr in trials if tr["prediction_changed"]]
    n_changed_det = sum(tr["detected"] for tr in changed)

    def mag_order(k):
        if k == "0":
            return -100
        if k == "<1e-7":
            return -99
        if k.startswith(">="):
            return 100
        return int(k[3:k.index(",")])

    return {
        "n_trials": len(trials),
        "by_site": {k: {"trials": v[0], "detected": v[1], "rate": _rate(v[1], v[0])}
                    for k, v in sorted(by_site.items())},
        "by_bit": {site: [{"bit": bit, "trials": v[0], "detected": v[1],
                           "rate": _rate(v[1], v[0]), "prediction_changed": v[2],
                           "prediction_changed_detected": v[3]}
                          for bit, v in sorted(d.items())]
                   for site, d in sorted(by_bit.items())},
        "by_magnitude": [{"rel_error": k, "trials": by_mag[k][0], "detected": by_mag[k][1],
                          "rate": _rate(by_mag[k][1], by_mag[k][0]),
                          "prediction_changed": by_mag[k][2]}
                         for k in sorted(by_mag, key=mag_order)],
        "prediction_changing": {"trials": len(changed), "detected": n_changed_det,
                                "rate": _rate(n_changed_det, len(changed)),
                                **({"detected_by_check": sum(tr["detected_by_check"]
                                                             for tr in changed)}
                                   if trials and "detected_by_check" in trials[0] else {})},
        "false_positive": {"clean_forwards": n_clean, "layer_checks": fp_checks,
                           "flagged": fp_flagged, "confirmed": fp_confirmed,
                           "flag_rate": _rate(fp_flagged, fp_checks),
                           "rate": _rate(fp_confirmed, fp_checks)},
        "trials": trials,
    }
