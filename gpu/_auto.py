"""The rules behind ``scheme='auto'``: pure functions of shapes and calibration constants.

Nothing here measures, caches or touches a device (that is
:mod:`dartboost.gpu._calibration`), so every decision can be replayed and
explained from its inputs.  :func:`plan_layer` is the cost model used by
``scheme='auto'``; :func:`choose_scheme` is the older intensity rule (kept for
the tile/global comparison it documents).

Intensity-guided choice between global and tile-level ABFT.

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
__all__ = ["arithmetic_intensity", "choose_scheme", "TILE_EFFICIENCY", "plan_layer",
           "spec_of", "DEFAULT_CALIBRATION", "STREAM_MAX_ROWS", "FUSED_PATHS", "AUTO_STREAM",
           "automatic_candidates"]

#: The two implementations of the fused (augmented-weight) check that
#: ``scheme='fused'`` chooses between per call, by the cost model.
FUSED_PATHS = ("fused", "stream")

#: Whether ``scheme='fused'`` and ``scheme='auto'`` may pick the stream kernel
#: by themselves (where :func:`plan_layer` predicts it the cheaper).  It was off
#: while a bf16 fault missed on the H200 (run 2) was open; the cause was the
#: check's tolerance (it summed the rounded outputs, so bf16's rounding hid
#: errors of ~1% of ``||y_i||``), fixed in :mod:`dartboost.gpu._stream`.
AUTO_STREAM = True


def automatic_candidates(scheme):
    """The schemes ``scheme`` ('fused' or 'auto') chooses among per call."""
    paths = FUSED_PATHS if scheme == "fused" else ("fused", "stream", "global", "tile")
    return paths if AUTO_STREAM else tuple(p for p in paths if p != "stream")

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


#: Cost-model constants used when nothing was measured (H200-like; seconds, bytes/s,
#: FLOP/s).  ``launch``: cost of one extra *dependent* kernel inside a CUDA graph
#: (2.3 us measured on an H200); ``check_latency``: fixed cost of the fused
#: scheme's check launch on a small layer (its chain of loads, atomics and the last
#: block's reads: 5.5-6 us over the GEMM on an H200, benchmarks/results/
#: abft_fused_h200_run3_breakdown.json, while a chain of trivial kernels measures
#: only 0.6-0.8 us each); ``side_share``: fraction of a side-stream check's
#: own duration that shows up on the critical path (it competes for bandwidth);
#: ``tile_efficiency``: speed of the Triton tile GEMM relative to cuBLAS.
#: ``stream_latency``, ``stream_bandwidth``, ``stream_flops``: fixed cost, weight
#: streaming rate and tensor-core rate of the weight-streaming checked kernel
#: (:mod:`dartboost.gpu._stream`); ``gemm_latency``, ``gemm_bandwidth``: the same
#: two for cuBLAS's own small-batch GEMM (``torch._addmm_activation``), the
#: baseline the stream kernel must beat.  All measured by
#: :func:`measure_cost_model` with the weights in DRAM (a ring of copies larger
#: than L2); the defaults are fitted to the H200 layer timings of run 2
#: (benchmarks/results/abft_stream_h200_run2.json: the stream kernel read 4096^2
#: and 4096x16384 weights at 3.0 TB/s and took >= 5.4 us on a 1024^2 layer;
#: cuBLAS read them at 3.3-3.9 TB/s and took >= 4 us; the cuBLAS path's check cost
#: 3.3 us over its GEMM).
DEFAULT_CALIBRATION = {"flops": 989e12, "bandwidth": 4.0e12, "launch": 2.3e-6,
                       "check_latency": 3.3e-6, "side_share": 0.1, "tile_efficiency": 0.6,
                       "stream_latency": 5.4e-6, "stream_bandwidth": 3.0e12,
                       "stream_flops": 80e12, "gemm_latency": 4.0e-6,
                       "gemm_bandwidth": 3.4e12, "source": "defaults"}

#: Largest GEMM row count the stream kernel is considered for.  On the H200 (run
#: 2) it was cheaper than cuBLAS + check pass on every 1024^2 and 4096^2 layer at
#: batch 1 and 8 and dearer on every one at batch 64 and 512 (its split-K
#: streaming GEMM is no match for cuBLAS once the MMA work counts).
STREAM_MAX_ROWS = 8


def spec_of(device_name):
    """``(fp16 dense FLOP/s, memory bytes/s)`` of a known GPU name, or None."""
    for frag, flops, bw in _SPECS:
        if frag in device_name:
            return flops, bw
    return None


def _gemm_time(M, N, K, e, cal):
    return max(2.0 * M * N * K / cal["flops"], e * (M * K + N * K + M * N) / cal["bandwidth"])


def _cal(cal, key):
    return cal.get(key, DEFAULT_CALIBRATION[key])


def _stream_time(M, N, K, e, cal):
    """Predicted seconds of the stream kernel (fixed cost, weight read, MMA rate)."""
    return (max(_cal(cal, "stream_latency"), e * (N + 16) * K / _cal(cal, "stream_bandwidth"),
                2.0 * M * (N + 16) * K / _cal(cal, "stream_flops"))
            + e * M * (K + N) / cal["bandwidth"])


def _small_gemm_time(M, N, K, e, cal):
    """Predicted seconds of cuBLAS's GEMM for a small batch (its fixed cost, weight read)."""
    return max(_cal(cal, "gemm_latency"), e * N * K / _cal(cal, "gemm_bandwidth"),
               _gemm_time(M, N, K, e, cal))


def plan_layer(M, N, K, bytes_per_element, activation, is_conv, calibration,
               candidates=("fused", "stream", "global", "tile"), norm_known=False):
    """Pick a checking scheme for one layer call from a cost model (a pure function).

    Every candidate's *extra* time over the fastest unprotected form of the layer
    (cuBLAS GEMM with the bias/activation fused in its epilogue) is predicted:

    * ``fused``: the 16 extra weight rows of the augmented GEMM; with an
      activation, one dependent check pass over the output (read the ``N + 16``
      columns, write ``N``, read the input unless ``norm_known``) plus its fixed
      ``check_latency``; without an activation, or for small outputs (then the
      activation is one more plain kernel), the check runs on a side stream:
      ``side_share`` of it counts, but never less than ``check_latency`` (the
      H200 measurements: the side check is exposed when nothing follows it);
    * ``global``: a dependent check kernel reading the input and output;
    * ``stream``: the weight-streaming Triton kernel that checks in its own
      epilogue (bias and activation included), predicted from its measured fixed
      cost, weight-streaming rate and tensor-core rate, minus cuBLAS's measured
      small-batch time; only for ``M <= STREAM_MAX_ROWS``;
    * ``tile``: the Triton GEMM's shortfall against cuBLAS (``tile_efficiency``),
      plus a separate activation pass when there is one.

    Parameters
    ----------
    M, N, K : int
        GEMM sizes.
    bytes_per_element : int
    activation : str or None
        Activation fused after the layer.
    is_conv : bool
        Convolutions have no fused/tile path worth taking (cuDNN + global).
    calibration : dict
        :func:`default_calibration` or measured constants.
    candidates : tuple of str
    norm_known : bool
        The input's row norms come from the check of the layer that produced it.

    Returns
    -------
    dict with ``scheme``, ``reason`` (one line), ``costs`` (predicted extra
    seconds per candidate) and ``baseline`` (predicted seconds of the layer).
    """
    e, cal = float(bytes_per_element), calibration
    base = _gemm_time(M, N, K, e, cal)
    if is_conv:
        return {"scheme": "global", "reason": "convolution: cuDNN plus the global check",
                "costs": {}, "baseline": base}
    bw, launch = cal["bandwidth"], cal["launch"]
    check = cal.get("check_latency", launch)
    costs = {}
    if "fused" in candidates and e <= 4:
        from ._augmented import check_on_side
        # One check launch per call; it reads the input for ||x|| only when no
        # checked layer produced it (norm_known=False, a network's first layer).
        extra_rows = _gemm_time(M, N + 16, K, e, cal) - base
        x_bytes = 0.0 if norm_known else e * M * K
        side = cal["side_share"] * (check + (e * M * (N + 16) + x_bytes) / bw)
        if activation is None:
            # The side-stream check is exposed when nothing follows it to overlap
            # (a network's last layer; single layers): on the H200 (runs 2, 3) it
            # cost +25-50% of a 4096^2 layer at batch 1-8, about check_latency.
            costs["fused"] = extra_rows + max(check, side)
        elif check_on_side(M, N, e, activation):
            # bias in the GEMM epilogue, the activation as one more kernel; on the
            # H200 (run 2) this path cost check_latency over the GEMM, not less.
            costs["fused"] = extra_rows + max(check, launch + 2 * e * M * N / bw + side)
        else:
            costs["fused"] = extra_rows + check + (e * M * (2 * N + 16) + x_bytes) / bw
    if "stream" in candidates and e <= 4 and M <= STREAM_MAX_ROWS:
        # Against cuBLAS's own small-batch time (its fixed cost and streaming
        # rate), not the roofline: both are weight reads at these batches.
        costs["stream"] = _stream_time(M, N, K, e, cal) - _small_gemm_time(M, N, K, e, cal)
    if "global" in candidates:
        costs["global"] = launch + e * (M * K + M * N) / bw \
            + (0.0 if activation is None else launch + 2 * e * M * N / bw)
    if "tile" in candidates and e <= 4:
        costs["tile"] = base * (1.0 / cal["tile_efficiency"] - 1.0) \
            + (0.0 if activation is None else launch + 2 * e * M * N / bw)
    scheme = min(costs, key=lambda k: (costs[k], k != "fused"))
    bound = "compute" if 2.0 * M * N * K / cal["flops"] >= e * (M * K + N * K + M * N) / bw \
        else "memory"
    reason = (f"{bound}-bound layer (M={M}, N={N}, K={K}, act={activation}): predicted "
              + ", ".join(f"{k} +{100 * v / base:.1f}%" for k, v in sorted(costs.items()))
              + f" over {base * 1e6:.1f} us ({cal.get('source', 'given')} constants)")
    return {"scheme": scheme, "reason": reason, "costs": costs, "baseline": base}
