"""Measurements behind ``scheme='auto'`` and ``alpha``: device constants, caches, calibration.

The rules themselves are pure (:mod:`dartboost.gpu._auto`); this module measures
the device (ridge point, cost-model constants, the tile/global crossover) and
caches the results in ``~/.cache/dartboost/gpu_calibration.json`` (override the
folder with ``DARTBOOST_CACHE_DIR``), and sets per-layer ``alpha`` from clean runs
(:func:`calibrate`).
"""
import json
import math
import os
import time

from ._abft import DEFAULT_ALPHA
from ._auto import DEFAULT_CALIBRATION, TILE_EFFICIENCY, arithmetic_intensity, spec_of
from ._lazy import torch

__all__ = ["device_ridge", "measure_ridge", "auto_threshold", "calibrate_auto",
           "default_calibration", "measure_cost_model", "calibrate"]


def _load_cache():
    try:
        with open(_cache_path()) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _store_cache(key, value):
    path = _cache_path()
    cache = _load_cache()
    cache[key] = value
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(cache, fh, indent=1)
        os.replace(tmp, path)
    except OSError:  # read-only home: the value is still used for this process
        pass


def _cache_path():
    root = os.environ.get("DARTBOOST_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "dartboost")
    return os.path.join(root, "gpu_calibration.json")


def measure_ridge(device=None, size=8192, copy_bytes=1 << 30, reps=10):
    """Measure the device's fp16 FLOP/byte ratio (about a second on a big GPU).

    Returns
    -------
    dict with ``flops``, ``bandwidth`` (bytes/s, read + write) and ``ridge``.
    """
    t = torch()
    dev = t.device(device or "cuda")
    a = t.randn(size, size, device=dev, dtype=t.float16)
    b = t.randn(size, size, device=dev, dtype=t.float16)
    src = t.empty(copy_bytes // 2, dtype=t.float16, device=dev).normal_()
    dst = t.empty_like(src)

    def timed(fn):
        fn()
        t.cuda.synchronize(dev)
        times = []
        for _ in range(reps):
            s, e = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        times.sort()
        return times[len(times) // 2]

    flops = 2.0 * size ** 3 / timed(lambda: t.matmul(a, b))
    bw = 2.0 * copy_bytes / timed(lambda: dst.copy_(src))
    return {"flops": flops, "bandwidth": bw, "ridge": flops / bw, "measured_at": time.time()}


def device_ridge(device=None, calibrate=False):
    """FLOP/byte ridge point of a CUDA device.

    Parameters
    ----------
    device : torch.device or str, optional
    calibrate : bool
        Measure instead of using the data-sheet table (result cached per device
        name and torch version; delete the cache file to re-measure).

    Returns
    -------
    ridge : float
    source : str
        ``'table'``, ``'cache'`` or ``'measured'``.
    """
    t = torch()
    dev = t.device(device or "cuda")
    if dev.type != "cuda":
        raise ValueError("device_ridge needs a CUDA device")
    name = t.cuda.get_device_name(dev)
    if not calibrate:
        spec = spec_of(name)
        if spec is not None:
            return spec[0] / spec[1], "table"
    key = f"{name}|torch {t.__version__}"
    cache = _load_cache()
    if key in cache and "ridge" in cache[key]:
        return cache[key]["ridge"], "cache"
    res = measure_ridge(dev)
    _store_cache(key, {**cache.get(key, {}), **res})
    return res["ridge"], "measured"


def auto_threshold(device=None):
    """AI threshold (FLOP/byte) below which ``scheme='auto'`` picks the tile scheme.

    Returns
    -------
    threshold : float
    source : str
        ``'calibrated'`` (measured crossover, see :func:`calibrate_auto`) or
        ``'ridge x TILE_EFFICIENCY'``.
    """
    t = torch()
    dev = t.device(device or "cuda")
    key = f"{t.cuda.get_device_name(dev)}|torch {t.__version__}"
    hit = _load_cache().get(key, {}).get("crossover")
    if hit is not None:
        return hit, "calibrated"
    return TILE_EFFICIENCY * device_ridge(dev)[0], "ridge x TILE_EFFICIENCY"


def calibrate_auto(device=None, sizes=(512, 1024, 2048), batches=(1, 16, 64, 256, 1024),
                   reps=10):
    """Measure where the tile scheme stops being cheaper than global; cache it.

    Times both schemes (fp16, CUDA graphs) on square-ish GEMMs ``M x K @ K x N``
    with ``K = N`` in ``sizes`` and ``M`` in ``batches`` (compiles the kernels
    first: ~10-30 s), and picks the AI threshold that makes :func:`choose_scheme`
    agree with the measurements most often.

    Returns
    -------
    dict with ``crossover`` (the threshold) and ``points`` (AI, tile s, global s).
    """
    from ._abft import ConvGeometry
    from ._protect import protect
    t = torch()
    dev = t.device(device or "cuda")
    points = []
    for kn in sizes:
        lin = t.nn.Linear(kn, kn).to(dev, t.float16).requires_grad_(False)
        for m in batches:
            x = t.randn(m, kn, device=dev, dtype=t.float16)
            times = {}
            for scheme in ("tile", "global"):
                layer = protect(_copy_module(lin), scheme=scheme, on_fault="flag")
                with t.no_grad():
                    layer(x)
                    times[scheme] = _graph_time(lambda: layer(x), reps=reps, inner=20)
            geo = ConvGeometry.linear(x, kn)
            points.append((arithmetic_intensity(geo.M, geo.N, geo.K), times["tile"],
                           times["global"]))
    candidates = sorted({p[0] for p in points})
    cuts = [candidates[0] / 2] + [(a + b) / 2 for a, b in zip(candidates, candidates[1:])] \
        + [candidates[-1] * 2]
    best = max(cuts, key=lambda c: (sum((ai < c) == (tt < tg) for ai, tt, tg in points), -c))
    key = f"{t.cuda.get_device_name(dev)}|torch {t.__version__}"
    _store_cache(key, {**_load_cache().get(key, {}), "crossover": best})
    return {"crossover": best, "points": points}


def _copy_module(m):
    import copy
    return copy.deepcopy(m)


def default_calibration(device=None):
    """Cost-model constants for a device: measured (cached) if available, else the
    data-sheet table scaled like :data:`DEFAULT_CALIBRATION`, else the defaults."""
    cal = dict(DEFAULT_CALIBRATION)
    t = torch()
    if device is None or t.device(device).type != "cuda":
        return cal
    dev = t.device(device)
    name = t.cuda.get_device_name(dev)
    spec = spec_of(name)
    if spec is not None:
        cal.update(flops=spec[0], bandwidth=0.83 * spec[1], source="table")
    hit = _load_cache().get(f"{name}|torch {t.__version__}", {}).get("cost_model")
    if hit:
        cal.update(hit)
        cal["source"] = "calibrated"
    return cal


def calibrate(module, batches, safety=4.0, min_alpha=DEFAULT_ALPHA):
    """Set each layer's ``alpha`` from fault-free runs.

    Runs the protected model on ``batches`` (an iterable of inputs, or of tuples
    of positional inputs), records each layer's largest clean ratio ``r_max`` and
    sets ``alpha = max(min_alpha, safety * r_max)``.

    Returns
    -------
    dict mapping layer name to ``{'max_ratio', 'alpha', 'calls'}``.
    """
    t = torch()
    from ._protect import _classes, _state_of
    st = _state_of(module)
    _Checked = _classes()[0]
    layers = [m for m in module.modules() if isinstance(m, _Checked)]
    seen = {id(m): [0.0, 0] for m in layers}
    saved = {id(m): m.alpha for m in layers}
    for m in layers:
        m.alpha = float("inf")  # nothing is flagged while we measure
    try:
        with t.no_grad():
            for b in batches:
                args = b if isinstance(b, tuple) else (b,)
                st.inner = True  # keep the ledger; resolve ourselves
                st.in_root = True
                st.ledger = []
                try:
                    module(*args)
                finally:
                    st.inner = False
                    st.in_root = False
                for e in st.ledger:
                    r = float(e.ratio.max()) if e.ratio.numel() else 0.0
                    s = seen[id(e.layer)]
                    s[0] = max(s[0], r)
                    s[1] += 1
                st.ledger = []
    except BaseException:
        for m in layers:
            m.alpha = saved[id(m)]
        raise
    out = {}
    for m in layers:
        r, n = seen[id(m)]
        if not math.isfinite(r):
            m.alpha = saved[id(m)]
            raise ValueError(f"{m.layer_name}: non-finite check ratio on calibration data "
                             "(NaN/Inf inputs or outputs?)")
        m.alpha = max(min_alpha, safety * r) if n else saved[id(m)]
        out[m.layer_name] = {"max_ratio": r, "alpha": m.alpha, "calls": n}
    return out


def _graph_time(fn, reps=20, inner=10):
    """Median seconds of ``fn`` replayed in a CUDA graph (``inner`` calls per graph)."""
    import statistics
    t = torch()
    s = t.cuda.Stream()
    s.wait_stream(t.cuda.current_stream())
    with t.cuda.stream(s):
        fn()
    t.cuda.current_stream().wait_stream(s)
    g = t.cuda.CUDAGraph()
    with t.cuda.graph(g):
        for _ in range(inner):
            fn()
    g.replay()
    t.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / 1e3 / inner)
    return statistics.median(out)


def _check_latency(dev):
    """Extra graph time of the fused check over its GEMM on a small layer (seconds)."""
    from ._augmented import AugmentedWeight, check_workspace, fused_linear
    t = torch()
    lin = t.nn.Linear(1024, 1024).to(dev, t.float16).requires_grad_(False)
    aug = AugmentedWeight(lin.weight, lin.bias)
    x = t.randn(8, 1024, device=dev, dtype=t.float16)
    ws, xn = check_workspace(8, dev), x.float().pow(2).sum(1)
    with t.no_grad():
        t_gemm = _graph_time(lambda: t.mm(x, aug.gemm_weight.t()))
        t_full = _graph_time(lambda: fused_linear(x, aug, "relu", x_norm2=xn, workspace=ws))
    return t_full - t_gemm


def _weight_ring(dev, kn, n_copies):
    """``n_copies`` distinct fp16 ``kn x kn`` layers (augmented) and their inputs."""
    from ._augmented import AugmentedWeight
    t = torch()
    lins = [t.nn.Linear(kn, kn).to(dev, t.float16).requires_grad_(False)
            for _ in range(n_copies)]
    return lins, [AugmentedWeight(lin.weight, lin.bias) for lin in lins]


def _stream_constants(dev):
    """Fixed cost and weight-streaming rate of the stream kernel and of cuBLAS (fp16).

    Batch-1 layers of 1024^2 and 4096^2 separate each one's fixed cost from its
    weight-streaming rate; a batch-256 4096^2 layer gives the stream kernel's
    tensor-core rate.  Every timing cycles through distinct weight copies
    together larger than three times the L2 cache, so the weights stream from
    DRAM as in a real network (one copy replayed would be read from L2).
    """
    from ._stream import stream_config, stream_linear, stream_workspace
    from ._triton_gemm import _sms
    t = torch()
    l2 = int(getattr(t.cuda.get_device_properties(dev), "L2_cache_size", 50 << 20) or 50 << 20)
    times, base = {}, {}
    for m, kn in ((1, 1024), (1, 4096), (256, 4096)):
        n_copies = max(2, -(-3 * l2 // (2 * (kn + 16) * kn)))
        lins, augs = _weight_ring(dev, kn, n_copies)
        x = t.randn(m, kn, device=dev, dtype=t.float16)
        cfg = stream_config(m, kn, kn, 2, _sms(dev))
        ws = stream_workspace(m, kn, cfg[3], dev)
        with t.no_grad():
            times[(m, kn)] = _graph_time(lambda: [stream_linear(x, a, "relu", workspace=ws,
                                                                config=cfg) for a in augs],
                                         inner=1) / n_copies
            base[(m, kn)] = _graph_time(lambda: [t._addmm_activation(lin.bias, x, lin.weight.t())
                                                 for lin in lins], inner=1) / n_copies
        del lins, augs
    b_small, b_big = 2 * 1040 * 1024, 2 * 4112 * 4096
    rate = (b_big - b_small) / max(times[(1, 4096)] - times[(1, 1024)], 1e-9)
    g_rate = (2 * 4096 * 4096 - 2 * 1024 * 1024) / max(base[(1, 4096)] - base[(1, 1024)], 1e-9)
    flops = 2.0 * 256 * 4112 * 4096 / max(times[(256, 4096)], 1e-9)
    # The fixed costs are the small layer's times: max(latency, bytes / rate).
    return {"stream_latency": times[(1, 1024)], "stream_bandwidth": b_big / times[(1, 4096)],
            "stream_flops": flops, "gemm_latency": base[(1, 1024)],
            "gemm_bandwidth": 2 * 4096 * 4096 / base[(1, 4096)],
            "stream_rate_slope": rate, "gemm_rate_slope": g_rate}


def measure_cost_model(device=None, store=True):
    """Measure the constants of :func:`dartboost.gpu._auto.plan_layer` (a few seconds).

    ``flops`` (fp16 8192^3 GEMM), ``bandwidth`` (1 GiB device copy, read + write),
    ``launch`` (extra time of one more dependent tiny kernel inside a CUDA graph),
    ``check_latency`` (extra time of the fused check over its GEMM on a small
    layer), ``tile_efficiency`` (cuBLAS time / Triton tile GEMM time at 4096^2, M=512)
    the stream kernel's ``stream_latency``, ``stream_bandwidth``, ``stream_flops`` and
    cuBLAS's small-batch ``gemm_latency``, ``gemm_bandwidth`` (weights in DRAM).

    Returns
    -------
    dict, also cached per device name and torch version (``store=True``).
    """
    from ._abft import ConvGeometry, LayerChecksums
    from ._triton_gemm import tile_gemm
    t = torch()
    dev = t.device(device or "cuda")
    res = measure_ridge(dev, reps=5)
    tiny = t.zeros(16, device=dev)

    def chain(n):
        def fn():
            for _ in range(n):
                tiny.add_(1.0)
        return fn
    launch = (_graph_time(chain(21), inner=1) - _graph_time(chain(1), inner=1)) / 20
    check = _check_latency(dev)
    x = t.randn(512, 4096, device=dev, dtype=t.float16)
    w = t.randn(4096, 4096, device=dev, dtype=t.float16) / 64
    ck = LayerChecksums(w, None)
    geo = ConvGeometry.linear(x, 4096)
    t_cublas = _graph_time(lambda: t.mm(x, w.t()))
    t_tile = _graph_time(lambda: tile_gemm(x, w, None, ck, geo))
    cm = {"flops": res["flops"], "bandwidth": res["bandwidth"], "launch": max(launch, 0.0),
          "check_latency": max(check, launch, 0.0),
          "tile_efficiency": min(1.0, t_cublas / t_tile), "side_share":
          DEFAULT_CALIBRATION["side_share"], **_stream_constants(dev),
          "measured_at": time.time()}
    if store:
        key = f"{t.cuda.get_device_name(dev)}|torch {t.__version__}"
        _store_cache(key, {**_load_cache().get(key, {}), "cost_model": cm})
    return cm
