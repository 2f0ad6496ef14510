"""Bit-flip injection and detection reports."""
import math
import os
import warnings

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import dartboost.gpu as dg  # noqa: E402
from dartboost.gpu._lazy import triton_available  # noqa: E402

nn = torch.nn
DEV = "cuda" if torch.cuda.is_available() else "cpu"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained_mlp(dtype=torch.float32):
    """A small MLP trained on a separable problem, so predictions are meaningful."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(512, 13, generator=g)
    y = (X[:, :3].sum(1) > 0).long() + (X[:, 3] > 1).long()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                        nn.Linear(32, 3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    return net.eval().to(DEV, dtype), X[:64].to(DEV, dtype)


def test_flip_bit_roundtrip_and_validation():
    t = torch.tensor([1.0, -2.0], dtype=torch.float16)
    old, new = dg.flip_bit(t, (0,), 15)
    assert (old, new) == (1.0, -1.0)
    dg.flip_bit(t, (0,), 15)
    assert t[0] == 1.0
    f = torch.tensor([1.0])
    assert dg.flip_bit(f, (0,), 23)[1] == 0.5  # lowest exponent bit of fp32: 1.0 -> 0.5
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        dg.flip_bit(t, (0,), 16)


def test_inject_fault_argument_checks():
    net, X = _trained_mlp()
    with pytest.raises(ValueError, match="not protected"):
        with dg.inject_fault(net, "0", "output", 3):
            pass
    p = dg.protect(net, scheme="global")
    with pytest.raises(ValueError, match="site"):
        with dg.inject_fault(p, "0", "register", 3):
            pass
    with pytest.raises(ValueError, match="no protected layer"):
        with dg.inject_fault(p, "9", "output", 3):
            pass
    with pytest.raises(ValueError, match="unknown fault sites"):
        dg.detection_report(p, X, 5, sites=("cache",))


@pytest.mark.parametrize("scheme", ["global", "tile"])
def test_detection_report_global_and_tile(scheme):
    if scheme == "tile" and not triton_available():
        pytest.skip("triton not installed")
    net, X = _trained_mlp()
    with torch.no_grad():
        clean = net(X)
    # On CPU the global check runs through torch (the interpreter is slow); the
    # tile scheme runs the real kernel (interpreted on CPU).
    p = dg.protect(net, scheme=scheme, on_fault="raise",
                   backend="auto" if scheme == "tile" or DEV == "cuda" else "torch")
    slow = scheme == "tile" and DEV == "cpu"  # interpreted kernel: few, decisive trials
    n, n_clean = (12, 3) if slow else (300, 20)
    rep = dg.detection_report(p, X, n_trials=n, n_clean=n_clean, random_state=3,
                              bits=[30] if slow else None)
    assert rep["n_trials"] == n
    if not slow:
        assert set(rep["by_site"]) == {"output", "accumulator", "input", "weight"}
    # Every fault that changed a prediction was detected.
    pc = rep["prediction_changing"]
    assert pc["trials"] > 0 and pc["detected"] == pc["trials"]
    # Errors above 1e-3 of the layer's output range are always caught (fp32
    # tolerances are ~1e-7 relative); flips that change nothing never raise alarms.
    for t in rep["trials"]:
        if t["rel_error"] >= 1e-3:
            assert t["detected"], t
        if t["rel_error"] == 0:
            assert not t["flagged"], t
    # High exponent bits are always detected, lowest mantissa bits essentially never.
    for site, rows in rep["by_bit"].items():
        for r in rows:
            if site in ("output", "input", "weight") and r["bit"] == 14:
                assert r["rate"] == 1.0
    fp = rep["false_positive"]
    assert fp["layer_checks"] == n_clean * 3 and fp["confirmed"] == 0 and fp["flagged"] == 0
    assert math.isclose(fp["rate"], 0.0)
    # Injection left no trace: the model is clean and its log untouched by trials.
    with torch.no_grad():
        torch.testing.assert_close(p(X), clean, rtol=1e-4, atol=1e-5)
    assert dg.fault_log(p)["counts"]["transient"] == 0


def test_detection_report_half_precision_global():
    net, X = _trained_mlp(torch.bfloat16)
    p = dg.protect(net, scheme="global", backend="auto" if DEV == "cuda" else "torch")
    rep = dg.detection_report(p, X, n_trials=200, n_clean=10, random_state=1,
                              sites=("output", "weight"), bits=range(16))
    assert rep["prediction_changing"]["rate"] == 1.0
    assert rep["false_positive"]["confirmed"] == 0
    # Top exponent bits; a sign flip (bit 15) of a near-zero output is harmless.
    hi = [r for r in rep["by_bit"]["output"] if r["bit"] in (13, 14)]
    assert hi and all(r["rate"] == 1.0 for r in hi)


def test_flag_mode_warnings_are_silenced_inside_reports():
    net, X = _trained_mlp()
    p = dg.protect(net, scheme="global", on_fault="flag", backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error", dg.ABFTFaultWarning)
        dg.detection_report(p, X, n_trials=20, n_clean=2, sites=("output",), bits=[30])


@pytest.mark.parametrize("scheme", ["global", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_verify_weights_catches_a_sub_noise_weight_flip_the_check_misses(dtype, scheme):
    # A flipped lowest mantissa bit changes the outputs far below the check's
    # rounding noise: the per-call check passes it, the exact scrub does not.
    net, X = _trained_mlp(dtype)
    p = dg.protect(net, scheme=scheme, on_fault="raise", warn=False, backend="torch")
    with torch.no_grad():
        p(X)
    assert dg.verify_weights(p) == []
    layer = dict(p.named_modules())["2"]
    with torch.no_grad():
        w = layer.gemm_operand()  # what the GEMM reads (the augmented rows for fused)
        dg.flip_bit(w, (5, 7), 0)
        p(X)  # the per-call check: below its noise, not flagged
        with pytest.raises(dg.ABFTFaultError) as err:
            dg.verify_weights(p)
        assert [e.layer for e in err.value.events] == ["2"]
        assert err.value.events[0].kind == "weight" and err.value.events[0].confirmed
        dg.flip_bit(w, (5, 7), 0)  # restored: clean again
        assert dg.verify_weights(p) == []
    p2 = dg.protect(_trained_mlp(dtype)[0], scheme="global", on_fault="flag", warn=False,
                    backend="torch")
    assert dg.verify_weights(p2) == []  # checksums are taken at first use
    with torch.no_grad():
        dg.flip_bit(dict(p2.named_modules())["0"].weight, (1, 1), 1)
        with pytest.warns(dg.ABFTFaultWarning):
            ev = dg.verify_weights(p2)
    assert len(ev) == 1 and dg.fault_log(p2)["counts"]["weight"] == 1


def test_detection_report_with_scrub_counts_weight_faults_exactly():
    net, X = _trained_mlp()
    p = dg.protect(net, scheme="global", on_fault="flag", warn=False, backend="torch")
    rep = dg.detection_report(p, X, n_trials=40, sites=("weight",), bits=(0, 1, 2),
                              n_clean=2, random_state=1, scrub=True)
    assert rep["by_site"]["weight"]["detected"] == rep["by_site"]["weight"]["trials"] == 40
    assert rep["prediction_changing"]["detected"] == rep["prediction_changing"]["trials"]
    assert "detected_by_check" in rep["prediction_changing"]
    # without the scrub these low-bit weight flips pass the per-call check
    rep0 = dg.detection_report(p, X, n_trials=40, sites=("weight",), bits=(0, 1, 2),
                               n_clean=2, random_state=1)
    assert rep0["by_site"]["weight"]["detected"] < 40
    assert dg.verify_weights(p) == []  # every injected fault was restored
