"""Benchmark of ABFT-checked inference: unprotected vs global vs tile vs auto.

Run on a CUDA machine (fp16, CUDA graphs for every path, so launch overhead is
not what is measured)::

    python benchmarks/bench_abft.py --out benchmarks/results/abft_<card>.json

What it measures
----------------
* ``sweep``: square-ish GEMMs ``M x K @ K x N`` (K = N in 512..4096, M in 1..8192).
* ``layers``: every GEMM layer of the networks below at the batch sizes used, alone.
* ``networks``: DLRM-like MLPs 13-512-256-64 and 512-256-1 at batch 1..4096, a
  ResNet-18-style CNN (224x224) at batch 1 and 64 — whole forward passes.
* ``false_positives``: clean checked GEMMs per scheme on realistic inputs.
* ``detection``: bit-flip detection report on a trained classifier (fp16).

Timing: each variant is captured in a CUDA graph that calls the layer (or
network) on a ring of distinct weight/input copies large enough to defeat the
L2 cache where the weights are small; the graph is replayed ``--reps`` times and
the median time per call is reported.  ``tile_nocheck`` is the same Triton GEMM
with the checksum work compiled out: the gap between it and ``tile`` is the
check's own cost, the gap between it and ``unprotected`` is Triton vs cuBLAS.
"""
import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
import warnings

import torch
from torch import nn

import dartboost.gpu as dg

warnings.simplefilter("ignore", dg.ABFTFaultWarning)
from dartboost.gpu._abft import ConvGeometry
from dartboost.gpu._auto import arithmetic_intensity, measure_ridge
from dartboost.gpu._triton_gemm import tile_gemm

DT = torch.float16
VARIANTS = ("unprotected", "global", "tile", "auto")


def log(*a):
    print(*a, flush=True)


def time_graph(fn, n_calls, reps, warmup=3):
    """Median seconds per call of ``fn`` (which makes ``n_calls`` calls) in a CUDA graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    for _ in range(warmup):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / n_calls)
    del g
    return statistics.median(times), times


def ring_size(weight_bytes, act_bytes, l2_bytes):
    # Enough distinct copies that the ring does not sit in L2 (memory-bound layers
    # would otherwise be timed from cache), but few enough to fit in memory.
    per = weight_bytes + act_bytes
    n = math.ceil(3 * l2_bytes / max(per, 1))
    return int(min(max(n, 2), 48, max(2, (8 << 30) // max(per, 1))))


def _protect_quiet(m, **kw):
    # on_fault='flag': a flagged check is counted in the results, never aborts a run.
    kw.setdefault("on_fault", "flag")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dg.protect(m, **kw)


def bench_layer(make_layer, make_input, reps, l2, out_rows, tag):
    """Time one layer shape under every variant; append a row to ``out_rows``."""
    layer0 = make_layer()
    x0 = make_input()
    wbytes = sum(p.numel() * p.element_size() for p in layer0.parameters())
    with torch.no_grad():
        abytes = x0.numel() * x0.element_size() + layer0(x0).numel() * x0.element_size()
    n = ring_size(wbytes, abytes, l2)
    layers = [layer0] + [make_layer() for _ in range(n - 1)]
    xs = [x0] + [make_input() for _ in range(n - 1)]
    row = dict(tag)
    row["ring"] = n
    is_conv = isinstance(layer0, nn.Conv2d)
    if is_conv:
        geo = ConvGeometry.conv(x0, layer0.weight, layer0.stride, layer0.padding,
                                layer0.dilation)
    else:
        geo = ConvGeometry.linear(x0.reshape(-1, x0.shape[-1]), layer0.out_features)
    row.update(M=geo.M, N=geo.N, K=geo.K,
               ai=arithmetic_intensity(geo.M, geo.N, geo.K, 2))
    with torch.no_grad():
        t, _ = time_graph(lambda: [l(x) for l, x in zip(layers, xs)], n, reps)
        row["unprotected"] = t
        prot = {}
        for scheme in ("global", "tile", "auto"):
            ps = [_protect_quiet(copy.deepcopy(l), scheme=scheme) for l in layers]
            t, _ = time_graph(lambda: [p(x) for p, x in zip(ps, xs)], n, reps)
            row[scheme] = t
            flags = sum(len(dg.check(p)) + dg.fault_log(p)["counts"]["flagged"] for p in ps)
            row[f"{scheme}_clean_flags"] = flags
            prot[scheme] = ps
        row["auto_choice"] = prot["auto"][0]._auto_cache.get(geo.M)
        p0 = prot["tile"]
        ck_list = [p.checksums() for p in p0]

        # Same Triton GEMM without checks: separates check cost from Triton-vs-cuBLAS.
        def nocheck():
            for p, x, ck in zip(p0, xs, ck_list):
                g = (ConvGeometry.conv(x, p.weight, p.stride, p.padding, p.dilation) if is_conv
                     else ConvGeometry.linear(x, p.out_features))
                tile_gemm(x, p.weight, p.bias, ck, g, check=False)
        t, _ = time_graph(nocheck, n, reps)
        row["tile_nocheck"] = t
    base = row["unprotected"]
    for v in ("global", "tile", "auto", "tile_nocheck"):
        row[f"{v}_overhead"] = row[v] / base - 1
    row["cheaper"] = "tile" if row["tile"] < row["global"] else "global"
    row["auto_picked_cheaper"] = row["auto_choice"] == row["cheaper"]
    out_rows.append(row)
    return row


def fmt_row(r):
    return (f"{r.get('name', ''):>16} M={r['M']:>6} N={r['N']:>5} K={r['K']:>5} "
            f"AI={r['ai']:>7.1f} unp={r['unprotected'] * 1e6:>8.2f}us "
            f"glob={r['global_overhead'] * 100:>+7.1f}% tile={r['tile_overhead'] * 100:>+7.1f}% "
            f"nochk={r['tile_nocheck_overhead'] * 100:>+7.1f}% auto={r['auto_overhead'] * 100:>+7.1f}%"
            f" [{r['auto_choice']}{'' if r['auto_picked_cheaper'] else ' (not cheaper)'}]")


# ------------------------------------------------------------------ models

def mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


def resnet18ish(n_classes=1000):
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_classes)]
    return nn.Sequential(*layers)


def bench_network(name, make_net, make_input, batch, reps, l2, rows):
    nets = []
    x = make_input(batch)
    net0 = make_net()
    wbytes = sum(p.numel() * p.element_size() for p in net0.parameters())
    n = ring_size(wbytes, 0, l2)
    n = min(n, 8)
    nets = [net0] + [make_net() for _ in range(n - 1)]
    row = {"name": name, "batch": batch, "ring": n}
    with torch.no_grad():
        row["unprotected"], _ = time_graph(lambda: [m(x) for m in nets], n, reps)
        for scheme in ("global", "tile", "auto"):
            ps = [_protect_quiet(copy.deepcopy(m), scheme=scheme) for m in nets]
            row[scheme], _ = time_graph(lambda: [p(x) for p in ps], n, reps)
            row[f"{scheme}_clean_flags"] = sum(len(dg.check(p)) + dg.fault_log(p)["counts"]["flagged"]
                                               for p in ps)
            if scheme == "auto":
                row["auto_choices"] = {m.layer_name: m._auto_cache.get(
                    next(iter(m._auto_cache)) if m._auto_cache else None)
                    for m in ps[0].modules() if hasattr(m, "_auto_cache")}
    for v in ("global", "tile", "auto"):
        row[f"{v}_overhead"] = row[v] / row["unprotected"] - 1
    # The paper's metric: global overhead / auto overhead (None when auto is not
    # slower than unprotected, i.e. the ratio is unbounded).
    extra_auto = row["auto"] - row["unprotected"]
    row["auto_saving_vs_global"] = ((row["global"] - row["unprotected"]) / extra_auto
                                    if extra_auto > 0 else None)
    row["auto_time_vs_global"] = row["global"] / row["auto"]
    rows.append(row)
    log(f"{name:>12} b={batch:>5} unp={row['unprotected'] * 1e6:>9.1f}us "
        f"glob={row['global_overhead'] * 100:>+7.1f}% tile={row['tile_overhead'] * 100:>+7.1f}% "
        f"auto={row['auto_overhead'] * 100:>+7.1f}%")
    return row


def layer_inputs(net, x):
    """(name, module, input) for each Linear/Conv2d of ``net`` on input ``x``."""
    found = []
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: found.append((n, m, a[0].detach())))
             for n, m in net.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="abft.json")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="fewer shapes (smoke test)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    import triton
    res = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__,
           "triton": triton.__version__, "python": platform.python_version(),
           "sms": props.multi_processor_count, "l2_bytes": l2, "dtype": "float16",
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    ridge_table, src = dg.device_ridge(dev)
    meas = measure_ridge(dev)
    res["ridge"] = {"table": ridge_table, "table_source": src, "measured": meas}
    log(f"device {res['device']} torch {res['torch']} triton {res['triton']} "
        f"ridge table {ridge_table:.0f} measured {meas['ridge']:.0f} "
        f"({meas['flops'] / 1e12:.0f} TFLOP/s, {meas['bandwidth'] / 1e12:.2f} TB/s)")
    try:
        cal = dg.calibrate_auto(dev)
        res["auto_calibration"] = cal
    except Exception as exc:  # keep benchmarking with the default threshold
        res["auto_calibration"] = {"error": repr(exc)[:500]}
    res["auto_threshold"] = dg.auto_threshold(dev)
    log(f"auto threshold {res['auto_threshold']} (default would be "
        f"{dg.device_ridge(dev)[0] * 0.2:.1f}); calibration points "
        f"{res['auto_calibration'].get('points', res['auto_calibration'])}")
    t_start = time.time()

    def save():
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1, default=float)

    # ---------------------------------------------------------- kernel config probe
    if "probe" not in skip:
        log("== tile kernel configs (M=K=N=2048): rel. error, clean max ratio, time")
        probe = []
        from dartboost.gpu._abft import LayerChecksums
        x = torch.randn(2048, 2048, device="cuda").to(DT)
        lin = nn.Linear(2048, 2048).cuda().to(DT).requires_grad_(False)
        ck = LayerChecksums(lin.weight, lin.bias)
        geo = ConvGeometry.linear(x, 2048)
        for cfg in ((128, 128, 64, 4, 3), (64, 128, 64, 4, 4), (128, 128, 64, 8, 3),
                    (128, 256, 64, 8, 3), (128, 128, 32, 4, 4), (16, 64, 128, 4, 4),
                    (32, 64, 128, 4, 4)):
            try:
                errs, ratios = [], []
                for _ in range(5):  # repeated: a race shows as a moving error
                    x.normal_()
                    ref = torch.nn.functional.linear(x.float(), lin.weight.float(),
                                                     lin.bias.float())
                    y, r, _ = tile_gemm(x, lin.weight, lin.bias, ck, geo, config=cfg)
                    errs.append(float((y.float() - ref).norm() / ref.norm()))
                    ratios.append(float(r.max()))
                t, _ = time_graph(lambda: tile_gemm(x, lin.weight, lin.bias, ck, geo,
                                                    config=cfg), 1, args.reps)
                row = {"config": cfg, "rel_error": max(errs), "max_ratio": max(ratios), "s": t}
            except Exception as exc:  # report, do not abort the benchmark
                row = {"config": cfg, "error": repr(exc)[:300]}
            probe.append(row)
            log(f"   {row}")
        res["config_probe"] = probe
        save()

    # ---------------------------------------------------------- square sweep
    rows = []
    res["sweep"] = rows
    if "sweep" not in skip:
        Ms = (1, 64, 4096) if args.quick else (1, 8, 64, 512, 2048, 8192)
        KNs = (1024,) if args.quick else (512, 1024, 2048, 4096)
        log("== sweep (fp16, per call)")
        for kn in KNs:
            for m in Ms:
                r = bench_layer(lambda: nn.Linear(kn, kn).cuda().to(DT).eval(),
                                lambda: torch.randn(m, kn, device="cuda").to(DT),
                                args.reps, l2, rows, {"name": f"sq{kn}"})
                log(fmt_row(r))
        log(f"   sweep done at {time.time() - t_start:.0f}s")
        save()

    # ---------------------------------------------------------- MLP layers + networks
    res["layers"] = []
    res["networks"] = []
    mlps = {"dlrm_bottom": (13, 512, 256, 64), "dlrm_top": (512, 256, 1)}
    batches = (1, 64, 4096) if args.quick else (1, 16, 128, 1024, 4096)
    if "mlp" not in skip:
        log("== DLRM-like MLPs")
        for name, sizes in mlps.items():
            for b in batches:
                def make_net(sizes=sizes):
                    return mlp(sizes).cuda().to(DT).eval()
                bench_network(name, make_net,
                              lambda bb, k=sizes[0]: torch.randn(bb, k, device="cuda").to(DT),
                              b, args.reps, l2, res["networks"])
                for lname, mod, xin in layer_inputs(make_net(), torch.randn(
                        b, sizes[0], device="cuda").to(DT)):
                    r = bench_layer(
                        lambda mod=mod: copy.deepcopy(mod).cuda(),
                        lambda xin=xin: torch.randn_like(xin),
                        args.reps, l2, res["layers"],
                        {"name": f"{name}.{lname}", "net": name, "batch": b})
                    log(fmt_row(r))
        log(f"   MLPs done at {time.time() - t_start:.0f}s")
        save()

    if "cnn" not in skip:
        log("== ResNet-18-style CNN, 224x224")
        for b in ((1,) if args.quick else (1, 64)):
            def make_cnn():
                return resnet18ish().cuda().to(DT).eval()
            bench_network("resnet18ish", make_cnn,
                          lambda bb: torch.randn(bb, 3, 224, 224, device="cuda").to(DT),
                          b, max(5, args.reps // 2), l2, res["networks"])
            seen = set()
            for lname, mod, xin in layer_inputs(make_cnn(), torch.randn(
                    b, 3, 224, 224, device="cuda").to(DT)):
                key = (type(mod).__name__, tuple(xin.shape), tuple(mod.weight.shape),
                       getattr(mod, "stride", None))
                if key in seen:
                    continue
                seen.add(key)
                r = bench_layer(lambda mod=mod: copy.deepcopy(mod).cuda(),
                                lambda xin=xin: torch.randn_like(xin),
                                max(5, args.reps // 2), l2, res["layers"],
                                {"name": f"cnn.{lname}", "net": "resnet18ish", "batch": b})
                log(fmt_row(r))
        log(f"   CNN done at {time.time() - t_start:.0f}s")
        save()

    # ---------------------------------------------------------- false positives
    if "fp" not in skip:
        log("== clean checked GEMMs (false positives)")
        fp = {}
        gen = torch.Generator(device="cuda").manual_seed(1)
        for scheme in ("global", "tile"):
            torch.manual_seed(2)
            bottom = _protect_quiet(mlp((13, 512, 256, 64)).cuda().to(DT).eval(), scheme=scheme)
            top = _protect_quiet(mlp((512, 256, 1)).cuda().to(DT).eval(), scheme=scheme)
            cnn = _protect_quiet(resnet18ish(10).cuda().to(DT).eval(), scheme=scheme)
            worst = {}
            with torch.no_grad():
                n_fwd = 0
                for i in range(1200 if not args.quick else 100):
                    bsz = int(2 ** (i % 13))
                    # Heavy-tailed, partly sparse features, as DLRM dense inputs are
                    # after log transforms; and the top MLP sees ReLU activations.
                    xb = torch.randn(bsz, 13, device="cuda", generator=gen)
                    xb = (xb.abs() * torch.exp(torch.randn(bsz, 1, device="cuda",
                                                           generator=gen))).to(DT)
                    bottom(xb)
                    xt = torch.relu(torch.randn(bsz, 512, device="cuda", generator=gen)).to(DT)
                    top(xt)
                    if i % 12 == 0:
                        img = torch.nn.functional.avg_pool2d(torch.randn(
                            2, 3, 232, 232, device="cuda", generator=gen), 9, 1)
                        cnn(img.to(DT))
                    n_fwd += 1
            counts = {k: dg.fault_log(m)["counts"] for k, m in
                      (("dlrm_bottom", bottom), ("dlrm_top", top), ("cnn", cnn))}
            total = sum(c["layer_calls"] for c in counts.values())
            flagged = sum(c["flagged"] for c in counts.values())
            confirmed = sum(c["transient"] + c["weight"] for c in counts.values())
            for k, m in (("dlrm_bottom", bottom), ("dlrm_top", top), ("cnn", cnn)):
                cal = dg.calibrate(m, [xb] if k == "dlrm_bottom" else
                                   [xt] if k == "dlrm_top" else [img.to(DT)], min_alpha=0)
                worst[k] = max(v["max_ratio"] for v in cal.values())
            fp[scheme] = {"checked_gemms": total, "flagged": flagged, "confirmed": confirmed,
                          "per_model": counts, "max_clean_ratio_last_batch": worst}
            log(f"   {scheme}: {total} clean checked GEMMs, flagged {flagged}, "
                f"confirmed {confirmed}")
        res["false_positives"] = fp
        save()

    # ---------------------------------------------------------- detection
    if "detect" not in skip:
        log("== fault detection (trained classifier, fp16)")
        from sklearn.datasets import make_classification
        X, y = make_classification(20000, 13, n_informative=10, n_classes=8,
                                   n_clusters_per_class=1, random_state=0)
        clf = dg.NeuralClassifier((512, 256, 64), max_iter=15, device="cuda",
                                  learning_rate_init=2e-3, random_state=0).fit(X, y)
        res["detection_model"] = {"train_accuracy": float(clf.score(X[:4000], y[:4000])),
                                  "layers": [13, 512, 256, 64, 8]}
        Xt = torch.as_tensor((X[:512] - clf._x_mean) / clf._x_scale, dtype=DT, device="cuda")
        det = {}
        for scheme in ("global", "tile"):
            net = copy.deepcopy(clf.module_).cuda().to(DT).eval()
            p = _protect_quiet(net, scheme=scheme)
            t0 = time.time()
            n_trials = 300 if args.quick else (8000 if scheme == "global" else 5000)
            rep = dg.detection_report(p, Xt, n_trials=n_trials,
                                      n_clean=50 if args.quick else 500, random_state=0)
            trials = rep.pop("trials")
            rep["seconds"] = time.time() - t0
            rep["undetected_prediction_changes"] = [t for t in trials if
                                                    t["prediction_changed"] and not t["detected"]]
            det[scheme] = rep
            pc = rep["prediction_changing"]
            log(f"   {scheme}: {rep['n_trials']} flips, prediction-changing {pc['trials']} "
                f"detected {pc['rate'] * 100:.2f}%; by site "
                + ", ".join(f"{k} {v['rate'] * 100:.1f}%" for k, v in rep["by_site"].items())
                + f"; clean flags {rep['false_positive']['flagged']}/"
                f"{rep['false_positive']['layer_checks']}")
        res["detection"] = det

    # ---------------------------------------------------------- summary
    summ = {}
    for key in ("sweep", "layers"):
        rs = res.get(key) or []
        if rs:
            summ[key] = {
                "n": len(rs),
                "auto_picked_cheaper": sum(r["auto_picked_cheaper"] for r in rs),
                "auto_within_5pct": sum(r["auto_overhead"] <= 0.05 for r in rs),
                "median_overhead": {v: statistics.median(r[f"{v}_overhead"] for r in rs)
                                    for v in ("global", "tile", "auto", "tile_nocheck")},
            }
    if res["networks"]:
        summ["networks"] = [{k: r[k] for k in ("name", "batch", "global_overhead",
                                               "tile_overhead", "auto_overhead",
                                               "auto_saving_vs_global",
                                               "auto_time_vs_global")}
                            for r in res["networks"]]
    res["summary"] = summ
    res["elapsed_s"] = time.time() - t_start
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1, default=float)
    log("== summary")
    log(json.dumps(summ, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
