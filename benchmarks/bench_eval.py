"""Cost of recording eval-set metrics during ``fit``, dartboost against LightGBM.

Each library fits the same DART model (same data, trees, leaves) three ways:
no eval set, one eval set with its default metric, and three eval sets with
three metrics each. The table gives median fit times (alternating rounds) and
the overhead of each variant over the plain fit, ``time / plain time``; the
last column compares the libraries' overheads, not their speeds (LightGBM's
DART is a different algorithm, so absolute times are not comparable here;
see ``bench_gbdt.py`` for that).

Usage::

    python benchmarks/bench_eval.py           # ~1-2 min on 2 cores
    python benchmarks/bench_eval.py --quick   # smoke run
"""
import argparse
import json
import os
import platform
import warnings

from bench_explain import paired_medians  # noqa: E402 (one timing helper)

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def run(n_train, n_val, n_features, n_trees, n_leaves, repeat, threads):
    import lightgbm as lgb
    from sklearn.datasets import make_regression

    from dartboost import DartRegressor

    X, y = make_regression(n_train + 3 * n_val, n_features, n_informative=n_features // 2,
                           noise=5.0, random_state=0)
    X_tr, y_tr = X[:n_train], y[:n_train]
    vals = [(X[n_train + i * n_val:n_train + (i + 1) * n_val],
             y[n_train + i * n_val:n_train + (i + 1) * n_val]) for i in range(3)]
    common = dict(n_estimators=n_trees, random_state=0)

    def ours(sets, metrics):
        est = DartRegressor(max_leaf_nodes=n_leaves, early_stopping=False, n_jobs=threads,
                            eval_metric=metrics, **common)
        return lambda: est.fit(X_tr, y_tr, eval_set=sets)

    def peer(sets, metrics):
        est = lgb.LGBMRegressor(num_leaves=n_leaves, boosting_type="dart",
                                xgboost_dart_mode=True, n_jobs=threads, verbose=-1, **common)
        return lambda: est.fit(X_tr, y_tr, eval_set=sets, eval_metric=metrics)

    variants = [("no eval set", None, None), ("1 set, default metric", vals[:1], None),
                ("3 sets x 3 metrics", vals, ["l2", "l1", "rmse"])]
    fns = [make(sets, m) for _, sets, m in variants for make in (ours, peer)]
    times = paired_medians(fns, repeat)
    rows = []
    for i, (name, _, _) in enumerate(variants):
        t_ours, t_peer = times[2 * i], times[2 * i + 1]
        rows.append({"variant": name, "dartboost_s": t_ours, "lightgbm_s": t_peer,
                     "dartboost_overhead": t_ours / times[0],
                     "lightgbm_overhead": t_peer / times[1]})
    return rows


def main():
    # LightGBM 4.7 prefers eval_X/eval_y; eval_set still works and is what we compare
    warnings.filterwarnings("ignore", message=".*eval_set.*deprecated")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cfg = (dict(n_train=5000, n_val=2000, n_features=10, n_trees=20, n_leaves=15, repeat=1,
                threads=1) if args.quick else
           dict(n_train=20000, n_val=10000, n_features=20, n_trees=100, n_leaves=31,
                repeat=3, threads=2))
    rows = run(**cfg)
    print(f"{'variant':<24}{'dartboost s':>12}{'overhead':>10}{'lightgbm s':>12}"
          f"{'overhead':>10}")
    for r in rows:
        print(f"{r['variant']:<24}{r['dartboost_s']:>12.3f}{r['dartboost_overhead']:>10.3f}"
              f"{r['lightgbm_s']:>12.3f}{r['lightgbm_overhead']:>10.3f}")
    if not args.quick:
        os.makedirs(RESULTS, exist_ok=True)
        import lightgbm
        import dartboost
        out = {"config": cfg, "rows": rows, "machine": platform.platform(),
               "cpu_count": os.cpu_count(), "dartboost": dartboost.__version__,
               "lightgbm": lightgbm.__version__}
        with open(os.path.join(RESULTS, "eval.json"), "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
