"""The augmented-GEMM 'fused' scheme: checksum rows, fused epilogue check, surgery.

Kernels run on CUDA when present, otherwise through Triton's interpreter.
"""
import math
import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import dartboost.gpu as dg  # noqa: E402
from dartboost.gpu import _auto  # noqa: E402
from dartboost.gpu._augmented import (AUG_ROWS, AugmentedWeight, apply_activation,  # noqa: E402
                                      check_signs, fused_linear, fused_linear_reference,
                                      fused_ratios_reference, round_tf32, sign_scale)
from dartboost.gpu._lazy import triton_available  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not installed")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
ALPHA = 8.0


def _lin(k, n, dtype, offset=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) / math.sqrt(k))
        lin.bias.copy_(torch.randn(n, generator=g) * 0.1 + offset)
    return lin.to(DEV, dtype).requires_grad_(False)


def test_signs_are_balanced_and_scale_is_power_of_two():
    s = check_signs(11)
    assert s.shape == (8, 11) and set(s.unique().tolist()) == {-1.0, 1.0}
    assert (s.sum(1) == 1).all()  # ceil(11/2) ones, floor(11/2) minus ones
    assert (check_signs(4096).sum(1) == 0).all()
    # Distinct vectors: a swap of two outputs escapes all 8 only if their signs agree.
    assert len({tuple(r.tolist()) for r in check_signs(64)}) == 8
    for n in (1, 2, 3, 100, 4096):
        sc = sign_scale(n)
        assert math.log2(sc) == int(math.log2(sc)) and 1.0 <= sc * math.sqrt(n) < 2.0


def test_round_tf32_keeps_ten_mantissa_bits():
    x = torch.tensor([1.0 + 2 ** -10, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11, -3.0e-5, float("inf")])
    r = round_tf32(x)
    assert r[0] == x[0]
    assert r[1] == 1.0  # tie to even
    assert r[2] == 1.0 + 2 ** -9  # tie to even, upwards
    assert ((r[3].view(torch.int32) & 0x1FFF) == 0)
    assert math.isinf(float(r[4]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_augmented_rows_hold_hi_lo_checksums_and_alias_the_weight(dtype):
    lin = _lin(40, 30, dtype)
    w0 = lin.weight.detach().double().clone()
    aug = AugmentedWeight(lin.weight, lin.bias)
    assert aug.gemm_weight.shape == (30 + AUG_ROWS, 40)
    assert lin.weight.data_ptr() == aug.gemm_weight.data_ptr()  # no second copy
    assert torch.equal(lin.weight.double(), w0)
    c = (check_signs(30).to(DEV) @ w0) * aug.sigma
    hi, lo = aug.gemm_weight[30::2].double(), aug.gemm_weight[31::2].double()
    u = {torch.float32: 2 ** -24, torch.float16: 2 ** -11, torch.bfloat16: 2 ** -8}[dtype]
    # hi + lo is the checksum to ~u^2, far below one rounding of hi alone.
    assert float((hi + lo - c).abs().max()) <= 4 * u * u * float(c.abs().max()) + 1e-30
    aug.release(lin.weight, lin.bias)
    assert lin.weight.data_ptr() != aug.gemm_weight.data_ptr()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", [None, "relu", "gelu", "gelu_tanh", "silu"])
def test_fused_output_matches_linear_and_clean_ratios_are_small(backend, dtype, act):
    lin = _lin(72, 40, dtype)
    x = torch.randn(33, 72, device=DEV).to(dtype)
    ref = apply_activation(torch.nn.functional.linear(x.double(), lin.weight.double(),
                                                      lin.bias.double()), act)
    aug = AugmentedWeight(lin.weight, lin.bias)
    fn = fused_linear if backend == "triton" else fused_linear_reference
    out, ratio, y_aug = fn(x, aug, act)
    tol = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}[dtype]
    assert out.shape == (33, 40) and float((out.double() - ref).abs().max()) < tol
    assert ratio.shape == (33,) and float(ratio.max()) < ALPHA / 2
    # The kernel's ratios agree with the float64 oracle (fp32: both are rounding noise).
    r64 = fused_ratios_reference(x, y_aug, aug)
    assert torch.allclose(ratio, r64, rtol=0.05, atol=0.2 if dtype == torch.float32 else 0.05)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_common_offset_neither_flags_nor_blinds(dtype):
    # Outputs ~ 1000 + O(1): an all-ones fp16 checksum would be ~N*1000 (and
    # overflow at N=4096); the balanced ±1 sums cancel the offset.
    lin = _lin(64, 256, dtype, offset=1000.0)
    x = torch.randn(17, 64, device=DEV).to(dtype)
    aug = AugmentedWeight(lin.weight, lin.bias)
    _, ratio, y_aug = fused_linear(x, aug, None)
    assert torch.isfinite(y_aug).all() and float(ratio.max()) < ALPHA / 2

    def corrupt(y):
        y[5, 9] = y[5, 9] + 0.5 * 1000.0  # half of the output scale
    _, bad, _ = fused_linear(x, aug, None, None, corrupt)
    assert float(bad[5]) > ALPHA and float(bad[4]) < ALPHA


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_swapped_outputs_are_detected(dtype):
    lin = _lin(48, 64, dtype)
    x = torch.randn(8, 48, device=DEV).to(dtype)
    aug = AugmentedWeight(lin.weight, lin.bias)
    y_clean = fused_linear(x, aug, None)[2]
    signs = check_signs(64)
    # A pair whose signs differ in some vector and whose values differ clearly.
    a, b = next((a, b) for a in range(64) for b in range(a + 1, 64)
                if (signs[:, a] != signs[:, b]).any()
                and abs(float(y_clean[2, a] - y_clean[2, b])) > 0.3)

    def swap(y):
        ya, yb = y[2, a].clone(), y[2, b].clone()
        y[2, a], y[2, b] = yb, ya
    _, r, _ = fused_linear(x, aug, None, None, swap)
    assert float(r[2]) > ALPHA


def test_non_finite_output_is_flagged_as_inf():
    lin = _lin(16, 16, torch.float32)
    x = torch.randn(4, 16, device=DEV)
    aug = AugmentedWeight(lin.weight, lin.bias)

    def nan(y):
        y[1, 3] = float("nan")
    _, r, _ = fused_linear_reference(x, aug, None, nan)
    assert math.isinf(float(r[1])) and float(r[0]) < ALPHA


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_protect_folds_activations_detects_and_unprotects(backend):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                              torch.nn.GELU(), torch.nn.Linear(32, 3)).to(DEV)
    x = torch.randn(9, 20, device=DEV)
    with torch.no_grad():
        ref = net(x)
        p = dg.protect(net, scheme="fused", backend=backend)
        assert [r.get("activation") for r in dg.protection_report(p)
                if r["status"] == "protected"] == ["relu", "gelu", None]
        assert torch.allclose(p(x), ref, atol=1e-5)
        with dg.inject_fault(p, "2", "output", 30, row=3, col=5):
            with pytest.raises(dg.ABFTFaultError) as ei:
                p(x)
        assert ei.value.events[0].kind == "transient" and ei.value.events[0].scheme == "fused"
        with dg.inject_fault(p, "0", "weight", 30, row=3, col=5):
            with pytest.raises(dg.ABFTFaultError) as ei:
                p(x)
        assert ei.value.events[0].kind == "weight"
        assert torch.allclose(p(x), ref, atol=1e-5)  # weight restored after the trial
        u = dg.unprotect(p)
        assert isinstance(u[1], torch.nn.ReLU) and isinstance(u[3], torch.nn.GELU)
        assert torch.allclose(u(x), ref, atol=1e-6)
        assert u[0].weight.data_ptr() != 0 and u[0].weight.shape == (64, 20)


def test_recompute_policy_is_shared_by_bare_layers():
    lin = dg.protect(_lin(16, 8, torch.float32), scheme="fused", on_fault="recompute",
                     backend="torch")
    x = torch.randn(4, 16, device=DEV)
    with torch.no_grad():
        ref = lin(x)
        with dg.inject_fault(lin, "", "output", 30, row=1, col=2):
            out = lin(x)
    assert torch.allclose(out, ref) and dg.fault_log(lin)["counts"]["recomputed_forwards"] == 1


def test_plan_layer_is_pure_and_explained():
    cal = dict(_auto.DEFAULT_CALIBRATION)
    a = _auto.plan_layer(1, 4096, 4096, 2, None, False, cal)
    assert a == _auto.plan_layer(1, 4096, 4096, 2, None, False, cal)
    # Batch 1 without an activation: the stream kernel (H200 runs 2 and 3: +12..+17%
    # against +31..+37% for cuBLAS with its side-stream check, fp16).
    assert a["scheme"] == "stream" and "memory-bound" in a["reason"]
    b = _auto.plan_layer(4096, 4096, 4096, 2, "relu", False, cal)
    assert "compute-bound" in b["reason"] and set(b["costs"]) == {"fused", "global", "tile"}
    assert _auto.plan_layer(64, 64, 576, 2, None, True, cal)["scheme"] == "global"
    # A faster tile kernel (calibrated) wins where the fused pass costs most.
    fast_tile = {**cal, "tile_efficiency": 1.0}
    assert _auto.plan_layer(4096, 4096, 4096, 2, "relu", False, fast_tile)["scheme"] == "tile"


def test_auto_records_its_decision_on_cpu():
    p = dg.protect(torch.nn.Sequential(_lin(8, 4, torch.float32)), scheme="auto",
                   backend="torch")
    with torch.no_grad():
        p(torch.randn(3, 8, device=DEV))
    plans = dg.protection_report(p)[0]["plans"]
    if DEV == "cpu":
        assert plans == {3: {"scheme": "global", "reason": "CPU or float64: global"}}
    else:
        assert plans[3]["scheme"] in ("fused", "stream", "global", "tile")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_fused_in_cuda_graph_with_side_stream(dtype):
    lin = _lin(512, 256, dtype)
    net = dg.protect(torch.nn.Sequential(lin, torch.nn.ReLU(), _lin(256, 128, dtype, seed=1)),
                     scheme="fused", on_fault="flag")
    x = torch.randn(8, 512, device="cuda", dtype=dtype)
    with torch.no_grad():
        ref = net(x).clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            net(x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = net(x)
        g.replay()
        torch.cuda.synchronize()
    assert torch.equal(out, ref) and dg.check(net) == []


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,k,n", [(1, 4096, 4096), (64, 1024, 3), (4096, 512, 1024)])
def test_fused_matches_cublas_large(dtype, m, k, n):
    lin = _lin(k, n, dtype)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    ref = torch.relu(torch.nn.functional.linear(x, lin.weight, lin.bias)).double()
    aug = AugmentedWeight(lin.weight, lin.bias)
    out, ratio, _ = fused_linear(x, aug, "relu", torch.cuda.Stream())
    torch.cuda.synchronize()
    assert float((out.double() - ref).abs().max()) <= 2 * float(ref.abs().max()) * 2 ** -7
    assert float(ratio.max()) < ALPHA / 2


@pytest.mark.gpu
def test_tf32_operand_is_rounded_copy():
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        lin = _lin(256, 128, torch.float32)
        p = dg.protect(torch.nn.Sequential(lin), scheme="fused")
        x = torch.randn(64, 256, device="cuda")
        with torch.no_grad():
            p(x)
        aug = p[0]._aug
        assert aug.tf32 and not aug.aliased
        assert ((aug.gemm_weight.view(torch.int32) & 0x1FFF) == 0).all()
        ratios = fused_linear(x, aug, None)[1]
        assert float(ratios.max()) < ALPHA / 2
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


@needs_triton
@pytest.mark.parametrize("m,n,act", [(5, 30, "relu"), (33, 700, "relu"), (20, 1100, None),
                                     (3, 2100, "gelu")])
def test_single_launch_check_leaves_workspace_zeroed_and_matches_reference(m, n, act):
    from dartboost.gpu._augmented import check_workspace
    lin = _lin(48, n, torch.float16, seed=m)
    aug = AugmentedWeight(lin.weight, lin.bias)
    x = torch.randn(m, 48, device=DEV).to(torch.float16)
    ws = check_workspace(m, x.device)
    on = torch.empty(m, device=DEV)
    out, r1, _ = fused_linear(x, aug, act, workspace=ws, out_norm2=on)
    assert not ws[0].any() and not ws[1].any()  # left as found: graph replays reuse it
    out2, r2, _ = fused_linear(x, aug, act, workspace=ws)
    # (atomics add the column blocks in any order: equal up to fp32 rounding)
    torch.testing.assert_close(r1, r2, rtol=1e-2, atol=1e-4)
    ref_out, ref_r, _ = fused_linear_reference(x, aug, act)
    torch.testing.assert_close(out.float(), ref_out.float(), rtol=2e-3, atol=2e-3)
    assert float(r1.max()) <= ALPHA and float(ref_r.max()) <= ALPHA
    if act is not None:  # ||out_i||^2 of what was written, for the next layer
        torch.testing.assert_close(on, out.float().pow(2).sum(1), rtol=1e-4, atol=1e-4)
    # ||x||^2 handed over instead of read: the same ratios.
    r3 = fused_linear(x, aug, act, workspace=ws, x_norm2=x.float().pow(2).sum(1))[1]
    torch.testing.assert_close(r3, r1, rtol=1e-2, atol=1e-4)
    # A corrupted output is still caught through the multi-block path.
    def corrupt(y):
        y[m // 2, n // 3] += 4.0
    bad = fused_linear(x, aug, act, None, corrupt, workspace=ws)[1]
    assert float(bad[m // 2]) > ALPHA
    assert not ws[0].any() and not ws[1].any()


@needs_triton
def test_protected_chain_hands_row_norms_to_the_next_layer():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.ReLU(), torch.nn.Linear(40, 300),
                              torch.nn.ReLU(), torch.nn.Linear(300, 5)).to(DEV)
    import copy
    ref = copy.deepcopy(net)
    p = dg.protect(net, scheme="fused", on_fault="raise", warn=False)
    from dartboost.gpu._protect import _STATE_ATTR
    st = getattr(p, _STATE_ATTR)
    seen = []
    orig = st.norms_of

    def spy(x2):
        hit = orig(x2)
        seen.append(hit is not None)
        return hit
    st.norms_of = spy
    x = torch.randn(9, 24, device=DEV)
    with torch.no_grad():
        y = p(x)
    # first layer reads its input; the two later ones get the producer's norms
    assert seen[0] is False and all(seen[1:]) and len(seen) >= 3
    with torch.no_grad():
        torch.testing.assert_close(y, ref(x), rtol=1e-4, atol=1e-4)
    # an in-place change of a layer output invalidates its recorded norms
    out = torch.ones(4, 3, device=DEV)
    st.in_root = True
    st.remember_norms(out, torch.full((4,), 3.0, device=DEV))
    assert st.norms_of(out) is not None
    out.add_(1.0)
    assert st.norms_of(out) is None
    assert st.norms_of(out[:2]) is None
    st.in_root = False


def test_plan_layer_counts_the_input_read_only_for_a_first_layer():
    cal = dict(_auto.DEFAULT_CALIBRATION)
    first = _auto.plan_layer(4096, 1024, 4096, 2, "relu", False, cal)["costs"]["fused"]
    chained = _auto.plan_layer(4096, 1024, 4096, 2, "relu", False, cal,
                               norm_known=True)["costs"]["fused"]
    assert chained < first
    assert first - chained == pytest.approx(2 * 4096 * 4096 / cal["bandwidth"])


def test_side_check_only_for_small_outputs_or_no_activation():
    from dartboost.gpu._augmented import AUG_ROWS, SIDE_CHECK_BYTES, check_on_side
    assert check_on_side(4096, 4096, 2, None)  # no activation: always off the critical path
    rows = SIDE_CHECK_BYTES // (2 * (1024 + AUG_ROWS))
    assert check_on_side(rows, 1024, 2, "relu")
    assert not check_on_side(rows + 1, 1024, 2, "relu")
    assert not check_on_side(rows, 1024, 4, "relu")  # fp32 outputs are twice the bytes


def test_plan_layer_charges_the_check_its_measured_latency():
    cal = dict(_auto.DEFAULT_CALIBRATION)
    # A tiny layer with a large output on the main path: the check's fixed latency
    # decides (a chain of trivial kernels would underestimate it).
    slow = _auto.plan_layer(4096, 128, 256, 2, "relu", False, {**cal, "check_latency": 6e-6})
    fast = _auto.plan_layer(4096, 128, 256, 2, "relu", False, {**cal, "check_latency": 0.5e-6})
    assert slow["costs"]["fused"] - fast["costs"]["fused"] == pytest.approx(5.5e-6)
    # Without an activation the check runs on the side stream: side_share of it
    # counts, but at least its latency (exposed when nothing follows it).
    a = _auto.plan_layer(8, 128, 256, 2, None, False, {**cal, "check_latency": 6e-6})
    assert a["costs"]["fused"] >= 6e-6
    big = _auto.plan_layer(8192, 8192, 8192, 2, None, False, {**cal, "check_latency": 0.5e-6})
    assert big["costs"]["fused"] > 0.5e-6  # the side check's traffic, not only its latency
    # Small outputs with an activation: the activation kernel plus the side check
    # cost at least the check's latency over the GEMM (H200 run 2: +3.3-3.9 us).
    a = _auto.plan_layer(8, 128, 256, 2, "relu", False, {**cal, "check_latency": 6e-6})
    assert a["costs"]["fused"] >= 6e-6
    # Older caches without the constant fall back to the launch cost.
    old = {k: v for k, v in cal.items() if k != "check_latency"}
    assert _auto.plan_layer(4096, 128, 256, 2, "relu", False, old)["costs"]["fused"] == \
        pytest.approx(_auto.plan_layer(4096, 128, 256, 2, "relu", False,
                                       {**old, "check_latency": old["launch"]})["costs"]["fused"])
