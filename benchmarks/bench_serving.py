"""Tail latency of coded serving against its baselines (ParM-style evaluation).

Poisson arrivals of single-row queries at several loads are sent to a
:class:`dartboost.serving.CodedPool` on local worker processes, for every
redundancy mode and k in {2, 3, 4}:

* ``coded``       m base workers + ceil(m/k) parity workers (ParM, r = 1)
* ``equal``       the same m + ceil(m/k) workers, all serving the base model
* ``backup``      m base + ceil(m/k) workers running a cheap distilled model;
                  its answer is used for a batch that is lost or late
                  (``backup_timeout="auto"``, the coded mode's rule)
* ``replication`` m base + m replicas, first answer wins
* ``none``        m base workers, no redundancy
* ``coded_parm``  coded with ParM's policy ``decode_wait=0`` (decode as soon as
                  any k of k + r outputs are in) instead of the default
                  ``"auto"`` (decode only lost or late batches); k=2 only by
                  default (``--wait-ks``)
* ``coded_wait``  (on request) coded with ``decode_wait="median"``

Honest design for a 2-core host: the model's real compute (a DART ensemble on
a few rows) is far below a millisecond, and a dozen processes cannot all
compute at once on two cores. Each task therefore takes an *emulated* service
time (``service_time + per_row_time * rows``; the real compute counts towards
it, the rest is slept), and slowdowns are injected as a heavy-tailed process on
every worker (parity, backup and replica workers included). Latency is thus
dominated by a controlled, documented model cost plus queueing, batching and
the pool's own dispatch overhead, which is real. The client runs in the pool's
process; ``gc.freeze()`` before each point keeps the collector's pauses (which
otherwise reach 200 ms with many live objects) out of every mode's tail alike.
Parity models, decoding and
the reported accuracies are real: every answer, decoded ones included, is
compared with the true label.

Usage::

    python benchmarks/bench_serving.py              # full run (~15 min)
    python benchmarks/bench_serving.py --quick      # smoke run (~1 min)
    python benchmarks/bench_serving.py --plot-only  # redraw PNGs from the JSON
"""

import argparse
import gc
import json
import math
import os
import platform
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
MODES = ("coded", "coded_parm", "equal", "backup", "replication", "none")
COLORS = {"coded": "C0", "coded_wait": "C4", "coded_parm": "C5", "equal": "C1", "backup": "C2",
          "replication": "C3", "none": "C7"}
# The coded pool under other decode policies than its default ("auto": decode a
# batch only once it is lost or late against the observed latencies).
DECODE_WAIT = {"coded_wait": "median", "coded_parm": 0}
# Base instances per k: a multiple of k (so parity overhead is exactly 1/k)
# small enough that every pool fits a 2-core host.
M_FOR_K = {2: 4, 3: 3, 4: 4}
# Tail quantiles stored per point (for CDF plots without raw latencies).
QGRID = np.concatenate([np.linspace(0.0, 0.9, 46), 1 - np.logspace(-1, -4, 40)])


def build_models(seed=0, n_train=20000, n_test=5000, n_features=20, n_estimators=100):
    """A DART classifier, and per k a DART parity model at the same tree budget."""
    from sklearn.datasets import make_classification

    from dartboost import DartClassifier

    X, y = make_classification(n_samples=n_train + n_test, n_features=n_features,
                               n_informative=12, random_state=seed)
    Xtr, ytr, Xte, yte = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    t = time.perf_counter()
    base = DartClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(Xtr, ytr)
    fit_s = time.perf_counter() - t
    return base, Xtr, Xte, yte, fit_s


def fit_coded(base, Xtr, k, seed=0):
    from dartboost.coded import CodedPredictor

    t = time.perf_counter()
    cp = CodedPredictor(base, k=k, r=1, random_state=seed).fit(Xtr)
    return cp, time.perf_counter() - t


def run_point(pool, Xq, yq, base_pred, rate, n, seed):
    """Send ``n`` Poisson arrivals at ``rate``/s; return the point's measurements."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n))
    idx = rng.integers(0, len(Xq), size=n)
    before = pool.stats()
    lat = np.full(n, np.nan)
    pred = np.empty(n, dtype=yq.dtype)
    approx = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    left = [n]
    all_done = threading.Event()
    lock = threading.Lock()

    def record(f, i):
        # Answers are copied out as they arrive, so finished futures are
        # garbage at once: the client holds no 20,000 live futures, whose
        # scanning would make the collector's pauses part of the tail.
        exc = f.exception()
        if exc is None:
            r = f.result()
            lat[i] = r.latency
            pred[i] = r.values[0]
            approx[i] = r.approximate[0]
        else:
            failed[i] = True  # counted, never dropped
        with lock:
            left[0] -= 1
            if left[0] == 0:
                all_done.set()

    # Objects alive before the point (models, data) are moved out of the
    # collector's reach, as a latency-sensitive server would do after loading.
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + arrivals[i] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pool.submit(Xq[idx[i]]).add_done_callback(lambda f, i=i: record(f, i))
    send_s = time.perf_counter() - t0
    if not all_done.wait(300):
        raise RuntimeError(f"{left[0]} queries unanswered after 300 s")
    gc.unfreeze()
    errors = int(failed.sum())
    ok = ~np.isnan(lat)
    after = pool.stats()
    correct = pred[ok] == yq[idx[ok]]
    agree = pred[ok] == base_pred[idx[ok]]
    a = approx[ok]
    lat_ms = lat[ok] * 1e3
    q = np.quantile(lat_ms, [0.5, 0.99, 0.999])
    delta = {c: after[c] - before[c] for c in ("tasks_cancelled", "tasks_wasted", "decodes",
                                               "groups_partial", "rows_backup",
                                               "rows_reconstructed", "tasks_sent",
                                               "busy_s_base", "busy_s_extra")}
    wall = time.perf_counter() - t0
    util_base = delta["busy_s_base"] / (pool.n_base * wall)
    util_extra = delta["busy_s_extra"] / (pool.n_extra * wall) if pool.n_extra else None
    return {
        "rate": rate,
        "n_queries": n,
        "achieved_rate": n / send_s,
        "errors": errors,
        "median_ms": q[0],
        "p99_ms": q[1],
        "p999_ms": q[2],
        "mean_ms": float(lat_ms.mean()),
        "max_ms": float(lat_ms.max()),
        "tail_gap_ms": q[2] - q[0],
        "accuracy": float(correct.mean()),
        "accuracy_exact": float(correct[~a].mean()) if (~a).any() else None,
        "accuracy_degraded": float(correct[a].mean()) if a.any() else None,
        "degraded_fraction": float(a.mean()),
        "agreement_with_base": float(agree.mean()),
        "agreement_degraded": float(agree[a].mean()) if a.any() else None,
        "quantiles_ms": np.quantile(lat_ms, QGRID).tolist(),
        "utilization_base": util_base,
        "utilization_extra": util_extra,
        "host_loadavg_1min": os.getloadavg()[0],
        "pool": delta,
    }


def bench(args):
    from dartboost.serving import FaultSpec, make_backup_model, pool_for_mode

    base, Xtr, Xte, yte, fit_s = build_models(seed=args.seed)
    base_pred = base.predict(Xte)
    base_acc = float((base_pred == yte).mean())
    print(f"base model: DART, {base.n_estimators} trees, fit {fit_s:.1f} s, "
          f"test accuracy {base_acc:.4f}", flush=True)
    backup = make_backup_model(base, Xtr)
    backup_acc = float((np.where(backup.predict(Xte) > 0, base.classes_[1], base.classes_[0])
                        == yte).mean())
    svc = dict(service_time=args.service_ms / 1e3, per_row_time=args.per_row_ms / 1e3)
    slow = dict(slow_prob=args.slow_prob, slow_scale=args.slow_scale,
                slow_alpha=args.slow_alpha, slow_max=1.0)
    capacity = {}
    out = {
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                 "platform": platform.platform()},
        "config": {
            "ks": args.ks, "loads": args.loads, "n_queries": args.queries,
            "m_for_k": {str(k): M_FOR_K[k] for k in args.ks},
            "batch_size": args.batch_size, "max_batch_delay_ms": args.batch_delay_ms,
            "group_timeout_ms": args.group_timeout_ms,
            "service_ms": args.service_ms, "per_row_ms": args.per_row_ms,
            "backup_service_ms": "service_ms / (2k)",
            "slowdown": slow, "seed": args.seed,
            "model": {"type": "DartClassifier", "n_estimators": base.n_estimators,
                      "n_features": Xtr.shape[1], "n_train": len(Xtr),
                      "test_accuracy": base_acc, "backup_accuracy": backup_acc},
        },
        "coded_models": {},
        "points": [],
    }
    done = {}  # (mode, m) -> points, for modes that do not depend on k
    t_all = time.perf_counter()
    for k in args.ks:
        m = M_FOR_K[k]
        cp, cp_s = fit_coded(base, Xtr, k, seed=args.seed)
        # Degraded-mode accuracy of the parity model offline, for reference.
        rng = np.random.default_rng(k)
        G = Xte[rng.integers(0, len(Xte), size=(k, 2000))]
        avail = np.ones(k + 1, dtype=bool)
        avail[0] = False
        pg, _ = cp.predict_group(G, avail)
        out["coded_models"][str(k)] = {
            "fit_s": cp_s, "parity_trees": int(getattr(cp.parity_estimators_[0], "n_estimators",
                                                       0)) if hasattr(cp, "parity_estimators_")
            else None,
            "offline_reconstruction_agreement": float((pg[0] == base.predict(G[0])).mean()),
        }
        full = m * args.batch_size / (svc["service_time"] + svc["per_row_time"] * args.batch_size)
        capacity[k] = full
        for mode in args.modes:
            if mode in DECODE_WAIT and k not in args.wait_ks:
                continue
            key = (mode, m)
            if mode in ("none", "replication") and key in done:
                for p in done[key]:
                    out["points"].append(dict(p, k=k, reused_from_k=p["k"]))
                continue
            t = time.perf_counter()
            base_f = FaultSpec(**svc, **slow, seed=args.seed + 101 * k)
            extra_f = base_f
            if mode == "backup":
                extra_f = FaultSpec(service_time=svc["service_time"] / (2 * k),
                                    per_row_time=svc["per_row_time"] / (2 * k), **slow,
                                    seed=args.seed + 7 + 101 * k)
            extra_kw = {"decode_wait": DECODE_WAIT[mode]} if mode in DECODE_WAIT else {}
            pool = pool_for_mode("coded" if mode in DECODE_WAIT else mode, cp, n_workers=m,
                                 backup=backup if mode == "backup" else None, **extra_kw,
                                 base_faults=base_f, extra_faults=extra_f,
                                 batch_size=args.batch_size,
                                 max_batch_delay=args.batch_delay_ms / 1e3,
                                 group_timeout=args.group_timeout_ms / 1e3,
                                 hang_timeout=30.0, request_timeout=120.0)
            start_s = time.perf_counter() - t
            pts = []
            try:
                # Warm-up (not measured): fills the backup's median estimate,
                # pages in code paths.
                run_point(pool, Xte, yte, base_pred, 0.3 * full, 300, seed=1)
                for li, load in enumerate(args.loads):
                    p = run_point(pool, Xte, yte, base_pred, load * full, args.queries,
                                  seed=args.seed + 1000 * li + k)
                    p.update(mode=mode, k=k, m=m, load=load, n_base=pool.n_base,
                             n_extra=pool.n_extra, workers=pool.n_base + pool.n_extra)
                    pts.append(p)
                    print(f"k={k} {mode:12s} load={load:.2f} rate={p['rate']:5.0f}/s "
                          f"util={p['utilization_base']:.2f} "
                          f"p50={p['median_ms']:6.1f} p99={p['p99_ms']:6.1f} "
                          f"p99.9={p['p999_ms']:7.1f} ms acc={p['accuracy']:.4f} "
                          f"degraded={p['degraded_fraction']:.3f} err={p['errors']}",
                          flush=True)
            finally:
                pool.close()
            done[key] = pts
            out["points"].extend(pts)
            print(f"  ({mode}, k={k}: start {start_s:.1f} s, total "
                  f"{time.perf_counter() - t:.1f} s, elapsed {time.perf_counter() - t_all:.0f} s)",
                  flush=True)
    out["config"]["capacity_qps"] = {str(k): v for k, v in capacity.items()}
    out["summary"] = summarise(out["points"])
    out["wall_s"] = time.perf_counter() - t_all
    return out


def summarise(points):
    """Tail-gap ratios against equal resources (ParM's headline metric)."""
    rows = []
    by = {(p["mode"], p["k"], p["load"]): p for p in points}
    for (mode, k, load), p in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if mode != "coded":
            continue
        row = {"k": k, "load": load, "coded_median_ms": p["median_ms"],
               "coded_p999_ms": p["p999_ms"], "coded_gap_ms": p["tail_gap_ms"]}
        for other in ("equal", "none", "backup", "replication", "coded_wait", "coded_parm"):
            o = by.get((other, k, load))
            if o is not None:
                row[f"{other}_median_ms"] = o["median_ms"]
                row[f"{other}_p999_ms"] = o["p999_ms"]
                row[f"gap_ratio_vs_{other}"] = o["tail_gap_ms"] / p["tail_gap_ms"]
        rows.append(row)
    return rows


def markdown_table(out):
    """Results as a Markdown table (for docs/serving.md)."""
    lines = ["| k | mode | workers | load | rate q/s | util | p50 ms | p99 ms | p99.9 ms | "
             "p99.9-p50 ms | accuracy | degraded |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(MODES)}
    for p in sorted(out["points"], key=lambda p: (p["k"], order[p["mode"]], p["load"])):
        lines.append(
            f"| {p['k']} | {p['mode']} | {p['workers']} | {p['load']:.1f} | {p['rate']:.0f} | "
            f"{p['utilization_base']:.2f} | {p['median_ms']:.1f} | {p['p99_ms']:.1f} | "
            f"{p['p999_ms']:.1f} | {p['tail_gap_ms']:.1f} | {p['accuracy']:.4f} | "
            f"{p['degraded_fraction']:.3f} |")
    return "\n".join(lines)


def _legend(fig, axes):
    # One legend for all panels (coded_wait only appears in some of them).
    seen = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen.keys()), loc="upper right", fontsize=8,
               ncol=len(seen))
    fig.tight_layout(rect=(0, 0, 1, 0.92))


def plot(out, prefix):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = out["points"]
    ks = sorted({p["k"] for p in pts})
    fig, axes = plt.subplots(1, len(ks), figsize=(5 * len(ks), 4), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], ks):
        for mode in MODES:
            ps = sorted((p for p in pts if p["k"] == k and p["mode"] == mode),
                        key=lambda p: p["load"])
            if not ps:
                continue
            x = [p["load"] for p in ps]
            ax.plot(x, [p["p999_ms"] for p in ps], "-o", color=COLORS[mode], label=f"{mode} p99.9")
            ax.plot(x, [p["median_ms"] for p in ps], "--", color=COLORS[mode], alpha=0.6)
        ax.set_title(f"k = {k} (m = {ps[0]['m'] if ps else '?'} base workers)")
        ax.set_xlabel("load (fraction of base capacity)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("latency (ms): p99.9 solid, median dashed")
    _legend(fig, axes)
    fig.savefig(prefix + "_latency_vs_load.png", dpi=120)
    plt.close(fig)

    loads = sorted({p["load"] for p in pts})
    mid = loads[len(loads) // 2]
    fig, axes = plt.subplots(1, len(ks), figsize=(5 * len(ks), 4), sharey=True, squeeze=False)
    qg = QGRID
    for ax, k in zip(axes[0], ks):
        for mode in MODES:
            p = next((p for p in pts if p["k"] == k and p["mode"] == mode and p["load"] == mid),
                     None)
            if p is None:
                continue
            ax.plot(p["quantiles_ms"], 1 - qg, color=COLORS[mode], label=mode)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 1)
        ax.set_title(f"k = {k}, load {mid:.2f}")
        ax.set_xlabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("fraction of queries slower (1 - CDF)")
    _legend(fig, axes)
    fig.savefig(prefix + "_cdf.png", dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--out", default=None, help="JSON path (default results/serving.json)")
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    ap.add_argument("--loads", type=float, nargs="+", default=[0.2, 0.3, 0.4],
                    help="offered rate as a fraction of the base workers' full-batch capacity")
    ap.add_argument("--wait-ks", type=int, nargs="*", default=[2])
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batch-delay-ms", type=float, default=5.0)
    ap.add_argument("--group-timeout-ms", type=float, default=10.0)
    ap.add_argument("--service-ms", type=float, default=10.0)
    ap.add_argument("--per-row-ms", type=float, default=0.25)
    ap.add_argument("--slow-prob", type=float, default=0.01)
    ap.add_argument("--slow-scale", type=float, default=10.0)
    ap.add_argument("--slow-alpha", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.queries = min(args.queries, 2000)
        args.loads = args.loads[:2]
    out_path = args.out or os.path.join(
        RESULTS, "serving_quick.json" if args.quick else "serving.json")
    prefix = os.path.splitext(out_path)[0]
    if args.plot_only:
        with open(out_path) as f:
            out = json.load(f)
        plot(out, prefix)
        print(markdown_table(out))
        return 0
    for k in args.ks:
        if k not in M_FOR_K:
            ap.error(f"k must be one of {sorted(M_FOR_K)}")
    out = bench(args)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, default=float)
    plot(out, prefix)
    print(f"wrote {out_path} and {prefix}_*.png ({out['wall_s']:.0f} s)")
    for row in out["summary"]:
        r = row.get("gap_ratio_vs_equal")
        print(f"k={row['k']} load={row['load']:.2f}: coded p50 {row['coded_median_ms']:.1f} / "
              f"p99.9 {row['coded_p999_ms']:.1f} ms; equal p50 "
              f"{row.get('equal_median_ms', math.nan):.1f} / p99.9 "
              f"{row.get('equal_p999_ms', math.nan):.1f} ms; gap ratio equal/coded "
              f"{r if r is None else round(r, 2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
