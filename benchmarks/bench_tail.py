"""Tail latency under injected slowdowns: coded (r = 1, 2), equal-cost backup, replication, none.

A small, local companion of ``bench_serving.py`` (which sweeps loads for
r = 1 only): one load, k = 2..4, and the redundancy modes of issue 15 side by
side, each with the default policies a user gets:

* ``none``         m base workers.
* ``replication``  m + m workers, every batch twice, first answer wins.
* ``backup``       m + ceil(m/k) workers running an *equal-cost* backup
                   (:func:`dartboost.coded.equal_cost_backup`: a DART model
                   trained on the labels with 1/k of the parity models'
                   trees), used for lost or late batches.
* ``coded``        m + r*ceil(m/k) parity workers, default policy (decode only
                   lost or late batches), r = 1 and 2.
* ``coded_parm``   the same pool under ParM's policy (``decode_wait=0``:
                   decode as soon as k of k + r outputs are in).

Service times are emulated in proportion to each model's trees (the base's
``--service-ms``; a parity model with twice the trees takes twice as long, the
backup 2/k as long), plus heavy-tailed slowdowns on every worker, as in
``bench_serving.py`` (2 shared cores cannot run a dozen real models at once).
Accuracies are real. Writes ``results/tail.json``.

Usage::

    python benchmarks/bench_tail.py           # ~3 min on 2 cores (5 runs per pool, medians)
    python benchmarks/bench_tail.py --quick   # ~1 min
    python benchmarks/bench_tail.py --workers 12 --queries 6000 --repeats 3 \
        --out benchmarks/results/tail_m12.json  # ParM's pool size, 12 base workers
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serving import run_point  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
M_FOR_K = {2: 4, 3: 3, 4: 4}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--rs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--load", type=float, default=0.3)
    ap.add_argument("--service-ms", type=float, default=10.0)
    ap.add_argument("--per-row-ms", type=float, default=0.25)
    ap.add_argument("--slow-prob", type=float, default=0.01)
    ap.add_argument("--slow-scale", type=float, default=10.0)
    ap.add_argument("--slow-alpha", type=float, default=1.5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5,
                    help="measured runs per pool (different arrivals); medians are reported")
    ap.add_argument("--workers", type=int, default=None,
                    help="base workers m for every k (default: 4, 3, 4 for k = 2, 3, 4); "
                         "e.g. 12 for a pool the size of ParM's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(RESULTS, "tail.json"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    args = ap.parse_args(argv)
    if args.plot_only:
        with open(args.out) as f:
            plot(json.load(f), args.out[:-5] + "_p999.png")
        return
    if args.quick:
        args.queries, args.ks, args.repeats = 600, [2, 3], 1
    from sklearn.datasets import make_classification

    from dartboost import DartClassifier
    from dartboost.coded import CodedPredictor, equal_cost_backup
    from dartboost.coded._report import model_size
    from dartboost.serving import FaultSpec, pool_for_mode

    X, y = make_classification(n_samples=8000, n_features=20, n_informative=12,
                               random_state=args.seed)
    Xtr, ytr, Xte, yte = X[:6000], y[:6000], X[6000:], y[6000:]
    base = DartClassifier(n_estimators=50, n_jobs=1, random_state=args.seed).fit(Xtr, ytr)
    base_pred = base.predict(Xte)
    base_trees = model_size(base)["trees"]
    slow = dict(slow_prob=args.slow_prob, slow_scale=args.slow_scale,
                slow_alpha=args.slow_alpha, slow_max=1.0)

    def spec(trees, seed):
        f = trees / base_trees
        return FaultSpec(service_time=f * args.service_ms / 1e3,
                         per_row_time=f * args.per_row_ms / 1e3, **slow, seed=seed)

    points, models = [], {}
    t_all = time.perf_counter()
    for k in args.ks:
        m = args.workers or M_FOR_K[k]
        cap = m * args.batch_size / (args.service_ms / 1e3 + args.per_row_ms / 1e3 *
                                     args.batch_size)
        rate = args.load * cap
        coded = {r: CodedPredictor(base, k=k, r=r, random_state=args.seed).fit(Xtr)
                 for r in args.rs if r <= k}
        backup = equal_cost_backup(coded[1], Xtr, ytr, random_state=args.seed)
        par_trees = model_size(coded[1].parity_estimators_[0])["trees"]
        bk_trees = model_size(backup)["trees"]
        models[str(k)] = {"parity_trees": par_trees, "backup_trees": bk_trees,
                          "backup_accuracy": float((backup.predict(Xte) == yte).mean())}
        runs = [("none", 1, {}), ("replication", 1, {}), ("backup", 1, {})]
        runs += [(name, r, kw) for r in coded for name, kw in
                 (("coded", {}), ("coded_parm", {"decode_wait": 0}))]
        for name, r, kw in runs:
            mode = "coded" if name.startswith("coded") else name
            extra_trees = {"coded": par_trees, "backup": bk_trees}.get(mode, base_trees)
            pool = pool_for_mode(mode, coded[r], n_workers=m,
                                 backup=backup if mode == "backup" else None,
                                 base_faults=spec(base_trees, args.seed + 11 * k),
                                 extra_faults=spec(extra_trees, args.seed + 13 * k),
                                 batch_size=args.batch_size, max_batch_delay=0.005,
                                 group_timeout=0.01, hang_timeout=30.0, request_timeout=120.0,
                                 **kw)
            try:
                run_point(pool, Xte, yte, base_pred, rate, 300, seed=1)  # latency history
                runs = [run_point(pool, Xte, yte, base_pred, rate, args.queries,
                                  seed=args.seed + 100 * rep + k) for rep in range(args.repeats)]
            finally:
                pool.close()
            for run in runs:
                run.pop("quantiles_ms", None)
            keys = ("median_ms", "p99_ms", "p999_ms", "tail_gap_ms", "accuracy",
                    "degraded_fraction")
            p = {key: float(np.median([run[key] for run in runs])) for key in keys}
            p.update({f"{key}_range": [min(run[key] for run in runs),
                                       max(run[key] for run in runs)] for key in keys})
            p.update(mode=name, k=k, r=r if mode == "coded" else None, m=m,
                     workers=pool.n_base + pool.n_extra, rate=rate,
                     errors=sum(run["errors"] for run in runs), runs=runs)
            points.append(p)
            print(f"k={k} {name:11s} r={r if mode == 'coded' else '-'} "
                  f"workers={p['workers']:2d} p50={p['median_ms']:6.1f} "
                  f"p99={p['p99_ms']:6.1f} p99.9={p['p999_ms']:7.1f} ms "
                  f"gap={p['tail_gap_ms']:7.1f} acc={p['accuracy']:.4f} "
                  f"degraded={p['degraded_fraction']:.3f} err={p['errors']}", flush=True)
    out = {"host": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "platform": platform.platform(), "shared": True},
           "config": vars(args) | {"base_trees": base_trees,
                                   "base_accuracy": float((base_pred == yte).mean())},
           "models": models, "points": points, "wall_s": time.perf_counter() - t_all}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out} ({out['wall_s']:.0f} s)")
    plot(out, args.out[:-5] + "_p999.png")


def plot(out, path):
    """p50 and p99.9 (median of the runs, with their range) per mode and k."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - plotting is optional
        return
    ks = sorted({p["k"] for p in out["points"]})
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, ks):
        pts = [p for p in out["points"] if p["k"] == k]
        labels = [p["mode"] + (f" r={p['r']}" if p["r"] else "") for p in pts]
        x = np.arange(len(pts))
        hi = [p["p999_ms"] for p in pts]
        lo, up = zip(*(p["p999_ms_range"] for p in pts))
        ax.bar(x, hi, color="C0", alpha=0.7, label="p99.9")
        ax.errorbar(x, hi, yerr=[np.subtract(hi, lo), np.subtract(up, hi)], fmt="none",
                    ecolor="k", capsize=2, lw=0.8)
        ax.bar(x, [p["median_ms"] for p in pts], color="C1", width=0.5, label="p50")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"k = {k}")
        ax.set_yscale("log")
    axes[0].set_ylabel("latency (ms), median of runs")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
