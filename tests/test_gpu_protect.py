"""protect() / unprotect(): swapping, bad input, fault handling, calibration."""
import os
import pickle
import warnings

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import dartboost.gpu as dg  # noqa: E402
from dartboost.gpu._lazy import triton_available  # noqa: E402

nn = torch.nn
DEV = "cuda" if torch.cuda.is_available() else "cpu"
SCHEMES = ["global", "tile"]
BACKENDS = ["torch"] + (["triton"] if triton_available() else [])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding="same", groups=2),  # unsupported: grouped
        nn.BatchNorm2d(8),                               # not a GEMM
        nn.Flatten(), nn.Linear(8 * 6 * 6, 20), nn.ReLU(), nn.Linear(20, 5)).to(DEV).eval()


def _x(seed=1):
    return torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(seed)).to(DEV)


def _protect(net, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return dg.protect(net, **kw)


def test_import_does_not_need_torch(tmp_path):
    import subprocess
    import sys
    code = ("import sys, dartboost.gpu as g; assert 'torch' not in sys.modules; "
            "assert 'triton' not in sys.modules; assert 'protect' in dir(g)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_protect_swaps_layers_reports_the_rest_and_warns():
    net = _net()
    with pytest.warns(UserWarning, match=r"left these layers unprotected: 2 \(grouped"):
        p = dg.protect(net, scheme="global")
    assert p is net and dg.is_protected(p)
    rep = {r["name"]: r for r in dg.protection_report(p)}
    assert rep["0"]["status"] == rep["5"]["status"] == rep["7"]["status"] == "protected"
    assert rep["2"]["status"] == "unsupported" and "groups=2" in rep["2"]["reason"]
    assert rep["3"]["status"] == "not_gemm"
    assert type(p[2]) is nn.Conv2d  # left exactly as it was


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_protected_outputs_match_and_protect_is_reversible(scheme, backend):
    net = _net()
    x = _x()
    with torch.no_grad():
        ref = net(x)
        keys = list(net.state_dict())
        p = _protect(net, scheme=scheme, backend=backend)
        assert list(p.state_dict()) == keys  # checkpoints stay loadable
        out = p(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        assert dg.fault_log(p)["counts"]["layer_calls"] == 3
        q = dg.unprotect(p)
        assert not dg.is_protected(q)
        assert [type(m) for m in q] == [type(m) for m in _net()]
        assert q[0].weight is p[0].weight
        torch.testing.assert_close(q(x), ref)
    assert dg.unprotect(q) is q  # unprotecting twice is harmless


def test_protect_is_idempotent_and_reconfigures():
    net = _net()
    p = _protect(net, scheme="global")
    first = [m for m in p.modules()]
    p2 = _protect(p, scheme="global")
    assert p2 is p and [m for m in p2.modules()] == first  # nothing wrapped twice
    assert sum(type(m).__name__.startswith("Checked") for m in p.modules()) == 3
    _protect(p, scheme="tile", on_fault="flag", alpha=20.0)
    assert all(m.scheme == "tile" and m.alpha == 20.0 for m in p.modules()
               if type(m).__name__.startswith("Checked"))
    # A layer added later is picked up by the next protect call.
    p.add_module("extra", nn.Linear(5, 5).to(DEV))
    _protect(p)
    assert type(p.extra).__name__ == "CheckedLinear"


def test_bare_layer_and_unsupported_modules():
    lin = nn.Linear(6, 3).to(DEV)
    p = dg.protect(lin, scheme="global")
    assert type(p).__name__ == "CheckedLinear" and dg.is_protected(p)
    x = torch.randn(5, 6, device=DEV)
    torch.testing.assert_close(p(x), lin(x))
    assert dg.unprotect(p) is lin
    mha = nn.MultiheadAttention(8, 2).to(DEV)
    with pytest.warns(UserWarning, match="MultiheadAttention"):
        q = dg.protect(nn.Sequential(mha, nn.Linear(8, 8)).to(DEV))
    names = {r["name"]: r["status"] for r in dg.protection_report(q)}
    assert names == {"0": "unsupported", "1": "protected"}
    assert type(q[0].out_proj).__name__ == "NonDynamicallyQuantizableLinear"  # not entered
    circ = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")
    with pytest.warns(UserWarning, match="circular"):
        dg.protect(nn.Sequential(circ))


def test_bad_arguments_and_inputs_raise_clearly():
    net = _net()
    with pytest.raises(ValueError, match="scheme"):
        dg.protect(net, scheme="fast")
    with pytest.raises(ValueError, match="on_fault"):
        dg.protect(net, on_fault="ignore")
    with pytest.raises(ValueError, match="alpha"):
        dg.protect(net, alpha=-1)
    with pytest.raises(TypeError, match="nn.Module"):
        dg.protect("model")
    p = _protect(net, scheme="global")
    with pytest.raises(TypeError, match=r"input dtype torch.float64 does not match"):
        p(_x().double())
    with pytest.raises(ValueError, match="expected input"):
        p[0](torch.randn(2, 4, 6, 6, device=DEV))
    with pytest.raises(ValueError, match="not protected"):
        dg.fault_log(nn.Linear(2, 2))
    if DEV == "cuda":
        with pytest.raises(RuntimeError, match="input is on cpu"):
            p(_x().cpu())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_on_fault_raise_recompute_flag(scheme):
    x = _x()
    net = _net()
    with torch.no_grad():
        ref = net(x)
    p = _protect(net, scheme=scheme, on_fault="raise")
    with torch.no_grad():
        with dg.inject_fault(p, "5", "output", 30, row=2, col=7):
            with pytest.raises(dg.ABFTFaultError) as exc:
                p(x)
        ev = exc.value.events[0]
        assert ev.layer == "5" and ev.kind == "transient" and ev.scheme == scheme
        assert ev.recomputed_ratio <= ev.alpha < ev.ratio
        # recompute: the transient fault is gone on the second pass.
        _protect(p, scheme=scheme, on_fault="recompute")
        with dg.inject_fault(p, "5", "output", 30, row=2, col=7):
            out = p(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        assert dg.fault_log(p)["counts"]["recomputed_forwards"] == 1
        # flag: warns, returns the (faulty) output, logs the event.
        _protect(p, scheme=scheme, on_fault="flag")
        with dg.inject_fault(p, "7", "accumulator", 30, row=1, col=2):
            with pytest.warns(dg.ABFTFaultWarning, match="transient"):
                out = p(x)
        assert not torch.allclose(out, ref)
        assert dg.fault_log(p)["events"][-1].layer == "7"


def test_weight_fault_is_not_recomputed_away():
    p = _protect(_net(), scheme="global", on_fault="recompute")
    with torch.no_grad():
        p(_x())  # checksums taken
        with dg.inject_fault(p, "0", "weight", 30, row=3, col=4):
            with pytest.raises(dg.ABFTFaultError, match="weight fault"):
                p(_x())
        p(_x())  # restored weight: clean again


def test_refresh_checksums_after_legitimate_weight_change():
    p = _protect(_net(), scheme="global")
    x = _x()
    with torch.no_grad():
        p(x)
        p[5].weight.mul_(1.5)  # e.g. fine-tuning or load_state_dict
        with pytest.raises(dg.ABFTFaultError, match="weight"):
            p(x)
        dg.refresh_checksums(p)
        p(x)
        # A dtype change re-checksums by itself.
        p.double()
        p(x.double())


def test_unconfirmed_flags_are_logged_not_raised():
    lin = nn.Linear(8, 4).to(DEV)
    p = dg.protect(nn.Sequential(lin), scheme="global", alpha=1e-9)  # absurdly strict
    out = p(torch.randn(3, 8, device=DEV))
    assert out.shape == (3, 4)
    log = dg.fault_log(p)
    assert log["counts"]["unconfirmed"] >= 1 and log["counts"]["transient"] == 0
    assert not log["events"][-1].confirmed


def test_calibrate_sets_alpha_from_clean_runs():
    p = _protect(_net(), scheme="global")
    res = dg.calibrate(p, [_x(s) for s in range(5)], safety=4.0, min_alpha=0.0)
    assert set(res) == {"0", "5", "7"}
    for name, r in res.items():
        assert r["calls"] == 5 and 0 < r["max_ratio"] < 8
        assert r["alpha"] == pytest.approx(4.0 * r["max_ratio"])
    with torch.no_grad():
        p(_x(9))  # still clean with calibrated thresholds
    with pytest.raises(ValueError, match="non-finite"):
        bad = _x()
        bad[0, 0, 0, 0] = float("nan")
        dg.calibrate(p, [bad])


def test_autograd_falls_back_to_library_operator():
    net = nn.Sequential(nn.Linear(4, 3)).to(DEV)
    p = _protect(net, scheme="tile")
    x = torch.randn(5, 4, device=DEV, requires_grad=True)
    p(x).sum().backward()
    assert x.grad is not None and p[0].weight.grad is not None


def test_auto_scheme_on_cpu_is_global_and_off_skips_checks():
    p = _protect(nn.Sequential(nn.Linear(4, 3)), scheme="auto")
    with torch.no_grad():
        p(torch.randn(2, 4))
    assert p[0]._auto_cache == {2: "global"}
    _protect(p, scheme="off")
    n = dg.fault_log(p)["counts"]["layer_calls"]
    p(torch.randn(2, 4))
    assert dg.fault_log(p)["counts"]["layer_calls"] == n


def test_protected_model_pickles_and_unprotects_after_roundtrip():
    p = _protect(_net(), scheme="global")
    x = _x()
    with torch.no_grad():
        ref = p(x)
    q = pickle.loads(pickle.dumps(p))
    with torch.no_grad():
        torch.testing.assert_close(q(x), ref)
    assert dg.is_protected(q)
    r = dg.unprotect(q)
    assert type(r[0]) is nn.Conv2d


def test_layer_called_outside_its_root_is_resolved_on_the_spot():
    p = _protect(_net(), scheme="global", on_fault="raise")
    x = torch.randn(3, 8 * 6 * 6, device=DEV)
    with torch.no_grad():
        ref = p[5](x)
        with dg.inject_fault(p, "5", "output", 30, row=1, col=1):
            with pytest.raises(dg.ABFTFaultError):
                p[5](x)
        _protect(p, scheme="global", on_fault="recompute")
        with dg.inject_fault(p, "5", "output", 30, row=1, col=1):
            torch.testing.assert_close(p[5](x), ref)
