"""DartRanker vs LightGBM's LGBMRanker (lambdarank) on synthetic learning-to-rank data.

Data: ``dartboost.ranking.make_ranking_data`` (latent-relevance model, queries
of 10-100 documents, grades 0-4; see its docstring), split by whole queries
into train and test. Both libraries get the same settings: learning rate,
leaves, minimum leaf size, bins, ``lambdarank_truncation_level``, sigmoid,
LightGBM's lambda normalisation, and for DART the same drop rate, skip
probability, ``max_drop`` and the "tree" normalisation
(``xgboost_dart_mode=True`` in LightGBM; its default mode is run as well for
reference). Reports test NDCG@1/5/10 and fit time; for each model against its
LightGBM counterpart, a paired bootstrap over test queries gives the 95%
interval of the NDCG@10 difference ("within noise" = the interval contains 0
or is narrower than the run-to-run spread of DART over seeds).

Run: ``python benchmarks/bench_ranking.py`` (about 6-10 minutes on 2 busy
cores); ``--quick`` for a small smoke run. Writes
``benchmarks/results/ranking.json``.
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from dartboost.ranking import DartRanker, make_ranking_data
from dartboost._ranking_loss import RankingTarget, query_offsets

KS = (1, 5, 10)


def per_query_ndcg(y, scores, qid, k):
    target = RankingTarget(y, query_offsets(y.shape[0], qid=qid))
    return target.ndcg_per_query(scores, k, n_threads=2)


def paired_bootstrap(a, b, n_boot=2000, seed=0):
    """95% interval of mean(a - b) over queries."""
    rng = np.random.default_rng(seed)
    d = a - b
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def make_models(args, seed):
    common = dict(n_estimators=args.n_estimators, learning_rate=args.learning_rate)
    ours = dict(max_leaf_nodes=31, min_samples_leaf=20, min_child_weight=1e-3, max_bins=255,
                lambdarank_truncation_level=args.truncation, eval_at=10, sigma=1.0,
                lambdarank_norm=True, early_stopping=False, n_jobs=args.n_jobs,
                random_state=seed, **common)
    dart = dict(drop_rate=0.1, skip_drop=0.5, max_drop=50, sample_type="uniform")
    lgb_common = dict(num_leaves=31, min_child_samples=20, min_sum_hessian_in_leaf=1e-3,
                      max_bin=255, lambdarank_truncation_level=args.truncation, sigmoid=1.0,
                      lambdarank_norm=True, n_jobs=args.n_jobs, random_state=seed,
                      verbose=-1, **common)
    lgb_dart = dict(drop_rate=0.1, skip_drop=0.5, max_drop=50, uniform_drop=True,
                    drop_seed=seed)
    models = {
        "dartboost MART": ("ours", dict(boosting="mart", **ours)),
        "dartboost DART": ("ours", dict(boosting="dart", **ours, **dart)),
        "LightGBM gbdt": ("lgb", dict(boosting_type="gbdt", **lgb_common)),
        "LightGBM dart (xgboost_dart_mode)": (
            "lgb", dict(boosting_type="dart", xgboost_dart_mode=True, **lgb_common,
                        **lgb_dart)),
    }
    if not args.skip_lgb_default_dart:
        models["LightGBM dart (default mode)"] = (
            "lgb", dict(boosting_type="dart", **lgb_common, **lgb_dart))
    return models


PAIRS = {"dartboost MART": "LightGBM gbdt",
         "dartboost DART": "LightGBM dart (xgboost_dart_mode)"}


def fit_predict(kind, params, X, y, qid, Xt):
    if kind == "ours":
        model = DartRanker(**params)
        t0 = time.perf_counter()
        model.fit(X, y, qid=qid)
        fit_s = time.perf_counter() - t0
    else:
        import lightgbm as lgb
        _, sizes = np.unique(qid, return_counts=True)  # qid is sorted
        model = lgb.LGBMRanker(objective="lambdarank", **params)
        t0 = time.perf_counter()
        model.fit(X, y, group=sizes)
        fit_s = time.perf_counter() - t0
    return model.predict(Xt), fit_s


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-queries", type=int, default=1900)
    parser.add_argument("--n-estimators", type=int, default=150)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--truncation", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--skip-lgb-default-dart", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "ranking.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n_queries, args.n_estimators, args.seeds = 300, 20, [0]
        args.out = args.out.replace("ranking.json", "ranking_quick.json")
    import lightgbm
    X, y, qid = make_ranking_data(args.n_queries, random_state=2026)
    n_train_q = int(0.8 * args.n_queries)
    tr = qid < n_train_q
    X_tr, y_tr, q_tr, X_te, y_te, q_te = X[tr], y[tr], qid[tr], X[~tr], y[~tr], qid[~tr]
    print(f"data: {X.shape[0]} rows ({X_tr.shape[0]} train / {X_te.shape[0]} test), "
          f"{args.n_queries} queries, {X.shape[1]} features; grades "
          f"{np.bincount(y.astype(int)).tolist()}")
    load_before = os.getloadavg()[0]
    runs = {}
    per_query = {}
    for seed in args.seeds:
        for name, (kind, params) in make_models(args, seed).items():
            deterministic = "MART" in name or "gbdt" in name
            if (deterministic or "default mode" in name) and seed != args.seeds[0]:
                continue  # no randomness to average over / reference only
            scores, fit_s = fit_predict(kind, params, X_tr, y_tr, q_tr, X_te)
            ndcg = {k: per_query_ndcg(y_te, scores, q_te, k) for k in KS}
            runs.setdefault(name, []).append(
                {"seed": seed, "fit_s": fit_s,
                 **{f"ndcg@{k}": float(ndcg[k].mean()) for k in KS}})
            per_query.setdefault(name, []).append(ndcg[10])
            print(f"  {name:36s} seed {seed}: fit {fit_s:6.1f}s  " +
                  "  ".join(f"NDCG@{k} {ndcg[k].mean():.4f}" for k in KS), flush=True)
    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "n_runs": len(rs),
            **{f"ndcg@{k}_mean": float(np.mean([r[f"ndcg@{k}"] for r in rs])) for k in KS},
            **{f"ndcg@{k}_std": float(np.std([r[f"ndcg@{k}"] for r in rs])) for k in KS},
            "fit_s_median": float(np.median([r["fit_s"] for r in rs])),
        }
    comparisons = {}
    for ours, peer in PAIRS.items():
        # pair the first seed of each: same test queries, per-query differences
        mean, lo, hi = paired_bootstrap(per_query[ours][0], per_query[peer][0])
        seed_spread = max(summary[ours]["ndcg@10_std"], summary[peer]["ndcg@10_std"])
        comparisons[f"{ours} - {peer}"] = {
            "ndcg@10_diff": mean, "ci95": [lo, hi], "seed_std": seed_spread,
            "within_noise": bool(lo <= 0 <= hi or abs(mean) <= 2 * seed_spread),
        }
    print("\n| model | runs | NDCG@1 | NDCG@5 | NDCG@10 | fit s (median) |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        cells = " | ".join(f"{s[f'ndcg@{k}_mean']:.4f} ± {s[f'ndcg@{k}_std']:.4f}"
                           for k in KS)
        print(f"| {name} | {s['n_runs']} | {cells} | {s['fit_s_median']:.1f} |")
    print()
    for key, c in comparisons.items():
        print(f"{key}: NDCG@10 diff {c['ndcg@10_diff']:+.4f} (95% CI {c['ci95'][0]:+.4f} .. "
              f"{c['ci95'][1]:+.4f}; seed std {c['seed_std']:.4f}) -> "
              f"{'within noise' if c['within_noise'] else 'DIFFERENT'}")
    result = {
        "benchmark": "ranking",
        "data": {"generator": "dartboost.ranking.make_ranking_data", "random_state": 2026,
                 "n_queries": args.n_queries, "n_rows": int(X.shape[0]),
                 "n_train_rows": int(X_tr.shape[0]), "n_test_rows": int(X_te.shape[0]),
                 "n_features": int(X.shape[1]), "split": "first 80% of queries train"},
        "settings": {"n_estimators": args.n_estimators, "learning_rate": args.learning_rate,
                     "num_leaves": 31, "min_samples_leaf": 20, "max_bins": 255,
                     "lambdarank_truncation_level": args.truncation, "sigma": 1.0,
                     "lambdarank_norm": True, "drop_rate": 0.1, "skip_drop": 0.5,
                     "max_drop": 50, "n_jobs": args.n_jobs, "seeds": args.seeds},
        "runs": runs, "summary": summary, "comparisons": comparisons,
        "environment": {"lightgbm": lightgbm.__version__, "python": platform.python_version(),
                        "cpus": os.cpu_count(), "loadavg_1min_start": load_before,
                        "loadavg_1min_end": os.getloadavg()[0],
                        "note": "shared 2-core machine; fit times are single runs under "
                                "load from other jobs and noisy"},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
