"""Checksums, tolerance, the global check and the fused tile kernel.

Kernels run on CUDA when present, otherwise on CPU tensors through Triton's
interpreter (TRITON_INTERPRET=1 is set here, before triton is first imported).
"""
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from dartboost.gpu import _abft, _auto, _calibration  # noqa: E402
from dartboost.gpu._abft import (ConvGeometry, LayerChecksums, accumulation_roundoff,  # noqa: E402
                                 global_check, unit_roundoff)
from dartboost.gpu._lazy import triton_available  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not installed")
HALF = [torch.float16, torch.bfloat16]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _linear(k, n, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) / math.sqrt(k))
        if bias:
            lin.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return lin.to(DEV, dtype)


def _coeffs(ck, x, conv=False, triton=True):
    u_acc = accumulation_roundoff(x.dtype, x.device.type, conv)
    return ck.coefficients(u_acc, unit_roundoff(x.dtype), 2.0 ** -24 if triton else 0.0)


def test_unit_roundoff_values():
    assert unit_roundoff(torch.float16) == 2.0 ** -11
    assert unit_roundoff(torch.bfloat16) == 2.0 ** -8
    assert unit_roundoff(torch.float32) == 2.0 ** -24
    with pytest.raises(TypeError, match="int32"):
        unit_roundoff(torch.int32)


def test_checksums_are_column_sums():
    lin = _linear(7, 5, torch.float32)
    ck = LayerChecksums(lin.weight, lin.bias)
    w = lin.weight.detach().double().cpu()
    np.testing.assert_allclose(ck.w_sum.cpu().numpy(), w.sum(0).numpy(), rtol=1e-6)
    assert ck.b_sum.item() == pytest.approx(float(lin.bias.detach().sum()), rel=1e-6)
    ws, cx = ck.tile_sums(lin.weight, 2)
    # Three column tiles (2 + 2 + 1 padded), each the sum of its own columns.
    assert ws.shape == (3, 7) and cx.shape == (3,)
    np.testing.assert_allclose(ws[1].cpu().numpy(), w[2:4].sum(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(ws.sum(0).cpu().numpy(), w.sum(0).numpy(), rtol=1e-5)
    assert ck.matches(lin.weight)
    with torch.no_grad():
        lin.weight[2, 3] += 1e-3
    assert not ck.matches(lin.weight)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("dtype", [torch.float32] + HALF)
def test_global_check_clean_and_faulty(backend, dtype):
    lin = _linear(96, 40, dtype)
    x = torch.randn(33, 96, device=DEV).to(dtype)
    y = lin(x)
    ck = LayerChecksums(lin.weight, lin.bias)
    geo = ConvGeometry.linear(x, 40)
    r = global_check(x, y, ck, geo, *_coeffs(ck, x), backend=backend)
    assert r.shape == (33,) and float(r.max()) < _abft.DEFAULT_ALPHA
    y_bad = y.clone()
    y_bad[7, 11] += 0.5 * float(y.abs().max())
    r_bad = global_check(x, y_bad, ck, geo, *_coeffs(ck, x), backend=backend)
    flagged = torch.nonzero(r_bad > _abft.DEFAULT_ALPHA).reshape(-1).tolist()
    assert flagged == [7]
    y_nan = y.clone()
    y_nan[3, 0] = float("nan")
    r_nan = global_check(x, y_nan, ck, geo, *_coeffs(ck, x), backend=backend)
    assert math.isinf(float(r_nan[3]))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_global_check_conv_triton_matches_torch(dtype):
    conv = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1, dilation=1).to(DEV, dtype)
    x = torch.randn(2, 3, 9, 7, device=DEV).to(dtype)
    y = conv(x)
    ck = LayerChecksums(conv.weight, conv.bias)
    geo = ConvGeometry.conv(x, conv.weight, conv.stride, conv.padding, conv.dilation)
    params = (conv.stride, conv.padding, conv.dilation)
    c = _coeffs(ck, x, conv=True)
    r_t = global_check(x, y, ck, geo, *c, backend="triton")
    r_p = global_check(x, y, ck, geo, *c, backend="torch", conv_params=params)
    assert r_t.shape == (geo.M,) == r_p.shape
    assert float(r_t.max()) < _abft.DEFAULT_ALPHA
    y_bad = y.clone()
    y_bad[1, 4, 2, 3] += 3.0
    m = 1 * geo.OH * geo.OW + 2 * geo.OW + 3
    for be, kw in (("triton", {}), ("torch", {"conv_params": params})):
        r = global_check(x, y_bad, ck, geo, *c, backend=be, **kw)
        assert torch.nonzero(r > _abft.DEFAULT_ALPHA).reshape(-1).tolist() == [m]


# ---------------------------------------------------------------- fused tile kernel

def _tile_case(kind, dtype, bias=True):
    if kind == "linear":
        lin = _linear(70, 50, dtype, bias=bias)
        x = torch.randn(37, 70, device=DEV).to(dtype)
        return lin, x, ConvGeometry.linear(x, 50), None
    if kind == "conv":
        conv = torch.nn.Conv2d(3, 20, 3, stride=2, padding=1, bias=bias).to(DEV, dtype)
    else:  # dilated, rectangular kernel, non-square image
        conv = torch.nn.Conv2d(4, 9, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1),
                               bias=bias).to(DEV, dtype)
    x = torch.randn(2, conv.in_channels, 9, 11, device=DEV).to(dtype)
    geo = ConvGeometry.conv(x, conv.weight, conv.stride, conv.padding, conv.dilation)
    return conv, x, geo, (conv.stride, conv.padding, conv.dilation)


@needs_triton
@pytest.mark.parametrize("kind", ["linear", "conv", "conv_dilated"])
@pytest.mark.parametrize("dtype", [torch.float32] + HALF)
def test_tile_kernel_matches_library_and_reference(kind, dtype):
    from dartboost.gpu._triton_gemm import tile_gemm, tile_ratios_reference
    layer, x, geo, params = _tile_case(kind, dtype, bias=(kind != "conv_dilated"))
    ck = LayerChecksums(layer.weight, layer.bias)
    y, ratio, bn = tile_gemm(x, layer.weight, layer.bias, ck, geo)
    ref = layer(x)
    assert y.shape == ref.shape and y.dtype == dtype
    err = (y.double() - ref.double()).norm() / ref.double().norm()
    assert err < {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    assert torch.isfinite(ratio).all() and float(ratio.max()) < _abft.DEFAULT_ALPHA
    # Same tile geometry through the torch emulation: clean ratios of the same order.
    from dartboost.gpu._triton_gemm import pick_config
    bm = pick_config(geo.M, geo.N, geo.K, geo.is_conv)[0]
    r_ref = tile_ratios_reference(x, y, layer.weight, layer.bias, ck, geo, bm, bn, params)
    assert r_ref.shape == ratio.shape and float(r_ref.max()) < _abft.DEFAULT_ALPHA


@needs_triton
@pytest.mark.parametrize("config", [(16, 32, 64, 4, 1), (128, 32, 64, 4, 1)])
def test_tile_kernel_both_checksum_accumulation_paths(config):
    # 16x64 A tiles accumulate checksum products element-wise (ACC2D); 128x64
    # tiles reduce per K step.  Both must give the same GEMM and clean ratios.
    from dartboost.gpu._triton_gemm import tile_gemm
    lin = _linear(150, 40, torch.float16)
    x = torch.randn(130, 150, device=DEV).half()
    ck = LayerChecksums(lin.weight, lin.bias)
    geo = ConvGeometry.linear(x, 40)
    y, ratio, _ = tile_gemm(x, lin.weight, lin.bias, ck, geo, config=config)
    torch.testing.assert_close(y, lin(x), rtol=2e-3, atol=2e-3)
    assert float(ratio.max()) < _abft.DEFAULT_ALPHA
    y2, r2, _ = tile_gemm(x, lin.weight, lin.bias, ck, geo, config=config,
                          inject=(2, 100, 7, 14, 0))
    assert float(r2.max()) > _abft.DEFAULT_ALPHA


@needs_triton
def test_tile_kernel_strided_input_and_preallocated_output():
    from dartboost.gpu._triton_gemm import tile_gemm
    lin = _linear(40, 24, torch.float16)
    base = torch.randn(50, 80, device=DEV).half()
    x = base[5:30, ::2]  # non-contiguous rows and columns
    ck = LayerChecksums(lin.weight, lin.bias)
    out = torch.full((25, 24), float("nan"), device=DEV, dtype=torch.float16)
    y, ratio, _ = tile_gemm(x, lin.weight, lin.bias, ck, ConvGeometry.linear(x, 24), out=out)
    assert y is out and torch.isfinite(out).all()
    torch.testing.assert_close(y, lin(x.contiguous()), rtol=2e-3, atol=2e-3)
    assert float(ratio.max()) < _abft.DEFAULT_ALPHA


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # flipped exponents overflow
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode,bit", [(1, 30), (2, None), (3, None)])
def test_tile_kernel_injected_flips_are_flagged_in_their_tile(dtype, mode, bit):
    from dartboost.gpu._triton_gemm import tile_gemm
    layer, x, geo, _ = _tile_case("conv", dtype)
    ck = LayerChecksums(layer.weight, layer.bias)
    nbits = 32 if dtype == torch.float32 else 16
    bit = bit if bit is not None else nbits - 2  # top exponent bit of the stored type
    row, col = 45, 13
    y0, r0, bn = tile_gemm(x, layer.weight, layer.bias, ck, geo)
    y1, r1, _ = tile_gemm(x, layer.weight, layer.bias, ck, geo, inject=(mode, row, col, bit, 0))
    from dartboost.gpu._triton_gemm import pick_config
    bm = pick_config(geo.M, geo.N, geo.K, True)[0]
    n_pn = -(-geo.N // bn)
    bad = torch.nonzero(~(r1 <= _abft.DEFAULT_ALPHA)).reshape(-1).tolist()
    # Output/accumulator flips hit one tile; an input flip hits its row in every tile.
    if mode == 3:
        assert bad and all(i // n_pn == row // bm for i in bad)
    else:
        assert bad == [(row // bm) * n_pn + col // bn]
    assert float(r0.max()) < _abft.DEFAULT_ALPHA


@needs_triton
def test_tile_kernel_low_bit_flip_below_tolerance_is_not_flagged():
    # A flip in the lowest mantissa bit is a rounding-sized error: the tolerance
    # must absorb it (it cannot change a prediction beyond rounding noise).
    from dartboost.gpu._triton_gemm import tile_gemm
    lin = _linear(64, 32, torch.float16)
    x = torch.randn(16, 64, device=DEV).half()
    ck = LayerChecksums(lin.weight, lin.bias)
    _, r, _ = tile_gemm(x, lin.weight, lin.bias, ck, ConvGeometry.linear(x, 32),
                        inject=(2, 3, 5, 0, 0))
    assert float(r.max()) < _abft.DEFAULT_ALPHA


def test_zero_false_positives_on_realistic_clean_gemms():
    # 2,000 clean checked GEMMs (torch path, float64 check) on activations that
    # look like a trained MLP's: ReLU outputs, heavy-tailed, some large rows.
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    n = 0
    for dtype in (torch.float32, torch.bfloat16):
        for k, m in ((13, 64), (64, 32), (256, 16), (512, 8)):
            lin = _linear(k, 48, dtype, seed=k)
            ck = LayerChecksums(lin.weight, lin.bias)
            for _ in range(250):
                x = torch.relu(torch.randn(m, k, generator=g)) * torch.exp(
                    torch.randn(m, 1, generator=g))
                x = x.to(DEV, dtype)
                y = lin(x)
                geo = ConvGeometry.linear(x, 48)
                r = global_check(x, y, ck, geo, *_coeffs(ck, x, triton=False), backend="torch")
                worst = max(worst, float(r.max()))
                n += 1
    assert n == 2000
    assert worst < _abft.DEFAULT_ALPHA / 2, worst


# ---------------------------------------------------------------- auto rule

def test_arithmetic_intensity_formula():
    assert _auto.arithmetic_intensity(1, 4096, 4096) == pytest.approx(
        2 * 4096 * 4096 / (2 * (4096 + 4096 * 4096 + 4096)))
    # Square GEMM: AI = 2n^3 / (2 * 3n^2) = n/3.
    assert _auto.arithmetic_intensity(3000, 3000, 3000) == pytest.approx(1000)


@pytest.mark.parametrize("m,expected", [(1, "tile"), (64, "tile"), (256, "tile"), (512, "global"),
                                        (4096, "global"), (8192, "global")])
def test_choose_scheme_h100_ridge(m, expected):
    ridge = 989e12 / 3.35e12  # ~295 FLOP/B
    assert _auto.choose_scheme(m, 4096, 4096, ridge) == expected


def test_device_ridge_table_and_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA H100 80GB HBM3")
    r, src = _calibration.device_ridge("cuda:0")
    assert src == "table" and r == pytest.approx(989e12 / 3.35e12)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA H200")
    assert _calibration.device_ridge("cuda:0")[0] == pytest.approx(989e12 / 4.8e12)
    # Unknown card: measured once, then read from the cache.
    monkeypatch.setenv("DARTBOOST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "Mystery GPU")
    calls = []

    def fake_measure(dev):
        calls.append(dev)
        return {"flops": 100e12, "bandwidth": 1e12, "ridge": 100.0}
    monkeypatch.setattr(_calibration, "measure_ridge", fake_measure)
    assert _calibration.device_ridge("cuda:0") == (100.0, "measured")
    assert _calibration.device_ridge("cuda:0") == (100.0, "cache")
    assert len(calls) == 1
    # auto's threshold: a fraction of the ridge until a measured crossover is cached.
    assert _calibration.auto_threshold("cuda:0") == (100.0 * _auto.TILE_EFFICIENCY,
                                              "ridge x TILE_EFFICIENCY")
    key = f"Mystery GPU|torch {torch.__version__}"
    _calibration._store_cache(key, {**_calibration._load_cache()[key], "crossover": 33.0})
    assert _calibration.auto_threshold("cuda:0") == (33.0, "calibrated")
    assert _calibration.device_ridge("cuda:0") == (100.0, "cache")  # ridge entry kept
    with pytest.raises(ValueError, match="CUDA"):
        _calibration.device_ridge("cpu")
