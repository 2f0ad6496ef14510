"""dartboost vs LightGBM, XGBoost and scikit-learn's HistGradientBoosting.

Each (workload, library) configuration runs in its own process so that peak
memory (ru_maxrss) and thread pools are measured in isolation. All libraries
get the same data, 2 threads, 31 leaves, learning rate 0.1, 255 bins; DART:
drop rate 0.1, skip_drop 0.5, max_drop 50. Prints a table with ratios to
LightGBM and writes ``benchmarks/results/gbdt.json``.

Usage::

    python benchmarks/bench_gbdt.py                 # full matrix
    python benchmarks/bench_gbdt.py --quick         # 100k-row workloads only
    python benchmarks/bench_gbdt.py --repeats 3     # median of 3 runs per config
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "gbdt.json")
CACHE = os.path.join(HERE, ".cache")
N_THREADS = 2

# name: (task, n_rows, n_features, n_classes, n_trees)
WORKLOADS = {
    "binary_100k_200": ("binary", 100_000, 50, 2, 200),
    "binary_100k_500": ("binary", 100_000, 50, 2, 500),
    "regression_100k_200": ("regression", 100_000, 50, 1, 200),
    "multiclass5_100k_200": ("multiclass", 100_000, 50, 5, 200),
    "binary_1m_200": ("binary", 1_000_000, 50, 2, 200),
}
LIBS = ["dartboost_mart", "dartboost_dart", "lightgbm_gbdt", "lightgbm_dart", "xgboost_hist",
        "xgboost_dart", "sklearn_hgb"]
# XGBoost DART recomputes every tree each iteration (O(T*n) per iteration):
# 500 trees or 1M rows take many minutes on 2 cores, so those runs are skipped.
SKIP = {("binary_100k_500", "xgboost_dart"), ("binary_1m_200", "xgboost_dart"),
        ("multiclass5_100k_200", "xgboost_dart")}


def make_data(task, n, f, n_classes, seed=0):
    from sklearn.datasets import make_classification, make_regression
    if task == "regression":
        X, y = make_regression(n, f, n_informative=f // 2, noise=30.0, random_state=seed)
    else:
        X, y = make_classification(n, f, n_informative=f // 2, n_classes=n_classes,
                                   n_clusters_per_class=2, random_state=seed)
    split = int(0.8 * n)
    return X[:split], X[split:], y[:split], y[split:]


def build_model(lib, task, n_classes, n_trees, n_threads=N_THREADS):
    """The estimator of ``lib`` with the shared settings, on ``n_threads``
    threads (scikit-learn's HGB takes its count from ``OMP_NUM_THREADS``)."""
    common_dart = dict(drop_rate=0.1, skip_drop=0.5, max_drop=50)
    if lib.startswith("dartboost"):
        from dartboost import DartClassifier, DartRegressor
        cls = DartRegressor if task == "regression" else DartClassifier
        extra = common_dart if lib.endswith("dart") else {}
        return cls(boosting=lib.split("_")[1], n_estimators=n_trees, learning_rate=0.1,
                   max_leaf_nodes=31, max_bins=255, early_stopping=False, n_jobs=n_threads,
                   random_state=0, **extra)
    if lib.startswith("lightgbm"):
        import lightgbm as lgb
        cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
        extra = dict(boosting_type="dart", **common_dart) if lib.endswith("dart") else {}
        return cls(n_estimators=n_trees, learning_rate=0.1, num_leaves=31, max_bin=255,
                   n_jobs=n_threads, verbose=-1, random_state=0, **extra)
    if lib.startswith("xgboost"):
        import xgboost as xgb
        cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
        extra = (dict(booster="dart", rate_drop=0.1, skip_drop=0.5) if lib.endswith("dart")
                 else {})
        return cls(n_estimators=n_trees, learning_rate=0.1, max_leaves=31, grow_policy="lossguide",
                   max_depth=0, max_bin=255, tree_method="hist", n_jobs=n_threads,
                   random_state=0, **extra)
    if lib == "sklearn_hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        cls = HistGradientBoostingRegressor if task == "regression" else \
            HistGradientBoostingClassifier
        return cls(max_iter=n_trees, learning_rate=0.1, max_leaf_nodes=31, max_bins=255,
                   early_stopping=False, random_state=0)
    raise ValueError(lib)


def metric(task, model, X_te, y_te):
    from sklearn.metrics import accuracy_score, roc_auc_score
    if task == "regression":
        pred = model.predict(X_te)
        return "rmse", float(np.sqrt(np.mean((pred - y_te) ** 2))), pred
    proba = model.predict_proba(X_te)
    if task == "binary":
        return "auc", float(roc_auc_score(y_te, proba[:, 1])), proba
    return "accuracy", float(accuracy_score(y_te, proba.argmax(axis=1))), proba


def _data_path(workload):
    return os.path.join(CACHE, f"{workload}.npz")


def cache_data(workload):
    """Generate a workload's data once (in the parent), so that the children's
    peak memory is not the data generator's."""
    path = _data_path(workload)
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        task, n, f, n_classes, _ = WORKLOADS[workload]
        X_tr, X_te, y_tr, y_te = make_data(task, n, f, n_classes)
        np.savez(path, X_tr=X_tr, X_te=X_te, y_tr=y_tr, y_te=y_te)
    return path


def _rss_mb():
    """Current resident set size (Linux /proc), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _PeakSampler:
    """Highest RSS seen while a block runs (sampled every 2 ms), so the memory a
    library adds during ``fit`` is measured the same way for C++ and Python."""

    def __enter__(self):
        import threading
        self.base = _rss_mb()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def run_one(workload, lib):
    """Child process: fit + predict once, print a JSON line."""
    os.environ.setdefault("OMP_NUM_THREADS", str(N_THREADS))
    task, n, f, n_classes, n_trees = WORKLOADS[workload]
    with np.load(_data_path(workload)) as data:
        X_tr, X_te, y_tr, y_te = (data[k] for k in ("X_tr", "X_te", "y_tr", "y_te"))
    model = build_model(lib, task, n_classes, n_trees)
    with _PeakSampler() as mem:
        t0 = time.perf_counter()
        model.fit(X_tr, y_tr)
        fit_s = time.perf_counter() - t0
    X_pred = X_te[:20_000]
    t0 = time.perf_counter()
    (model.predict_proba(X_pred) if task != "regression" else model.predict(X_pred))
    predict_s = time.perf_counter() - t0
    name, value, _ = metric(task, model, X_te, y_te)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"fit_s": fit_s, "predict_20k_s": predict_s, "metric": name,
                      "value": value, "peak_mb": peak_mb, "fit_extra_mb": mem.peak - mem.base}))


def versions():
    out = {"python": platform.python_version(), "machine": platform.machine(),
           "cpus": os.cpu_count()}
    for mod in ("dartboost", "lightgbm", "xgboost", "sklearn", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--one", nargs=2, metavar=("WORKLOAD", "LIB"), help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="100k-row workloads only")
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration (median)")
    ap.add_argument("--workloads", nargs="*", default=None, help="subset of workloads")
    ap.add_argument("--libs", nargs="*", default=None, help="subset of libraries")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args()
    if args.one:
        run_one(*args.one)
        return
    workloads = args.workloads or [w for w in WORKLOADS if not (args.quick and "1m" in w)]
    libs = args.libs or LIBS
    results = {"settings": {"threads": N_THREADS, "leaves": 31, "learning_rate": 0.1,
                            "max_bins": 255, "dart": "drop_rate 0.1, skip_drop 0.5, max_drop 50",
                            "repeats": args.repeats, "test_split": 0.2,
                            "predict_rows": 20_000},
               "versions": versions(), "runs": {}}
    if os.path.exists(args.out):
        with open(args.out) as fh:
            previous = json.load(fh)
        results["runs"] = previous.get("runs", {})
    for w in workloads:
        cache_data(w)
        for lib in libs:
            if (w, lib) in SKIP:
                continue
            runs = []
            for _ in range(args.repeats):
                proc = subprocess.run([sys.executable, __file__, "--one", w, lib],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{w} {lib} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    break
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            if not runs:
                continue
            med = {k: statistics.median(r[k] for r in runs)
                   for k in ("fit_s", "predict_20k_s", "value", "peak_mb", "fit_extra_mb")}
            med["metric"] = runs[0]["metric"]
            med["n_runs"] = len(runs)
            results["runs"].setdefault(w, {})[lib] = med
            print(f"{w:<22} {lib:<16} fit {med['fit_s']:8.2f}s  predict {med['predict_20k_s']:.3f}s"
                  f"  {med['metric']} {med['value']:.4f}  peak {med['peak_mb']:.0f} MB "
                  f"(+{med['fit_extra_mb']:.0f} over the data)", flush=True)
            with open(args.out, "w") as fh:
                json.dump(results, fh, indent=1)
    print_table(results)


def ratios_to_lightgbm(libs, lib):
    """``(fit, predict)`` time ratios of ``lib`` to LightGBM dart (for DART
    models) or gbdt (for the others) in the same workload, as strings."""
    r = libs[lib]
    ref = libs.get("lightgbm_dart" if lib.endswith("dart") else "lightgbm_gbdt")
    if not ref:
        return "-", "-"
    return (f"{r['fit_s'] / ref['fit_s']:.2f}", f"{r['predict_20k_s'] / ref['predict_20k_s']:.2f}")


def print_table(results):
    print(f"\n{'workload':<22} {'library':<16} {'fit s':>8} {'x LGBM':>7} {'pred s':>7} "
          f"{'x LGBM':>7} {'metric':>9} {'peak MB':>8} {'+fit MB':>8}")
    for w, libs in results["runs"].items():
        for lib, r in libs.items():
            fr, pr = ratios_to_lightgbm(libs, lib)
            print(f"{w:<22} {lib:<16} {r['fit_s']:8.2f} {fr:>7} {r['predict_20k_s']:7.3f} "
                  f"{pr:>7} {r['value']:9.4f} {r['peak_mb']:8.0f} "
                  f"{r.get('fit_extra_mb', float('nan')):8.0f}")


if __name__ == "__main__":
    main()
