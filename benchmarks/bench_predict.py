"""Prediction time against the thread count, and peak fit memory:
dartboost vs LightGBM, XGBoost and scikit-learn's HistGradientBoosting.

For each (shape, trees, library) a model is fitted once, in a fresh process
pinned with ``taskset`` to ``--fit-threads`` CPUs, with the settings of
``bench_gbdt.py`` (31 leaves, learning rate 0.1, 255 bins; MART/gbdt/hist);
that process records the fit's peak memory (RSS sampled every 2 ms, minus
the RSS before ``fit``) and pickles the model. Then every (model, threads)
configuration predicts in a fresh process pinned to the first ``threads``
CPUs, ``n_jobs`` / ``OMP_NUM_THREADS`` = threads: ``--predict-rows`` rows
(the shape's test split repeated), one warm-up call, then the median of
``--repeats`` calls of each method (``--rounds`` repeats every prediction
process, the libraries side by side in time, and pools the times):

* ``proba``: ``predict_proba`` (``predict`` for regression);
* ``raw``: raw scores (``predict(raw_score=True)``, XGBoost's margin,
  HGB's ``decision_function`` / ``predict``);
* XGBoost both through ``inplace_predict`` and a ``DMatrix`` (its
  construction timed too); the faster counts;
* dartboost also ``Booster.predict_raw`` (no estimator validation).

Shapes and data come from ``bench_scaling.py`` (80/20 split; ``--rows``
shrinks a shape). Results are merged into ``benchmarks/results/predict.json``;
the tables give seconds and the ratio to XGBoost's and LightGBM's time.

Usage::

    python benchmarks/bench_predict.py --threads 1,2 --shapes binary_1m_50 --trees 100 --rounds 3
    python benchmarks/bench_predict.py --threads 1,2,4,8,16 --budget 480   # 16-core machine
    python benchmarks/bench_predict.py --table --stat min
"""
import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_gbdt import _PeakSampler, build_model, versions  # noqa: E402
from bench_scaling import (CACHE, SHAPES, _csv, _taskset_works, cache_data,  # noqa: E402
                           data_path)

RESULTS = os.path.join(HERE, "results", "predict.json")
LIBS = ["dartboost_mart", "lightgbm_gbdt", "xgboost_hist", "sklearn_hgb"]
DEFAULT_SHAPES = ["binary_1m_50", "regression_1m_50", "multiclass5_1m_50"]


def _model_path(shape, lib, n_trees, rows):
    return os.path.join(CACHE, f"predict_{shape}_{rows or 0}_{lib}_{n_trees}.pkl")


def _load(shape, rows, what):
    with np.load(data_path(shape, rows)) as data:
        return tuple(data[k] for k in what)


def fit_one(shape, lib, n_trees, n_threads, rows):
    """Child: fit, measure peak memory, pickle the model; print a JSON line."""
    task, _, _, n_classes = SHAPES[shape]
    X_tr, y_tr = _load(shape, rows, ("X_tr", "y_tr"))
    model = build_model(lib, task, n_classes, n_trees, n_threads=n_threads)
    with _PeakSampler() as mem:
        t0 = time.perf_counter()
        model.fit(X_tr, y_tr)
        fit_s = time.perf_counter() - t0
    with open(_model_path(shape, lib, n_trees, rows), "wb") as fh:
        pickle.dump(model, fh)
    print(json.dumps({"fit_s": fit_s, "fit_extra_mb": mem.peak - mem.base,
                      "fit_peak_mb": mem.peak, "data_mb": X_tr.nbytes / 2 ** 20}))


def _methods(lib, model, task, n_threads):
    """``{name: callable(X)}`` of the prediction paths of ``lib``."""
    classify = task != "regression"
    main = model.predict_proba if classify else model.predict
    if lib.startswith("dartboost"):
        model.set_params(n_jobs=n_threads)
        booster = model.booster_
        return {"proba": main,
                "raw": (lambda X: model.predict(X, raw_score=True)) if classify else model.predict,
                "booster_raw": lambda X: booster.predict_raw(X, n_threads=n_threads)}
    if lib.startswith("lightgbm"):
        model.set_params(n_jobs=n_threads)
        return {"proba": main, "raw": lambda X: model.predict(X, raw_score=True)}
    if lib.startswith("xgboost"):
        import xgboost as xgb
        model.set_params(n_jobs=n_threads)
        booster = model.get_booster()
        booster.set_param({"nthread": n_threads})
        out = {"proba": main,
               "raw_inplace": lambda X: booster.inplace_predict(X, predict_type="margin"),
               "raw_dmatrix": lambda X: booster.predict(xgb.DMatrix(X, nthread=n_threads),
                                                        output_margin=True)}
        if classify:
            out["proba_dmatrix"] = lambda X: booster.predict(xgb.DMatrix(X, nthread=n_threads))
        return out
    if lib == "sklearn_hgb":
        return {"proba": main, "raw": model.decision_function if classify else model.predict}
    raise ValueError(lib)


def predict_one(shape, lib, n_trees, n_threads, rows, n_predict, repeats):
    """Child: time every prediction method of a fitted model; print JSON."""
    task = SHAPES[shape][0]
    (X_te,) = _load(shape, rows, ("X_te",))
    reps = -(-n_predict // X_te.shape[0])
    X = np.ascontiguousarray(np.tile(X_te, (reps, 1))[:n_predict])
    with open(_model_path(shape, lib, n_trees, rows), "rb") as fh:
        model = pickle.load(fh)
    times, cpu = {}, {}
    for name, fn in _methods(lib, model, task, n_threads).items():
        fn(X)  # warm-up: lazy layouts, thread pools, page faults of the output
        runs, cpu_runs = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(X)
            runs.append(time.perf_counter() - t0)
            cpu_runs.append(time.process_time() - c0)
        times[name], cpu[name] = runs, cpu_runs
    print(json.dumps({"times": times, "cpu": cpu, "rows": int(X.shape[0])}))


def _child(args, n_threads, timeout):
    env = dict(os.environ, OMP_NUM_THREADS=str(n_threads))
    cmd = [sys.executable, os.path.abspath(__file__)] + [str(a) for a in args]
    pinned = _taskset_works() and n_threads <= (os.cpu_count() or 1)
    if pinned:
        cmd = ["taskset", "-c", f"0-{n_threads - 1}"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]), pinned=pinned)


def _summary(times, cpu):
    """Median and best wall time of every method, and its median CPU time
    (all threads; on one thread it is the wall time without the time other
    processes took the CPU); ``best_proba`` / ``best_raw``: the fastest path
    of each kind (XGBoost: inplace or DMatrix)."""
    out = {name: {"median_s": statistics.median(r), "min_s": min(r), "all_s": r,
                  "cpu_median_s": statistics.median(cpu[name]), "cpu_min_s": min(cpu[name])}
           for name, r in times.items()}
    for kind in ("proba", "raw"):
        names = [n for n in out if n == kind or n.startswith(kind + "_")]
        if names:
            fastest = min(names, key=lambda n: out[n]["median_s"])
            out[f"best_{kind}"] = dict(out[fastest], path=fastest)
    return out


def key(shape, n_trees, rows):
    return f"{shape}_{n_trees}" + (f"_rows{rows}" if rows else "")


def _fit_models(args, shape, n_trees, results, save, budget_left):
    """Fit (or reuse) every library's model of a workload."""
    fit_threads = args.fit_threads or max(args.threads)
    fits = results["fits"].setdefault(key(shape, n_trees, args.rows), {})
    ready = []
    for lib in args.libs:
        if (os.path.exists(_model_path(shape, lib, n_trees, args.rows)) and lib in fits
                and not args.refit):
            ready.append(lib)
            continue
        if not budget_left():
            break
        try:
            fits[lib] = dict(_child(["--fit", shape, lib, n_trees, fit_threads,
                                     args.rows or 0], fit_threads, args.timeout),
                             threads=fit_threads)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"{shape} {n_trees} {lib} fit: {exc}", file=sys.stderr)
            continue
        ready.append(lib)
        f = fits[lib]
        print(f"{key(shape, n_trees, args.rows):<28} {lib:<15} fit {f['fit_s']:7.2f}s on "
              f"{fit_threads} threads, peak +{f['fit_extra_mb']:.0f} MiB over the data "
              f"({f['data_mb']:.0f} MiB)", flush=True)
        save(results)
    return ready


def sweep(args, results, save):
    """Fit, then ``--rounds`` rounds of every (threads, library) prediction
    process, so the libraries are sampled side by side in time; each
    configuration's times are pooled over the rounds."""
    start = time.monotonic()

    def budget_left():
        return args.budget is None or time.monotonic() - start < args.budget

    for shape in args.shapes:
        cache_data(shape, args.rows)
        for n_trees in args.trees:
            wkey = key(shape, n_trees, args.rows)
            libs = _fit_models(args, shape, n_trees, results, save, budget_left)
            pooled = {}
            for _ in range(args.rounds):
                for n_threads in args.threads:
                    for lib in libs:
                        if not budget_left():
                            print("time budget spent; stopping", flush=True)
                            return
                        try:
                            run = _child(["--predict", shape, lib, n_trees, n_threads,
                                          args.rows or 0, args.predict_rows, args.repeats],
                                         n_threads, args.timeout)
                        except (RuntimeError, subprocess.TimeoutExpired) as exc:
                            print(f"{wkey} {lib} {n_threads} threads: {exc}", file=sys.stderr)
                            continue
                        times, cpu = pooled.setdefault((lib, n_threads), ({}, {}))
                        for name, runs in run["times"].items():
                            times.setdefault(name, []).extend(runs)
                            cpu.setdefault(name, []).extend(run["cpu"][name])
                        summary = dict(_summary(times, cpu), rows=run["rows"],
                                       pinned=run["pinned"])
                        (results["runs"].setdefault(wkey, {}).setdefault(lib, {})
                         [str(n_threads)]) = summary
                        cells = "  ".join(f"{n} {min(r):.3f}s" for n, r in run["times"].items())
                        print(f"{wkey:<28} {lib:<15} {n_threads:>2} thr  best of "
                              f"{args.repeats}: {cells}", flush=True)
                        save(results)


def _cell(runs, ref_runs, t, kind, stat):
    r = runs.get(str(t), {}).get(f"best_{kind}")
    if r is None:
        return "-"
    cell = f"{r[stat]:.3f}"
    ratios = []
    for ref in ref_runs:
        other = ref.get(str(t), {}).get(f"best_{kind}")
        ratios.append(f"{r[stat] / other[stat]:.2f}" if other else "-")
    return cell + (f" ({' / '.join(ratios)})" if ref_runs else "")


def print_table(results, stat="median_s"):
    """Markdown: predict seconds per thread count (ratio to XGBoost / LightGBM),
    then the fits' peak memory."""
    for workload, libs in results["runs"].items():
        threads = sorted({int(t) for runs in libs.values() for t in runs})
        rows = next(iter(next(iter(libs.values())).values()))["rows"]
        for kind in ("proba", "raw"):
            what = {"median_s": "median", "min_s": "best", "cpu_median_s": "median CPU",
                    "cpu_min_s": "best CPU"}[stat]
            print(f"\n{workload}: {kind} of {rows:,} rows ({what} seconds; ratio to "
                  "XGBoost / LightGBM)\n")
            print("| library | " + " | ".join(f"{t} thr" for t in threads) + " |")
            print("|---|" + "---|" * len(threads))
            refs = [libs.get(n, {}) for n in ("xgboost_hist", "lightgbm_gbdt")]
            for lib, runs in libs.items():
                own = [ref for ref, name in zip(refs, ("xgboost_hist", "lightgbm_gbdt"))
                       if name != lib]
                mine = refs if not lib.startswith(("xgboost", "lightgbm")) else own
                print(f"| {lib} | " + " | ".join(_cell(runs, mine, t, kind, stat)
                                                 for t in threads) + " |")
    if results.get("fits"):
        print("\npeak fit memory (MiB over the training data, RSS sampled every 2 ms)\n")
        print("| workload | " + " | ".join(LIBS) + " |")
        print("|---|" + "---|" * len(LIBS))
        for workload, fits in results["fits"].items():
            cells = [f"{fits[lib]['fit_extra_mb']:.0f} ({fits[lib]['fit_s']:.1f} s)"
                     if lib in fits else "-" for lib in LIBS]
            print(f"| {workload} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--fit", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--predict", nargs=7, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=_csv(int), default=[1, 2, 4, 8, 16])
    ap.add_argument("--fit-threads", type=int, default=None,
                    help="threads of the fits (default: the largest of --threads)")
    ap.add_argument("--shapes", type=_csv(str), default=DEFAULT_SHAPES,
                    help="comma list of " + ", ".join(SHAPES))
    ap.add_argument("--trees", type=_csv(int), default=[100, 500])
    ap.add_argument("--libs", type=_csv(str), default=LIBS)
    ap.add_argument("--rows", type=int, default=None,
                    help="override the shapes' row counts (80%% train; keyed apart)")
    ap.add_argument("--predict-rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per method and process")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of all prediction processes (times pooled; sampled side by "
                         "side in time on a shared machine)")
    ap.add_argument("--stat", choices=("median", "min", "cpu_median", "cpu_min"),
                    default="median", help="statistic of the tables (cpu_*: CPU seconds)")
    ap.add_argument("--refit", action="store_true", help="fit again even if a model is cached")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds after which no new run starts (runs under way finish)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds one run may take")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--table", action="store_true", help="print the tables of --out and exit")
    args = ap.parse_args()
    if args.fit:
        shape, lib, n_trees, n_threads, rows = args.fit
        fit_one(shape, lib, int(n_trees), int(n_threads), int(rows) or None)
        return
    if args.predict:
        shape, lib, n_trees, n_threads, rows, n_predict, repeats = args.predict
        predict_one(shape, lib, int(n_trees), int(n_threads), int(rows) or None,
                    int(n_predict), int(repeats))
        return
    results = {"settings": {"leaves": 31, "learning_rate": 0.1, "max_bins": 255,
                            "boosting": "MART (gbdt / hist)", "test_split": 0.2,
                            "predict": "test split repeated to --predict-rows rows",
                            "pinning": "taskset -c 0-(threads-1)"},
               "versions": versions(), "runs": {}, "fits": {}}
    if os.path.exists(args.out):
        with open(args.out) as fh:
            old = json.load(fh)
        results["runs"], results["fits"] = old.get("runs", {}), old.get("fits", {})

    def save(res):
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)

    if not args.table:
        unknown = [s for s in args.shapes if s not in SHAPES]
        if unknown:
            ap.error(f"unknown shapes {unknown}; expected some of {list(SHAPES)}")
        if args.repeats < 1 or args.rounds < 1:
            ap.error("--repeats and --rounds must be >= 1")
        sweep(args, results, save)
    print_table(results, f"{args.stat}_s")


if __name__ == "__main__":
    main()
