"""Real-GPU tests (marked ``gpu``; skipped without CUDA). Output committed under
benchmarks/results/ from the device runs."""
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

import dartboost.gpu as dg  # noqa: E402
from dartboost.gpu._abft import DEFAULT_ALPHA, ConvGeometry, LayerChecksums  # noqa: E402

nn = torch.nn


def _skip_without_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,k,n", [(1, 13, 512), (7, 512, 256), (64, 256, 64), (300, 512, 256),
                                   (1024, 1024, 1024), (4096, 4096, 4096), (33, 4096, 1)])
def test_tile_kernel_matches_cublas(dtype, m, k, n):
    _skip_without_cuda()
    from dartboost.gpu._triton_gemm import tile_gemm
    g = torch.Generator(device="cuda").manual_seed(m + k + n)
    x = torch.randn(m, k, device="cuda", generator=g).to(dtype)
    w = (torch.randn(n, k, device="cuda", generator=g) / k ** 0.5).to(dtype)
    b = torch.randn(n, device="cuda", generator=g).to(dtype)
    ck = LayerChecksums(w, b)
    out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
    y, ratio, _ = tile_gemm(x, w, b, ck, ConvGeometry.linear(x, n), out=out)
    ref = torch.nn.functional.linear(x.double(), w.double(), b.double())
    err = ((y.double() - ref).norm() / ref.norm()).item()
    assert torch.isfinite(y).all() and err < (2e-3 if dtype == torch.float16 else 1e-2)
    assert float(ratio.max()) < DEFAULT_ALPHA / 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cfg", [(1, 3, 64, 7, 2, 3, 56), (8, 64, 64, 3, 1, 1, 28),
                                 (2, 128, 256, 3, 2, 1, 14), (4, 256, 512, 1, 2, 0, 14)])
def test_tile_conv_matches_cudnn(dtype, cfg):
    _skip_without_cuda()
    from dartboost.gpu._triton_gemm import tile_gemm
    nb, cin, cout, ks, stride, pad, hw = cfg
    conv = nn.Conv2d(cin, cout, ks, stride=stride, padding=pad).cuda().to(dtype)
    x = torch.randn(nb, cin, hw, hw, device="cuda").to(dtype)
    ck = LayerChecksums(conv.weight, conv.bias)
    geo = ConvGeometry.conv(x, conv.weight, conv.stride, conv.padding, conv.dilation)
    y, ratio, _ = tile_gemm(x, conv.weight, conv.bias, ck, geo)
    ref = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(),
                                     stride, pad)
    err = ((y.double() - ref).norm() / ref.norm()).item()
    assert err < (2e-3 if dtype == torch.float16 else 1e-2)
    assert float(ratio.max()) < DEFAULT_ALPHA / 2


@pytest.mark.parametrize("scheme", ["global", "tile", "auto"])
def test_zero_false_positives_and_graph_capture(scheme):
    _skip_without_cuda()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(13, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                        nn.Linear(256, 64)).cuda().half().eval()
    p = dg.protect(net, scheme=scheme)
    with torch.no_grad():
        for i in range(700):  # 2,100 clean checked GEMMs
            x = (torch.randn(1 + (i * 37) % 2048, 13, device="cuda") * 2).half()
            p(x)
        log = dg.fault_log(p)
        assert log["counts"]["layer_calls"] == 2100 and log["counts"]["flagged"] == 0
        # CUDA graph: the checks are captured, and resolved by check() after a replay.
        x = torch.randn(256, 13, device="cuda").half()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            p(x)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = p(x)
        graph.replay()
        assert dg.check(p) == []
        torch.testing.assert_close(out, net[4](torch.relu(net[2](torch.relu(net[0](x))))),
                                   rtol=2e-2, atol=2e-2)
        if scheme == "tile":
            with dg.inject_fault(p, "2", "weight", 14, row=3, col=5):
                graph.replay()
                with pytest.raises(dg.ABFTFaultError, match="weight"):
                    dg.check(p)


@pytest.mark.parametrize("scheme", ["global", "tile"])
def test_detection_on_gpu_half(scheme):
    _skip_without_cuda()
    from sklearn.datasets import make_classification
    X, y = make_classification(4000, 13, n_informative=8, n_classes=4, random_state=0)
    clf = dg.NeuralClassifier((256, 64), max_iter=20, device="cuda", random_state=0,
                              learning_rate_init=3e-3).fit(X, y)
    net = clf.module_.cuda().half().eval()
    Xt = torch.as_tensor((X[:256] - clf._x_mean) / clf._x_scale, dtype=torch.float16,
                         device="cuda")
    p = dg.protect(net, scheme=scheme)
    rep = dg.detection_report(p, Xt, n_trials=1500, n_clean=200, random_state=0)
    pc = rep["prediction_changing"]
    assert pc["trials"] > 50 and pc["rate"] >= 0.999
    assert rep["false_positive"]["confirmed"] == 0


def test_auto_follows_the_cost_model_on_this_device():
    _skip_without_cuda()
    from dartboost.gpu._auto import plan_layer
    lin = nn.Linear(4096, 4096).cuda().half()
    p = dg.protect(nn.Sequential(lin), scheme="auto")
    with torch.no_grad():
        for m in (1, 8192):
            p(torch.randn(m, 4096, device="cuda").half())
    cal = dg.default_calibration("cuda")
    expect = {m: plan_layer(m, 4096, 4096, 2, None, False, cal)["scheme"] for m in (1, 8192)}
    assert p[0]._auto_cache == expect
    assert set(dg.protection_report(p)[0]["plans"]) == {1, 8192}


def test_estimator_pickled_on_gpu_predicts_on_cpu():
    _skip_without_cuda()
    from sklearn.datasets import make_classification
    X, y = make_classification(300, 8, random_state=0)
    clf = dg.NeuralClassifier((32,), max_iter=30, device="cuda", random_state=0,
                              abft="tile").fit(X, y)
    p_gpu = clf.predict_proba(X)
    blob = pickle.dumps(clf)
    clf2 = pickle.loads(blob)
    clf2.set_params(device="cpu", abft="global")
    np.testing.assert_allclose(clf2.predict_proba(X), p_gpu, rtol=1e-3, atol=1e-4)
