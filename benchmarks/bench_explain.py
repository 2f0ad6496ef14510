"""TreeSHAP speed: dartboost's compiled TreeSHAP against LightGBM's ``pred_contrib``.

Both libraries fit a model of the same size (the same number of trees and
leaves per tree, on the same data) and explain the same rows. The shap
package's own C++ TreeSHAP run on the converted dartboost model
(``shap.TreeExplainer(to_shap_model(est))``) is a second peer: same trees,
so it isolates the kernel. Times are medians of several runs, timed in alternating rounds; ratios are
``peer time / dartboost time`` (above 1: dartboost is faster).

Usage::

    python benchmarks/bench_explain.py           # ~1 min on 2 cores
    python benchmarks/bench_explain.py --quick   # smoke run
"""
import argparse
import json
import os
import platform
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def paired_medians(fns, repeat):
    """Median seconds of each function, timed in alternating rounds (the order
    flips every round) so load from other processes hits all of them alike."""
    times = [[] for _ in fns]
    for r in range(repeat):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def mean_leaf_depth_dartboost(est):
    from dartboost._tree_view import ensemble_view
    return float(np.mean([t.depth() for t in ensemble_view(est).trees]))


def run(n_train, n_features, n_trees, n_leaves, n_explain, repeat, threads):
    import lightgbm as lgb
    from sklearn.datasets import make_regression

    from dartboost import DartRegressor
    from dartboost.explain import shap_interaction_values, shap_values, to_shap_model

    X, y = make_regression(n_train + n_explain, n_features, n_informative=n_features // 2,
                           noise=5.0, random_state=0)
    X_train, y_train, X_exp = X[:n_train], y[:n_train], X[n_train:]
    ours = DartRegressor(n_estimators=n_trees, max_leaf_nodes=n_leaves, random_state=0,
                         early_stopping=False).fit(X_train, y_train)
    peer = lgb.LGBMRegressor(n_estimators=n_trees, num_leaves=n_leaves, boosting_type="dart",
                             random_state=0, verbose=-1).fit(X_train, y_train)
    rows = []
    for n_threads in threads:
        t_ours, t_lgb = paired_medians(
            [lambda: shap_values(ours, X_exp, n_jobs=n_threads),
             lambda: peer.predict(X_exp, pred_contrib=True, n_jobs=n_threads)], repeat)
        rows.append({"what": "shap_values", "threads": n_threads, "dartboost_s": t_ours,
                     "lightgbm_pred_contrib_s": t_lgb, "lightgbm_over_dartboost": t_lgb / t_ours})
    try:
        import shap
    except ImportError:
        shap = None
    shap_rows = []
    if shap is not None:
        explainer = shap.TreeExplainer(to_shap_model(ours))
        t_ours, t_shap = paired_medians(
            [lambda: shap_values(ours, X_exp, n_jobs=1),
             lambda: explainer.shap_values(X_exp, check_additivity=False)], repeat)
        shap_rows.append({"what": "shap_values (same trees)", "threads": 1,
                          "dartboost_s": t_ours, "shap_package_s": t_shap,
                          "shap_over_dartboost": t_shap / t_ours})
        few = X_exp[: max(20, n_explain // 20)]
        t_ours, t_shap = paired_medians(
            [lambda: shap_interaction_values(ours, few, n_jobs=1),
             lambda: explainer.shap_interaction_values(few)], repeat)
        shap_rows.append({"what": f"interaction values ({len(few)} rows, same trees)",
                          "threads": 1, "dartboost_s": t_ours, "shap_package_s": t_shap,
                          "shap_over_dartboost": t_shap / t_ours})
    lgb_depths = [d["tree_structure"] for d in peer.booster_.dump_model()["tree_info"]]

    def depth(node):
        return 0 if "leaf_value" in node else 1 + max(depth(node["left_child"]),
                                                      depth(node["right_child"]))
    return {
        "config": {"n_train": n_train, "n_features": n_features, "n_trees": n_trees,
                   "n_leaves": n_leaves, "n_explain": n_explain, "repeat": repeat},
        "model_size": {"dartboost_mean_depth": mean_leaf_depth_dartboost(ours),
                       "lightgbm_mean_depth": float(np.mean([depth(t) for t in lgb_depths]))},
        "vs_lightgbm": rows,
        "vs_shap_package": shap_rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "lightgbm": lgb.__version__, "shap": getattr(shap, "__version__", None)},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cfg = (dict(n_train=5000, n_features=10, n_trees=30, n_leaves=31, n_explain=500, repeat=3)
           if args.quick else
           dict(n_train=20000, n_features=20, n_trees=200, n_leaves=31, n_explain=2000,
                repeat=5))
    threads = sorted({1, min(2, os.cpu_count() or 1)})
    result = run(threads=threads, **cfg)
    print(f"model: {cfg['n_trees']} trees x {cfg['n_leaves']} leaves, {cfg['n_features']} "
          f"features; mean depth dartboost {result['model_size']['dartboost_mean_depth']:.1f}, "
          f"LightGBM {result['model_size']['lightgbm_mean_depth']:.1f}; "
          f"{cfg['n_explain']} rows explained")
    print(f"{'what':40s} {'thr':>3s} {'dartboost s':>12s} {'peer s':>10s} {'peer/ours':>9s}")
    for r in result["vs_lightgbm"]:
        print(f"{'vs LightGBM pred_contrib':40s} {r['threads']:3d} {r['dartboost_s']:12.4f} "
              f"{r['lightgbm_pred_contrib_s']:10.4f} {r['lightgbm_over_dartboost']:9.2f}")
    for r in result["vs_shap_package"]:
        print(f"{'vs shap: ' + r['what']:40s} {r['threads']:3d} {r['dartboost_s']:12.4f} "
              f"{r['shap_package_s']:10.4f} {r['shap_over_dartboost']:9.2f}")
    os.makedirs(RESULTS, exist_ok=True)
    name = "explain_quick.json" if args.quick else "explain.json"
    with open(os.path.join(RESULTS, name), "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote benchmarks/results/{name}")


if __name__ == "__main__":
    main()
