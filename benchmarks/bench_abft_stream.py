"""Benchmark and clean-run campaign of the weight-streaming checked GEMM (CUDA).

Run on a CUDA machine::

    python benchmarks/bench_abft_stream.py --out benchmarks/results/abft_stream_h200.json

Sections (``--only`` picks some):

* ``cost``: the cost-model constants (:func:`dartboost.gpu.measure_cost_model`),
  stored in the calibration cache so ``scheme='fused'``/``'auto'`` use them.
* ``tune``: the stream kernel's tilings on 4096 x 4096 layers at batch 1, 8, 64
  (fp16, tf32): time and achieved weight bandwidth of each, next to the one
  :func:`stream_config` picks.
* ``layers``: single layers at batch 1, 8, 64, 512, 4096 in fp16, bf16 and tf32,
  each variant captured in a CUDA graph, against the *fastest* unprotected form
  (``torch._addmm_activation``: cuBLASLt bias + ReLU/GELU epilogue; ``addmm``
  without activation).  Variants: ``fused`` (the scheme as shipped: the cost
  model picks the stream kernel or cuBLAS + check pass per call), ``cublas``
  (the fused scheme held to its cuBLAS path: the previous state), ``stream``
  (the stream kernel forced, batch <= 512).
* ``fp``: clean checked GEMMs through the stream kernel over varied shapes, with
  and without a large common offset of the outputs; counts calls whose largest
  ratio exceeds ``alpha``.
* ``detect``: :func:`dartboost.gpu.detection_report` on a 1024-wide MLP at
  batch 8 (stream path), per dtype.
* ``sweep``: detection vs the magnitude of an additive accumulator error (1e-4
  to 1 of the largest output), with and without a common output offset.
* ``campaign``: random single-bit flips (output, accumulator, input, weight) in
  an MLP at batch 256 through the stream kernel until ``--campaign-changed``
  flips changed a prediction; Clopper-Pearson lower bound of their detection.
* ``networks``: whole forward passes (a 4096-wide 3-layer MLP, the DLRM top MLP)
  with ``scheme='fused'`` against the same fastest forms, and held to cuBLAS.
"""
import argparse
import copy
import json
import math
import platform
import time
import warnings

import torch
from torch import nn

import dartboost.gpu as dg
from bench_abft_fused import run_section  # noqa: E402  (this script's folder is on sys.path)
from dartboost.gpu._augmented import AugmentedWeight
from dartboost.gpu._calibration import _graph_time
from dartboost.gpu._protect import _STATE_ATTR
from dartboost.gpu._stream import stream_config, stream_linear, stream_workspace
from dartboost.gpu._triton_gemm import _sms

warnings.simplefilter("ignore", dg.ABFTFaultWarning)
BATCHES = (1, 8, 64, 512, 4096)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32}
LAYERS = [(4096, 4096, "relu"), (4096, 4096, None), (1024, 1024, "relu"),
          (4096, 16384, "gelu"), (16384, 4096, None)]
ACT_MODULE = {"relu": nn.ReLU, "gelu": nn.GELU, None: None}


_SAVE = []  # the JSON writer, called after every row (a run cut short keeps its rows)


def log(*a):
    print(*a, flush=True)
    for fn in _SAVE:
        fn()


def tf32(on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def make_linear(k, n, dtype, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) / math.sqrt(k))
        lin.bias.copy_(torch.randn(n, generator=g) * 0.1 + offset)
    return lin.to("cuda", dtype).requires_grad_(False)


def fastest(lin, act):
    if act == "relu":
        return lambda x: torch._addmm_activation(lin.bias, x, lin.weight.t())
    if act == "gelu":
        return lambda x: torch._addmm_activation(lin.bias, x, lin.weight.t(), use_gelu=True)
    return lambda x: torch.addmm(lin.bias, x, lin.weight.t())


def inner_for(seconds_guess):
    return max(1, min(50, int(2e-3 / max(seconds_guess, 1e-6))))


def section_tune(out, reps):
    rows = []
    for dname in ("fp16", "tf32"):
        dt = DTYPES[dname]
        tf32(dname == "tf32")
        lin = make_linear(4096, 4096, dt)
        aug = AugmentedWeight(lin.weight, lin.bias, tf32=dname == "tf32")
        e = aug.gemm_weight.element_size()
        for m in ((1, 8, 64) if e == 2 else (1, 64)):
            x = torch.randn(m, 4096, device="cuda", dtype=dt)
            pick = stream_config(m, 4096, 4096, e, _sms(x.device))
            bm = pick[0]
            cands = {pick}
            for bn in sorted({max(16, bm), 2 * max(16, bm), 4 * max(16, bm)} - {256}):
                for bk in ((128, 256) if e == 2 else (64, 128)):
                    for split in (1, 2, 4, 8):
                        if m != 8:  # batch 8 shares batch 1's tiles: time the pick only
                            cands.add((bm, bn, bk, split, 4, 3 if bn * bk * e > 16384 else 4))
            for cfg in sorted(cands):
                ws = stream_workspace(m, 4096, cfg[3], x.device)
                try:
                    with torch.no_grad():
                        s = _graph_time(lambda: stream_linear(x, aug, "relu", workspace=ws,
                                                              config=cfg), reps=reps, inner=20)
                except Exception as exc:  # a tiling that does not fit (shared memory)
                    rows.append({"dtype": dname, "M": m, "config": cfg, "error": repr(exc)[:200]})
                    continue
                rows.append({"dtype": dname, "M": m, "config": cfg, "us": s * 1e6,
                             "weight_TBps": e * 4112 * 4096 / s / 1e12, "picked": cfg == pick})
            ok = [r for r in rows if r["dtype"] == dname and r["M"] == m and "us" in r]
            best = min(ok, key=lambda r: r["us"])
            mine = next(r for r in ok if r["picked"])
            log(f"tune {dname} M={m}: picked {mine['config']} {mine['us']:.1f}us "
                f"({mine['weight_TBps']:.2f} TB/s), best {best['config']} {best['us']:.1f}us "
                f"({best['weight_TBps']:.2f} TB/s)")
    tf32(False)
    out["tune"] = rows


def _protected_time(lin, act, x, scheme, reps, inner, cal_override=None):
    mods = [copy.deepcopy(lin)] + ([ACT_MODULE[act]()] if act else [])
    p = dg.protect(nn.Sequential(*mods), scheme=scheme, on_fault="flag", warn=False)
    if cal_override is not None:
        st = getattr(p, _STATE_ATTR)
        st.calibration = {**dg.default_calibration(x.device), **cal_override}
    with torch.no_grad():
        p(x)
        s = _graph_time(lambda: p(x), reps=reps, inner=inner)
        events = dg.check(p)
    plan = p[0].plan(x.shape[0])
    return s, (plan or {}).get("scheme", scheme), len(events)


def section_layers(out, reps, batches, deadline=float("inf")):
    rows = out.setdefault("layers", [])
    no_stream = {"stream_latency": 1.0}  # the cost model never picks it
    for k, n, act in LAYERS:
        for dname, dt in DTYPES.items():
            tf32(dname == "tf32")
            lin = make_linear(k, n, dt)
            for b in batches:
                if time.time() > deadline:
                    out.setdefault("layers_cut_at", [k, n, act, dname, b])
                    return
                x = torch.randn(b, k, device="cuda", dtype=dt)
                inner = inner_for(2 * b * k * n / 600e12 + 2 * k * n / 4e12)
                with torch.no_grad():
                    t0 = _graph_time(lambda: fastest(lin, act)(x), reps=reps, inner=inner)
                row = {"K": k, "N": n, "act": act, "dtype": dname, "batch": b,
                       "baseline_us": t0 * 1e6}
                variants = [("fused", "fused", None), ("cublas", "fused", no_stream)]
                if b <= 512:
                    variants.append(("stream", "stream", None))
                for name, scheme, cal in variants:
                    s, path, nev = _protected_time(lin, act, x, scheme, reps, inner, cal)
                    row[f"{name}_us"] = s * 1e6
                    row[f"{name}_overhead"] = s / t0 - 1
                    row[f"{name}_path"] = path
                    row[f"{name}_false_flags"] = nev
                rows.append(row)
                log(f"layer {k}->{n} {act or '-':5} {dname} b={b:<5} base {t0 * 1e6:7.1f}us "
                    + " ".join(f"{v[0]} {100 * row[v[0] + '_overhead']:+6.1f}%"
                               + (f"[{row['fused_path']}]" if v[0] == "fused" else "")
                               for v in variants))
    tf32(False)


NETWORKS = {"mlp_4096": [(4096, 4096, "relu"), (4096, 4096, "relu"), (4096, 4096, None)],
            "dlrm_top": [(479, 1024, "relu"), (1024, 1024, "relu"), (1024, 512, "relu"),
                         (512, 256, "relu"), (256, 1, None)]}


def section_networks(out, reps, batches, deadline=float("inf")):
    rows = out.setdefault("networks", [])
    for name, spec in NETWORKS.items():
        for dname, dt in DTYPES.items():
            tf32(dname == "tf32")
            lins = [make_linear(k, n, dt, seed=i) for i, (k, n, _) in enumerate(spec)]
            mods = []
            for lin, (_, _, act) in zip(lins, spec):
                mods += [lin] + ([ACT_MODULE[act]()] if act else [])
            net = nn.Sequential(*mods)
            fns = [fastest(lin, act) for lin, (_, _, act) in zip(lins, spec)]

            def base(x):
                for fn in fns:
                    x = fn(x)
                return x
            for b in batches:
                if time.time() > deadline:
                    return
                x = torch.randn(b, spec[0][0], device="cuda", dtype=dt)
                flops = 2 * b * sum(k * n for k, n, _ in spec)
                inner = inner_for(flops / 600e12 + flops / b / 4e12)
                with torch.no_grad():
                    t0 = _graph_time(lambda: base(x), reps=reps, inner=inner)
                row = {"network": name, "dtype": dname, "batch": b, "baseline_us": t0 * 1e6}
                for vname, cal in (("fused", None), ("cublas", {"stream_latency": 1.0})):
                    p = dg.protect(copy.deepcopy(net), scheme="fused", on_fault="flag",
                                   warn=False)
                    if cal is not None:
                        getattr(p, _STATE_ATTR).calibration = {
                            **dg.default_calibration(x.device), **cal}
                    with torch.no_grad():
                        p(x)
                        s = _graph_time(lambda: p(x), reps=reps, inner=inner)
                        row[f"{vname}_false_flags"] = len(dg.check(p))
                    row[f"{vname}_us"] = s * 1e6
                    row[f"{vname}_overhead"] = s / t0 - 1
                    if vname == "fused":
                        row["paths"] = [m.plan(b)["scheme"] for m in p.modules()
                                        if hasattr(m, "plan") and m.plan(b)]
                rows.append(row)
                log(f"net {name} {dname} b={b:<5} base {t0 * 1e6:7.1f}us fused "
                    f"{100 * row['fused_overhead']:+6.1f}% {row['paths']} cublas "
                    f"{100 * row['cublas_overhead']:+6.1f}%")
    tf32(False)


FP_SHAPES = [(1, 4096, 4096), (8, 4096, 4096), (64, 4096, 4096), (1, 1024, 1024),
             (16, 1024, 1000), (3, 300, 77), (32, 777, 513), (128, 512, 2048),
             (256, 2048, 512), (5, 16384, 256), (1, 100, 4100), (48, 4096, 11008),
             (200, 1000, 10), (2, 64, 16), (64, 13, 512), (17, 4099, 1024)]


def section_fp(out, n_gemms, alpha=8.0, deadline=float("inf")):
    """Clean checked GEMMs; per shape: calls, worst ratio, calls over alpha, and the
    output's largest error against cuBLAS relative to the output scale (a wrong
    output and a wrong check tell different stories)."""
    res = out.setdefault("false_positives", {})
    n_variants = 2 * len(DTYPES)
    for v_index, (dname, dt) in enumerate(DTYPES.items()):
        tf32(dname == "tf32")
        g = torch.Generator().manual_seed(123)
        done = 0  # GEMMs of this dtype so far
        for offset in (False, True):
            calls, t_start = 0, time.time()
            # An equal share of the time left per dtype and offset variant (a
            # variant that finishes early leaves its time to the others).
            left = n_variants - 2 * v_index - int(offset)
            stop = t_start + (deadline - t_start) / left
            # Half of n_gemms each; the offset variant makes up for a first one
            # cut short by its time share (compilation comes first).
            per_shape = max(1, max(n_gemms // 2, n_gemms - done) // len(FP_SHAPES))
            shapes = []
            for si, (M, K, N) in enumerate(FP_SHAPES):
                c = float(torch.empty(1).uniform_(10, 1000, generator=g)) if offset else 0.0
                w = torch.randn(N, K, generator=g) / math.sqrt(K)
                if offset:  # a common component of every weight row, too
                    w += torch.randn(1, K, generator=g) / math.sqrt(K)
                b = torch.randn(N, generator=g) * 0.1 + c
                W = nn.Parameter(w.to("cuda", dt), requires_grad=False)
                B = nn.Parameter(b.to("cuda", dt), requires_grad=False)
                aug = AugmentedWeight(W, B, tf32=(dname == "tf32"))
                cfg = stream_config(M, N, K, W.element_size(), _sms(W.device))
                ws = stream_workspace(M, N, cfg[3], W.device)
                xs = torch.randn(64, M, K, device="cuda").to(dt)
                over = torch.zeros((), device="cuda", dtype=torch.int64)
                mx = torch.zeros((), device="cuda")
                n_shape = 0
                # The checked values are the pre-activation outputs: no activation.
                y, _, _ = stream_linear(xs[0], aug, None, workspace=ws, config=cfg)
                ref = torch.nn.functional.linear(xs[0], aug.gemm_weight[:N], B)
                rel_err = float((y.float() - ref.float()).abs().max()
                                / ref.float().abs().max().clamp_min(1e-30))
                for i in range(per_shape):
                    if i % 256 == 0 and time.time() > stop - (len(FP_SHAPES) - si) * 0.2:
                        break  # out of time: keep every shape, fewer calls each
                    x = xs[i % 64]
                    if i % 64 == 63:
                        xs.normal_()
                    _, ratio, _ = stream_linear(x, aug, None, workspace=ws, config=cfg)
                    r = ratio.max()
                    mx = torch.maximum(mx, r)
                    over += (~(r <= alpha)).to(torch.int64)
                    n_shape += 1
                calls += n_shape
                shapes.append({"M": M, "K": K, "N": N, "config": cfg, "calls": n_shape,
                               "worst_ratio": float(mx), "over_alpha": int(over),
                               "rel_err_vs_cublas": rel_err})
            done += calls
            key = f"{dname}{'_offset' if offset else ''}"
            res[key] = {"checked_gemms": calls, "alpha": alpha,
                        "worst_ratio": max(r["worst_ratio"] for r in shapes),
                        "over_alpha": sum(r["over_alpha"] for r in shapes),
                        "shapes": shapes, "seconds": time.time() - t_start}
            log(f"fp {key}: {calls} GEMMs, worst ratio {res[key]['worst_ratio']:.3f}, over "
                f"alpha {res[key]['over_alpha']}; shapes over alpha: "
                + ", ".join(f"{r['M']}x{r['K']}x{r['N']}:{r['over_alpha']}/{r['calls']}"
                            f"(err {r['rel_err_vs_cublas']:.1e})"
                            for r in shapes if r["over_alpha"]))
    tf32(False)


def section_detect(out, n_trials):
    res = out.setdefault("detect", {})
    for dname, dt in DTYPES.items():
        tf32(dname == "tf32")
        net = nn.Sequential(make_linear(1024, 1024, dt), nn.ReLU(),
                            make_linear(1024, 1024, dt, seed=1), nn.ReLU(),
                            make_linear(1024, 10, dt, seed=2))
        p = dg.protect(net, scheme="stream", on_fault="flag", warn=False)
        X = torch.randn(8, 1024, device="cuda").to(dt)
        t0 = time.time()
        rep = dg.detection_report(p, X, n_trials=n_trials, n_clean=100, random_state=3,
                                  sites=("output", "accumulator", "input", "weight"))
        rep.pop("trials")
        rep["seconds"] = time.time() - t0
        res[dname] = rep
        pc = rep["prediction_changing"]
        log(f"detect {dname}: prediction-changing {pc['detected']}/{pc['trials']}, by site "
            + ", ".join(f"{k} {v['detected']}/{v['trials']}" for k, v in rep["by_site"].items())
            + f", FP {rep['false_positive']['confirmed']}/{rep['false_positive']['layer_checks']}")
    tf32(False)


SWEEP_SHAPES = ((1, 4096, 4096), (8, 1024, 1024), (8, 4096, 4096), (8, 512, 256))


def section_sweep(out, trials, alpha=8.0):
    """Detection vs error magnitude: an additive error of ``eps`` x the largest
    output added to one fp32 accumulator (mode 4), ``eps`` from 1e-4 to 1, with
    and without a common offset of 100 in every output."""
    mags = [10 ** (e / 4) for e in range(-16, 1)]
    res = out.setdefault("sweep", [])
    for dname, dt in DTYPES.items():
        tf32(dname == "tf32")
        g = torch.Generator().manual_seed(7)
        for offset in (False, True):
            for (M, K, N) in SWEEP_SHAPES:
                w = torch.randn(N, K, generator=g) / math.sqrt(K)
                b = torch.randn(N, generator=g) * 0.1 + (100.0 if offset else 0.0)
                W = nn.Parameter(w.to("cuda", dt), requires_grad=False)
                B = nn.Parameter(b.to("cuda", dt), requires_grad=False)
                aug = AugmentedWeight(W, B, tf32=(dname == "tf32"))
                x = torch.randn(M, K, device="cuda").to(dt)
                cfg = stream_config(M, N, K, W.element_size(), _sms(W.device))
                ws = stream_workspace(M, N, cfg[3], W.device)
                y, r0, _ = stream_linear(x, aug, None, workspace=ws, config=cfg)
                scale = float(y.float().abs().max())
                rows = torch.randint(0, M, (trials,), generator=g).tolist()
                cols = torch.randint(0, N, (trials,), generator=g).tolist()
                signs = (torch.randint(0, 2, (trials,), generator=g) * 2 - 1).tolist()
                line = []
                for mag in mags:
                    det = torch.zeros((), device="cuda", dtype=torch.int64)
                    for i, j, sg in zip(rows, cols, signs):
                        _, ratio, _ = stream_linear(x, aug, None, workspace=ws, config=cfg,
                                                    inject=(4, i, j, 0, 0, sg * mag * scale))
                        det += (~(ratio[i] <= alpha)).to(torch.int64)
                    res.append({"dtype": dname, "offset": offset, "M": M, "K": K, "N": N,
                                "kind": "additive (accumulator)", "rel_error": mag,
                                "trials": trials, "detected": int(det),
                                "clean_worst_ratio": float(r0.max())})
                    line.append(f"{mag:.0e}:{int(det)}/{trials}")
                log(f"sweep {dname} offset={offset} {M}x{K}x{N}: " + " ".join(line))
    tf32(False)


def _merge_reports(chunks, n_clean_reps):
    """One detection report from several :func:`detection_report` chunks' trials."""
    from dartboost.gpu._faults import _summarise
    trials = [tr for c in chunks for tr in c["trials"]]
    fp = [c["false_positive"] for c in n_clean_reps]
    return _summarise(trials, sum(f["layer_checks"] for f in fp),
                      sum(f["flagged"] for f in fp), sum(f["confirmed"] for f in fp),
                      sum(f["clean_forwards"] for f in fp))


def section_campaign(out, min_changed, seconds_per_dtype, scrub=True):
    """Single-bit faults at output, accumulator, input and weight of a
    random MLP 64-256-256-10 at batch 256 through the stream kernel, in chunks until
    ``min_changed`` prediction-changing flips (or the time per dtype) are reached.
    With ``scrub`` a weight scrub runs after every faulty forward; records keep
    ``detected_by_check`` (the per-call check alone)."""
    from bench_abft_fused import _cp_lower, build
    res = out.setdefault("campaign", {})
    for dname, dt in DTYPES.items():
        tf32(dname == "tf32")
        net, _ = build([(64, 256, "relu"), (256, 256, "relu"), (256, 10, None)], dt, seed=3)
        g = torch.Generator().manual_seed(5)
        X = torch.randn(256, 64, generator=g).to("cuda", dt)
        p = dg.protect(net, scheme="stream", on_fault="flag", warn=False)
        t0, chunks, changed, seed = time.time(), [], 0, 11
        while changed < min_changed and time.time() - t0 < seconds_per_dtype:
            rep = dg.detection_report(p, X, n_trials=2000, n_clean=50, random_state=seed,
                                      sites=("output", "accumulator", "input", "weight"),
                                      scrub=scrub)
            chunks.append(rep)
            changed += rep["prediction_changing"]["trials"]
            seed += 1
        rep = _merge_reports(chunks, chunks)
        trials = rep.pop("trials")
        pc = rep["prediction_changing"]
        n, d = pc["trials"], pc["detected"]
        pc["lower95"] = _cp_lower(d, n)
        if scrub:
            pc["lower95_by_check"] = _cp_lower(pc["detected_by_check"], n)
        pc["by_site"] = {site: [sum(b["prediction_changed"] for b in bl),
                                sum(b["prediction_changed_detected"] for b in bl)]
                         for site, bl in rep["by_bit"].items()}
        pc["missed"] = [{k: tr[k] for k in ("site", "layer", "bit", "rel_error")}
                        for tr in trials if tr["prediction_changed"] and not tr["detected"]][:50]
        if scrub:
            pc["missed_by_check"] = [
                {k: tr[k] for k in ("site", "layer", "bit", "rel_error")}
                for tr in trials if tr["prediction_changed"] and not tr["detected_by_check"]][:50]
        rep["seconds"] = time.time() - t0
        res[dname] = rep
        log(f"campaign {dname}: {rep['n_trials']} flips, prediction-changing {d}/{n} (lower95 "
            f"{pc['lower95']:.5f}; by the per-call check alone "
            f"{pc.get('detected_by_check', d)}/{n}), by site "
            + ", ".join(f"{k} {v[1]}/{v[0]}" for k, v in pc["by_site"].items())
            + f", FP {rep['false_positive']['confirmed']}/{rep['false_positive']['layer_checks']}"
            + f" ({rep['seconds']:.0f}s)")
    tf32(False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="abft_stream.json")
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--only", default="cost,layers,fp,sweep,campaign,detect,networks,tune")
    ap.add_argument("--batches", default="1,8,64,512,4096")
    ap.add_argument("--fp-gemms", type=int, default=100_000)
    ap.add_argument("--detect-trials", type=int, default=400)
    ap.add_argument("--sweep-trials", type=int, default=64)
    ap.add_argument("--campaign-changed", type=int, default=3000,
                    help="prediction-changing flips wanted per dtype")
    ap.add_argument("--campaign-s", type=float, default=120, help="time cap per dtype")
    ap.add_argument("--no-scrub", action="store_true", help="campaign without weight scrub")
    ap.add_argument("--budget-s", type=float, default=1e9,
                    help="skip sections that start after this many seconds")
    ap.add_argument("--layers-s", type=float, default=1e9, help="time cap of 'layers'")
    ap.add_argument("--fp-s", type=float, default=1e9, help="time cap of 'fp'")
    ap.add_argument("--networks-s", type=float, default=1e9, help="time cap of 'networks'")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "python": platform.python_version(), "reps": args.reps}
    only = args.only.split(",")
    t_all = time.time()

    def save():
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
    _SAVE.append(save)
    batches = tuple(int(b) for b in args.batches.split(","))
    sections = {"cost": lambda: out.__setitem__("cost_model", dg.measure_cost_model(store=True)),
                "tune": lambda: section_tune(out, args.reps),
                "layers": lambda: section_layers(out, args.reps, batches,
                                                 time.time() + args.layers_s),
                "fp": lambda: section_fp(out, args.fp_gemms, deadline=time.time() + args.fp_s),
                "detect": lambda: section_detect(out, args.detect_trials),
                "sweep": lambda: section_sweep(out, args.sweep_trials),
                "campaign": lambda: section_campaign(out, args.campaign_changed,
                                                     args.campaign_s, not args.no_scrub),
                "networks": lambda: section_networks(out, args.reps, batches,
                                                     time.time() + args.networks_s)}
    for name in only:
        if time.time() - t_all > args.budget_s:
            out.setdefault("skipped", []).append(name)
            continue
        run_section(out, name, sections[name], save, log)
        if name == "cost" and "cost_model" in out:
            log("cost model", out["cost_model"])
    save()


if __name__ == "__main__":
    main()
