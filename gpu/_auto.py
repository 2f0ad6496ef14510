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

__all__ = ["arithmetic_intensity", "choose_scheme", "device_ridge", "measure_ridge"]

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
    path = _cache_path()
    try:
        with open(path) as fh:
            cache = json.load(fh)
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]["ridge"], "cache"
    res = measure_ridge(dev)
    cache[key] = res
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(cache, fh, indent=1)
        os.replace(tmp, path)
    except OSError:  # read-only home: the measurement is still used for this process
        pass
    return res["ridge"], "measured"
