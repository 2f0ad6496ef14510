"""Intensity-guided choice between global and tile-level ABFT.

Rule (after the SC'21 intensity-guided ABFT paper).  A layer lowered to a GEMM
of ``M x K`` by ``K x N`` has arithmetic intensity

    AI = 2 M N K / (bytes_per_element * (M K + K N + M N))      [FLOP / byte]

and the GPU has a ridge point ``P / B`` (peak tensor-core FLOP/s over memory
bandwidth).  Below the ridge the layer is memory-bound: the tile-level check's
extra arithmetic hides under the memory traffic, while a global check would
add a pass over the input and output, so *tile* wins.  Above the ridge the layer
is compute-bound: the tile check's extra (vector-unit) arithmetic lengthens the
critical path, while a global check's extra traffic is small next to the GEMM's
math, so *global* wins.

Which threshold.  The paper compares AI with the roofline ridge because its
tile kernel is as fast as the library GEMM.  Ours (Triton) is not everywhere: at
mid-size M it trails cuBLAS, so tile-level checking loses well before the ridge.
On an H200 the measured crossover between our tile and global schemes sat at
AI ~ 16-55 FLOP/B (benchmarks/results/abft_h200.json; calibrate_auto measured
54), about 0.2 x the roofline ridge of 206.  ``scheme='auto'`` therefore compares AI with
``auto_threshold(device)``: ``TILE_EFFICIENCY * ridge`` by default, or the
crossover measured on the device by :func:`calibrate_auto` (cached).

``ridge`` comes from a table of data-centre GPUs (fp16/bf16 dense tensor-core
peak and memory bandwidth from the vendors' data sheets) or, for cards not in the
table or on request, from a short measurement (a large fp16 GEMM and a large
device-to-device copy) cached in ``~/.cache/dartboost/gpu_calibration.json``
(override the folder with ``DARTBOOST_CACHE_DIR``).
"""
import json
import os
import time

from ._lazy import torch

__all__ = ["arithmetic_intensity", "choose_scheme", "device_ridge", "measure_ridge",
           "auto_threshold", "calibrate_auto", "TILE_EFFICIENCY"]

#: Default AI threshold of ``scheme='auto'`` as a fraction of the roofline ridge
#: (fitted to the H200 measurements, see the module docstring).
TILE_EFFICIENCY = 0.2

# name fragment -> (fp16 dense tensor FLOP/s, memory bytes/s); first match wins,
# so more specific names come first.
_SPECS = [
    ("H200", 989e12, 4.8e12),
    ("H100 PCIe", 756e12, 2.0e12),
    ("H100 NVL", 835e12, 3.9e12),
    ("H100", 989e12, 3.35e12),
    ("GH200", 989e12, 4.0e12),
    ("B200", 2250e12, 8.0e12),
    ("A100-PCIE-40GB", 312e12, 1.555e12),
    ("A100-SXM4-40GB", 312e12, 1.555e12),
    ("A100", 312e12, 2.039e12),
    ("L40S", 362e12, 0.864e12),
    ("L4", 121e12, 0.3e12),
    ("A10", 125e12, 0.6e12),
    ("T4", 65e12, 0.32e12),
    ("V100", 125e12, 0.9e12),
]


def arithmetic_intensity(M, N, K, bytes_per_element=2):
    """FLOP per byte of an ``M x K`` by ``K x N`` GEMM moving each operand once."""
    return 2.0 * M * N * K / (bytes_per_element * (M * K + K * N + M * N))


def choose_scheme(M, N, K, ridge, bytes_per_element=2):
    """``'tile'`` if the GEMM is memory-bound on a device with this ridge, else ``'global'``.

    Parameters
    ----------
    M, N, K : int
        GEMM sizes (a convolution: ``M = batch * H_out * W_out``,
        ``N = C_out``, ``K = C_in * kh * kw``).
    ridge : float
        Device FLOP/byte ratio (:func:`device_ridge`).
    bytes_per_element : int

    Returns
    -------
    {'tile', 'global'}
    """
    return "tile" if arithmetic_intensity(M, N, K, bytes_per_element) < ridge else "global"


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
        for frag, flops, bw in _SPECS:
            if frag in name:
                return flops / bw, "table"
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
    import statistics

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
                    s = t.cuda.Stream()
                    s.wait_stream(t.cuda.current_stream())
                    with t.cuda.stream(s):
                        layer(x)
                    t.cuda.current_stream().wait_stream(s)
                    g = t.cuda.CUDAGraph()
                    with t.cuda.graph(g):
                        for _ in range(20):
                            layer(x)
                    g.replay()
                    samples = []
                    for _ in range(reps):
                        a, b = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
                        a.record()
                        g.replay()
                        b.record()
                        b.synchronize()
                        samples.append(a.elapsed_time(b) / 20e3)
                times[scheme] = statistics.median(samples)
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
