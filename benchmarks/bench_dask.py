"""dartboost.dask vs lightgbm.dask on one LocalCluster (2 worker processes).

Both libraries train a binary classifier on the same dask arrays, on the same
``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, with the
same leaves, bins, learning rate and number of trees (MART: LightGBM has no
distributed DART). Reported per library:

* fit wall time (median of ``--repeats`` fits; each fit is one run when a
  fit takes longer than ``--single-run-above`` seconds, as said in the JSON);
* peak RSS of each worker process during the fit, minus its RSS before the
  fit (a sampling thread on each worker, started through ``client.run``,
  reads psutil's RSS every 20 ms);
* for dartboost: task round trips and the bytes of results the workers sent
  to the client per fit (histograms, sums, counts; counted on the client from
  the returned arrays), next to the paper estimate
  ``(L - 1) * P * n_features * n_bins * 20 bytes`` per tree;
* recovery: wall time of a DART fit with a :class:`CheckpointCallback`
  where one worker process is killed mid-fit (``os._exit`` at the end of an
  iteration), against the same fit without a kill. (A kill fit runs on its
  own fresh 2-worker cluster; it ends on the one remaining worker.)

The machine this ran on is shared (2 cores, other jobs running): absolute
times are noisy, ratios measured side by side in one run are what to read.

``--categorical``: instead, both libraries fit a ``dask.dataframe`` with
pandas ``category`` columns (10, 100 and 1,000 levels, known categories)
next to 8 numeric ones, each with its native categorical handling; reported:
fit time, worker memory and the log loss of both models on held-out rows
(writes ``dask_categorical.json``).

Run: ``python benchmarks/bench_dask.py`` (about 3-4 minutes here);
``--quick`` for a smoke run. Writes ``benchmarks/results/dask.json``.
"""
import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HIST_ENTRY_BYTES = 20  # HISTOGRAM_DTYPE: sum_gradients f8, sum_hessians f8, count u4


# ----------------------------------------------------------------- memory
# (the state lives on the worker object: functions of __main__ travel by
# value, so a module-level dict here would be a fresh copy on every call)
def _start_sampler(dask_worker):
    """On a worker: sample this process's RSS until stopped; keep the peak."""
    import psutil
    proc = psutil.Process()
    state = {"base": proc.memory_info().rss, "peak": 0, "stop": threading.Event()}
    state["peak"] = state["base"]

    def loop():
        while not state["stop"].wait(0.02):
            state["peak"] = max(state["peak"], proc.memory_info().rss)

    state["thread"] = threading.Thread(target=loop, daemon=True)
    state["thread"].start()
    dask_worker.bench_rss_sampler = state
    return state["base"]


def _stop_sampler(dask_worker):
    state = dask_worker.bench_rss_sampler
    state["stop"].set()
    state["thread"].join()
    return {"base_mib": state["base"] / 2**20,
            "peak_increase_mib": (state["peak"] - state["base"]) / 2**20}


def measure(client, fit):
    """``(seconds, {worker: memory})`` of ``fit()``."""
    client.run(_start_sampler)
    t0 = time.perf_counter()
    try:
        fit()
    finally:
        seconds = time.perf_counter() - t0
        mem = client.run(_stop_sampler)
    return seconds, mem


# ------------------------------------------------------ round-trip counter
class RoundCounter:
    """Counts dartboost.dask's task rounds and the bytes of their results."""

    def __init__(self):
        from dartboost.dask import _distributed
        self.module = _distributed
        self.original = _distributed.Rounds.run
        self.rounds = 0
        self.bytes = 0
        self.seconds = 0.0

    def __enter__(self):
        counter, original = self, self.original

        def run(rounds, fn, *args, **kwargs):
            t0 = time.perf_counter()
            out = original(rounds, fn, *args, **kwargs)
            counter.seconds += time.perf_counter() - t0
            counter.rounds += 1
            counter.bytes += _nbytes(out)
            return out

        self.module.Rounds.run = run
        return self

    def __exit__(self, *exc):
        self.module.Rounds.run = self.original


def _nbytes(obj):
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, (int, float, np.number)):
        return 8
    return 0


# ------------------------------------------------------------------- fits
def make_data(n_rows, n_features, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    logit = X[:, 0] - 0.5 * X[:, 1] + np.sin(2 * X[:, 2]) + 0.3 * X[:, 3] * X[:, 4]
    y = (logit + rng.logistic(size=n_rows) > 0).astype(np.int64)
    return X, y


def ours_params(args, boosting="mart"):
    return dict(boosting=boosting, n_estimators=args.trees, learning_rate=0.1,
                max_leaf_nodes=args.leaves, max_bins=255, min_samples_leaf=20,
                early_stopping=False, random_state=0, n_jobs=1)


def lgbm_params(args):
    return dict(n_estimators=args.trees, learning_rate=0.1, num_leaves=args.leaves,
                max_bin=255, min_child_samples=20, n_jobs=1, verbose=-1,
                tree_learner="data")


def timed_runs(client, fit, repeats, single_above):
    """Fit ``repeats`` times (once if the first fit is slower than
    ``single_above`` seconds); median time and the memory of the median."""
    runs = []
    for _ in range(repeats):
        runs.append(measure(client, fit))
        if runs[0][0] > single_above:
            break
    order = sorted(range(len(runs)), key=lambda i: runs[i][0])
    median = runs[order[len(runs) // 2]]
    return {"fit_seconds_median": median[0], "fit_seconds_all": [r[0] for r in runs],
            "n_runs": len(runs), "worker_memory": median[1]}


def paper_bytes_per_tree(leaves, partitions, n_features, n_bins=256):
    return (leaves - 1) * partitions * n_features * n_bins * HIST_ENTRY_BYTES


def bench_vs_lightgbm(args, X, y):
    import dask.array as da
    from distributed import Client, LocalCluster
    from lightgbm.dask import DaskLGBMClassifier

    from dartboost.dask import DaskDartClassifier
    out = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        chunk = -(-X.shape[0] // args.partitions)
        dX = da.from_array(X, chunks=(chunk, X.shape[1])).persist()
        dy = da.from_array(y, chunks=chunk).persist()
        client.wait_for_workers(2)
        from distributed import wait
        wait([dX, dy])
        partitions = len(dX.chunks[0])

        with RoundCounter() as counter:
            model = DaskDartClassifier(**ours_params(args))
            res = timed_runs(client, lambda: model.fit(dX, dy), args.repeats,
                             args.single_run_above)
        fits = res["n_runs"]
        res["rounds_per_fit"] = counter.rounds / fits
        res["round_seconds_per_fit"] = counter.seconds / fits
        res["result_bytes_per_fit"] = counter.bytes / fits
        res["result_bytes_per_tree"] = counter.bytes / fits / args.trees
        res["paper_bytes_per_tree"] = paper_bytes_per_tree(args.leaves, partitions,
                                                           X.shape[1])
        res["leaves_grown_mean"] = float(np.mean(
            [int(np.sum(t["is_leaf"])) for t in model.booster_.trees]))
        res["paper_bytes_per_tree_at_leaves_grown"] = paper_bytes_per_tree(
            res["leaves_grown_mean"], partitions, X.shape[1])
        out["dartboost"] = res

        lgbm = DaskLGBMClassifier(client=client, **lgbm_params(args))
        out["lightgbm"] = timed_runs(client, lambda: lgbm.fit(dX, dy), args.repeats,
                                     args.single_run_above)
        out["partitions"] = partitions
    return out


CATEGORY_LEVELS = (10, 100, 1000)


def make_categorical_data(n_rows, seed=0):
    """8 numeric features and one ``category`` column per entry of
    :data:`CATEGORY_LEVELS` (levels drawn with Zipf-like frequencies, each
    with its own effect on the logit)."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    num = rng.normal(size=(n_rows, 8)).astype(np.float32)
    df = pd.DataFrame(num, columns=[f"x{i}" for i in range(8)])
    logit = num[:, 0] - 0.5 * num[:, 1] + np.sin(2 * num[:, 2])
    for j, k in enumerate(CATEGORY_LEVELS):
        p = 1.0 / np.arange(1, k + 1)
        codes = rng.choice(k, n_rows, p=p / p.sum())
        logit = logit + rng.normal(size=k)[codes]
        df[f"c{j}"] = pd.Categorical.from_codes(codes, categories=[f"v{i}" for i in range(k)])
    y = (logit + rng.logistic(size=n_rows) > 0).astype(np.int64)
    return df, y


def _logloss(y, p):
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def bench_categorical(args):
    """Both libraries on the same persisted dataframe with category columns."""
    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client, LocalCluster, wait
    from lightgbm.dask import DaskLGBMClassifier

    from dartboost.dask import DaskDartClassifier
    df, y = make_categorical_data(args.rows + 100_000)
    test, y_test = df.iloc[args.rows:], y[args.rows:]
    df, y = df.iloc[:args.rows], y[:args.rows]
    out = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        dX = dd.from_pandas(df, npartitions=args.partitions).persist()
        dy = dd.from_pandas(pd.Series(y, name="y"), npartitions=args.partitions).persist()
        client.wait_for_workers(2)
        wait([dX, dy])
        ours = DaskDartClassifier(**ours_params(args))
        out["dartboost"] = timed_runs(client, lambda: ours.fit(dX, dy), args.repeats,
                                      args.single_run_above)
        out["dartboost"]["test_logloss"] = _logloss(y_test, ours.predict_proba(test)[:, 1])
        out["dartboost"]["categorical_splits"] = int(
            ours.booster_.categorical_split_mask().sum())
        lgbm = DaskLGBMClassifier(client=client, **lgbm_params(args))
        out["lightgbm"] = timed_runs(client, lambda: lgbm.fit(dX, dy), args.repeats,
                                     args.single_run_above)
        out["lightgbm"]["test_logloss"] = _logloss(
            y_test, lgbm.to_local().predict_proba(test)[:, 1])
        out["partitions"] = args.partitions
    out["category_levels"] = list(CATEGORY_LEVELS)
    return out


def main_categorical(args):
    t0 = time.perf_counter()
    res = bench_categorical(args)
    result = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "note": "shared machine (2 cores, other jobs running); 2 worker "
                            "processes x 1 thread each"},
        "setup": {"rows": args.rows, "numeric_features": 8,
                  "category_levels": list(CATEGORY_LEVELS), "trees": args.trees,
                  "leaves": args.leaves, "partitions": args.partitions, "boosting": "mart",
                  "repeats": args.repeats, "test_rows": 100_000},
        "vs_lightgbm": res,
        "total_seconds": time.perf_counter() - t0,
    }
    print(f"{args.rows} rows, 8 numeric + {len(CATEGORY_LEVELS)} category columns "
          f"({CATEGORY_LEVELS} levels), {args.trees} trees, {args.leaves} leaves")
    print(f"{'library':<12}{'fit s':>9}{'runs':>6}{'peak +MiB/worker':>20}{'test logloss':>14}")
    for name in ("dartboost", "lightgbm"):
        r = res[name]
        peaks = [m["peak_increase_mib"] for m in r["worker_memory"].values()]
        print(f"{name:<12}{r['fit_seconds_median']:>9.2f}{r['n_runs']:>6}"
              f"{' / '.join(f'{p:.0f}' for p in peaks):>20}{r['test_logloss']:>14.4f}")
    print(f"ratio dartboost/lightgbm fit time: "
          f"{res['dartboost']['fit_seconds_median'] / res['lightgbm']['fit_seconds_median']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    print(f"total {result['total_seconds']:.0f} s; wrote {args.out}")


class KillAt:
    """Callback: kill one worker process at the end of iteration ``at``."""

    def __init__(self, client, at):
        self.client, self.at, self.done = client, at, False

    def on_iteration_end(self, est, t, logs=None):
        if t == self.at and not self.done:
            self.done = True
            victim = sorted(self.client.nthreads())[0]
            self.client.submit(os._exit, 1, workers=[victim], pure=False)


def bench_recovery(args, X, y):
    """One DART fit with a checkpoint, with and without a worker killed."""
    import dask.array as da
    from distributed import Client, LocalCluster

    from dartboost.dask import DaskDartClassifier
    from dartboost.store import CheckpointCallback, ModelStore
    out = {}
    n = min(X.shape[0], args.recovery_rows)
    Xr, yr = X[:n], y[:n]
    trees = args.recovery_trees
    params = dict(ours_params(args, boosting="dart"), n_estimators=trees, skip_drop=0.0,
                  drop_rate=0.1)
    for kill in (False, True):
        with tempfile.TemporaryDirectory() as tmp, \
                LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                             dashboard_address=None) as cluster, Client(cluster) as client:
            store = ModelStore([os.path.join(tmp, f"shard{i}") for i in range(5)], k=3, r=2)
            callbacks = [CheckpointCallback(store, "run", every=args.checkpoint_every)]
            if kill:
                callbacks.append(KillAt(client, trees // 2))
            chunk = -(-n // args.partitions)
            # from a graph: Dask recomputes the lost partitions
            dX = da.from_array(Xr, chunks=(chunk, X.shape[1]))
            dy = da.from_array(yr, chunks=chunk)
            model = DaskDartClassifier(**params, callbacks=callbacks)
            t0 = time.perf_counter()
            model.fit(dX, dy)
            key = "with_kill" if kill else "without_kill"
            out[key] = {"fit_seconds": time.perf_counter() - t0,
                        "recoveries": model.recoveries_}
            out.setdefault("predictions", []).append(model.predict_proba(Xr[:1000]))
    p0, p1 = out.pop("predictions")
    out["same_model_max_abs_diff"] = float(np.abs(p0 - p1).max())
    out["rows"], out["trees"] = n, trees
    out["checkpoint_every"] = args.checkpoint_every
    out["overhead_seconds"] = out["with_kill"]["fit_seconds"] - out["without_kill"]["fit_seconds"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--trees", type=int, default=40)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--single-run-above", type=float, default=40.0,
                    help="seconds: a fit slower than this runs once")
    ap.add_argument("--recovery-rows", type=int, default=1_000_000)
    ap.add_argument("--recovery-trees", type=int, default=20)
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--speculative-splits", type=int, default=None,
                    help="queued nodes split ahead per histogram request (default: "
                         "dartboost.dask's own; 0: one request per histogram)")
    ap.add_argument("--no-recovery", action="store_true", help="skip the kill fits")
    ap.add_argument("--categorical", action="store_true",
                    help="the category-column comparison instead (default 500,000 rows)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="default: results/dask.json "
                    "(dask_categorical.json with --categorical)")
    args = ap.parse_args()
    results = Path(__file__).parent / "results"
    if args.out is None:
        args.out = str(results / ("dask_categorical.json" if args.categorical
                                  else "dask.json"))
    if args.categorical and args.rows == ap.get_default("rows"):
        args.rows = 500_000
    if args.quick:
        args.rows, args.trees, args.recovery_rows, args.recovery_trees = 20_000, 4, 5_000, 4
    if args.categorical:
        return main_categorical(args)
    from dartboost.dask import _grower
    if args.speculative_splits is not None:  # the grower runs on the client
        _grower.SPECULATIVE_SPLITS = args.speculative_splits
    X, y = make_data(args.rows, args.features)
    t0 = time.perf_counter()
    vs = bench_vs_lightgbm(args, X, y)
    rec = None if args.no_recovery else bench_recovery(args, X, y)
    result = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "note": "shared machine (2 cores, other jobs running); 2 worker "
                            "processes x 1 thread each"},
        "setup": {"rows": args.rows, "features": args.features, "trees": args.trees,
                  "leaves": args.leaves, "partitions": vs["partitions"], "boosting": "mart",
                  "repeats": args.repeats, "single_run_above_s": args.single_run_above,
                  "speculative_splits": _grower.SPECULATIVE_SPLITS},
        "vs_lightgbm": vs,
        "recovery": rec,
        "total_seconds": time.perf_counter() - t0,
    }
    ours, theirs = vs["dartboost"], vs["lightgbm"]
    print(f"{args.rows} rows x {args.features} features, {args.trees} trees, "
          f"{args.leaves} leaves, {vs['partitions']} partitions, 2 workers")
    print(f"{'library':<12}{'fit s':>9}{'runs':>6}{'peak +MiB/worker':>20}")
    for name, res in (("dartboost", ours), ("lightgbm", theirs)):
        peaks = [m["peak_increase_mib"] for m in res["worker_memory"].values()]
        print(f"{name:<12}{res['fit_seconds_median']:>9.2f}{res['n_runs']:>6}"
              f"{' / '.join(f'{p:.0f}' for p in peaks):>20}")
    print(f"ratio dartboost/lightgbm fit time: "
          f"{ours['fit_seconds_median'] / theirs['fit_seconds_median']:.2f}")
    print(f"rounds/fit {ours['rounds_per_fit']:.0f} ({ours['round_seconds_per_fit']:.2f} s); "
          f"result bytes/tree {ours['result_bytes_per_tree'] / 2**20:.2f} MiB measured vs "
          f"{ours['paper_bytes_per_tree_at_leaves_grown'] / 2**20:.2f} MiB on paper")
    if rec is not None:
        print(f"recovery ({rec['rows']} rows, {rec['trees']} DART trees): "
              f"{rec['without_kill']['fit_seconds']:.2f} s without kill, "
              f"{rec['with_kill']['fit_seconds']:.2f} s with a killed worker "
              f"(max |p diff| {rec['same_model_max_abs_diff']:.1e})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    print(f"total {result['total_seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
