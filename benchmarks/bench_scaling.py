"""Fit time against the thread count: dartboost vs LightGBM, XGBoost and
scikit-learn's HistGradientBoosting.

Every (shape, trees, library, threads) configuration runs in a fresh process
pinned with ``taskset`` to the first ``threads`` CPUs, with ``n_jobs`` (and
``OMP_NUM_THREADS``) = threads. Settings are those of ``bench_gbdt.py``: 31
leaves, learning rate 0.1, 255 bins; DART drop rate 0.1, skip_drop 0.5,
max_drop 50; 80/20 split of make_classification / make_regression data.
A configuration is the median of ``--repeats`` runs when its first fit takes
under 30 s, else one run. Results are merged into a JSON file (default
``benchmarks/results/scaling.json``); ``--table`` prints them and ``--plot``
draws the speed-up curves (PNG).

Usage::

    python benchmarks/bench_scaling.py --threads 1,2,4,8,16 --shapes binary_1m_50 --trees 100
    python benchmarks/bench_scaling.py --threads 2 --repeats 3 --libs dartboost_mart,lightgbm_gbdt
    python benchmarks/bench_scaling.py --budget 400      # stop launching runs after 400 s
    python benchmarks/bench_scaling.py --table --plot docs/scaling.png
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_gbdt import _PeakSampler, build_model, metric, versions  # noqa: E402

RESULTS = os.path.join(HERE, "results", "scaling.json")
CACHE = os.path.join(HERE, ".cache")

# name: (task, n_rows, n_features, n_classes)
SHAPES = {
    "binary_500k_50": ("binary", 500_000, 50, 2),
    "binary_1m_50": ("binary", 1_000_000, 50, 2),
    "wide_200k_500": ("binary", 200_000, 500, 2),
    "tall_5m_10": ("binary", 5_000_000, 10, 2),
    "multiclass5_1m_50": ("multiclass", 1_000_000, 50, 5),
    "regression_1m_50": ("regression", 1_000_000, 50, 1),
}
LIBS = ["dartboost_mart", "lightgbm_gbdt", "dartboost_dart", "lightgbm_dart", "xgboost_hist",
        "sklearn_hgb"]
#: one run only above this fit time (seconds)
SINGLE_RUN_ABOVE_S = 30.0


def make_data(task, n, f, n_classes, seed=0):
    from sklearn.datasets import make_classification, make_regression
    if task == "regression":
        X, y = make_regression(n, f, n_informative=f // 2, noise=30.0, random_state=seed)
    else:
        X, y = make_classification(n, f, n_informative=min(f // 2, 25), n_classes=n_classes,
                                   n_clusters_per_class=2, random_state=seed)
    split = int(0.8 * n)
    return X[:split], X[split:], y[:split], y[split:]


def _shape(shape, rows):
    task, n, f, n_classes = SHAPES[shape]
    return task, rows or n, f, n_classes


def data_path(shape, rows=None):
    return os.path.join(CACHE, f"scaling_{shape}_{_shape(shape, rows)[1]}.npz")


def cache_data(shape, rows=None):
    """Generate a shape's data once, in the parent."""
    path = data_path(shape, rows)
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        X_tr, X_te, y_tr, y_te = make_data(*_shape(shape, rows))
        np.savez(path, X_tr=X_tr, X_te=X_te, y_tr=y_tr, y_te=y_te)
    return path


def run_one(shape, lib, n_trees, n_threads, rows=None):
    """Child process: one fit (and a test metric), printed as a JSON line."""
    task, _, _, n_classes = SHAPES[shape]
    with np.load(data_path(shape, rows)) as data:
        X_tr, X_te, y_tr, y_te = (data[k] for k in ("X_tr", "X_te", "y_tr", "y_te"))
    model = build_model(lib, task, n_classes, n_trees, n_threads=n_threads)
    with _PeakSampler() as mem:
        t0 = time.perf_counter()
        model.fit(X_tr, y_tr)
        fit_s = time.perf_counter() - t0
    name, value, _ = metric(task, model, X_te, y_te)
    print(json.dumps({"fit_s": fit_s, "metric": name, "value": value,
                      "fit_extra_mb": mem.peak - mem.base}))


def _taskset_works():
    if not shutil.which("taskset"):
        return False
    return subprocess.run(["taskset", "-c", "0", "true"], capture_output=True).returncode == 0


def _child(shape, lib, n_trees, n_threads, rows, timeout):
    env = dict(os.environ, OMP_NUM_THREADS=str(n_threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--one", shape, lib, str(n_trees),
           str(n_threads), str(rows or 0)]
    pinned = _taskset_works() and n_threads <= (os.cpu_count() or 1)
    if pinned:
        cmd = ["taskset", "-c", f"0-{n_threads - 1}"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]), pinned=pinned)


def key(shape, n_trees, rows=None):
    return f"{shape}_{n_trees}" + (f"_rows{rows}" if rows else "")


def sweep(args, results, save):
    start = time.monotonic()
    for shape in args.shapes:
        cache_data(shape, args.rows)
        for n_trees in args.trees:
            for n_threads in args.threads:
                for lib in args.libs:
                    left = args.budget - (time.monotonic() - start) if args.budget else None
                    if left is not None and left <= 0:
                        print("time budget spent; stopping", flush=True)
                        return
                    runs = []
                    try:
                        for _ in range(args.repeats):
                            runs.append(_child(shape, lib, n_trees, n_threads, args.rows,
                                               args.timeout))
                            if runs[0]["fit_s"] >= SINGLE_RUN_ABOVE_S:
                                break
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        print(f"{shape} {n_trees} {lib} {n_threads}: {exc}", file=sys.stderr)
                        if not runs:
                            continue
                    med = {"fit_s": statistics.median(r["fit_s"] for r in runs),
                           "value": statistics.median(r["value"] for r in runs),
                           "fit_extra_mb": statistics.median(r["fit_extra_mb"] for r in runs),
                           "metric": runs[0]["metric"], "n_runs": len(runs),
                           "pinned": runs[0]["pinned"],
                           "all_fit_s": [r["fit_s"] for r in runs]}
                    (results["runs"].setdefault(key(shape, n_trees, args.rows), {})
                     .setdefault(lib, {})[str(n_threads)]) = med
                    print(f"{key(shape, n_trees, args.rows):<24} {lib:<15} {n_threads:>3} threads"
                          "  fit "
                          f"{med['fit_s']:8.2f}s ({len(runs)} run)  {med['metric']} "
                          f"{med['value']:.5f}", flush=True)
                    save(results)


def print_table(results):
    """Markdown tables: fit seconds per thread count, ratios to LightGBM."""
    for workload, libs in results["runs"].items():
        threads = sorted({int(t) for runs in libs.values() for t in runs})
        print(f"\n{workload} (fit seconds; ratio to LightGBM gbdt / dart in brackets)\n")
        print("| library | " + " | ".join(f"{t} thr" for t in threads) + " | 1→max speed-up |")
        print("|---|" + "---|" * (len(threads) + 1))
        for lib, runs in libs.items():
            ref = libs.get("lightgbm_dart" if lib.endswith("dart") else "lightgbm_gbdt", {})
            cells = []
            for t in threads:
                r = runs.get(str(t))
                if r is None:
                    cells.append("-")
                    continue
                cell = f"{r['fit_s']:.2f}"
                if lib not in ("lightgbm_gbdt", "lightgbm_dart") and str(t) in ref:
                    cell += f" ({r['fit_s'] / ref[str(t)]['fit_s']:.2f})"
                cells.append(cell)
            lo, hi = str(threads[0]), str(threads[-1])
            speedup = (f"{runs[lo]['fit_s'] / runs[hi]['fit_s']:.1f}×"
                       if lo in runs and hi in runs and lo != hi else "-")
            print(f"| {lib} | " + " | ".join(cells) + f" | {speedup} |")
        metrics = {lib: next(iter(runs.values())) for lib, runs in libs.items()}
        print("\ntest metric: " + ", ".join(f"{lib} {m['metric']} {m['value']:.5f}"
                                            for lib, m in metrics.items()))


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # a curve needs two thread counts
    workloads = [w for w, libs in results["runs"].items()
                 if any(len(runs) > 1 for runs in libs.values())]
    if not workloads:
        raise SystemExit("no results to plot")
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 4.2),
                             squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        for lib, runs in results["runs"][workload].items():
            threads = sorted(int(t) for t in runs)
            style = "-" if lib.startswith("dartboost") else "--"
            ax.plot(threads, [runs[str(t)]["fit_s"] for t in threads], style, marker="o",
                    label=lib)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("threads (taskset-pinned)")
        ax.set_ylabel("fit seconds")
        ax.set_title(workload)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def _csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=_csv(int), default=[1, 2, 4, 8, 16])
    ap.add_argument("--shapes", type=_csv(str), default=["binary_1m_50"],
                    help="comma list of " + ", ".join(SHAPES))
    ap.add_argument("--trees", type=_csv(int), default=[100], help="comma list, e.g. 100,500")
    ap.add_argument("--libs", type=_csv(str), default=LIBS)
    ap.add_argument("--rows", type=int, default=None,
                    help="override the shapes' row counts (a smaller sweep; keyed apart)")
    ap.add_argument("--repeats", type=int, default=3,
                    help=f"runs per configuration (one if a fit takes >= {SINGLE_RUN_ABOVE_S} s)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds after which no new run starts (runs under way finish)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds one run may take")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--table", action="store_true", help="print the tables of --out and exit")
    ap.add_argument("--plot", default=None, help="write the scaling plot of --out (PNG)")
    args = ap.parse_args()
    if args.one:
        shape, lib, n_trees, n_threads, rows = args.one
        run_one(shape, lib, int(n_trees), int(n_threads), int(rows) or None)
        return
    results = {"settings": {"leaves": 31, "learning_rate": 0.1, "max_bins": 255,
                            "dart": "drop_rate 0.1, skip_drop 0.5, max_drop 50",
                            "test_split": 0.2, "pinning": "taskset -c 0-(threads-1)"},
               "versions": versions(), "runs": {}}
    if os.path.exists(args.out):
        with open(args.out) as fh:
            results["runs"] = json.load(fh).get("runs", {})

    def save(res):
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)

    if not args.table:
        unknown = [s for s in args.shapes if s not in SHAPES]
        if unknown:
            ap.error(f"unknown shapes {unknown}; expected some of {list(SHAPES)}")
        sweep(args, results, save)
    print_table(results)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
