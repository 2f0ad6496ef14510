"""DART vs MART on ranking, regression and classification, with a tuned MART.

The DART paper (Rashmi & Gilad-Bachrach, 2015) reports DART beating MART on
ranking, regression and classification. Public evidence that it beats a MART
whose learning rate is *tuned* is thin, so every task here runs:

- ``MART eta=0.1``: plain boosting, ``n_estimators`` trees;
- ``DART eta=0.1``: dropout (drop_rate 0.1, skip_drop 0.5, max_drop 50,
  "tree" normalisation), same trees and learning rate;
- ``MART tuned``: learning rate from ``{0.02, 0.05, 0.1}`` with up to
  ``n_estimators * 0.1 / eta`` trees (capped at 4x); the learning rate and
  the number of trees are chosen on a validation split;
- ``DART tuned``: drop rate from ``{0.05, 0.1, 0.2}`` at eta 0.1 and the
  number of trees (with the weights the model had then, via
  ``staged_predict``) chosen on the same validation split.

Each seed draws a new train/validation/test split (60/20/20; whole queries for
ranking) and new model seeds; tables show mean +- std over seeds of the test
metric. Data: scikit-learn's bundled ``load_diabetes`` (regression),
``load_breast_cancer`` and ``load_digits`` (classification), plus
``make_friedman1``, ``make_classification`` and
``dartboost.ranking.make_ranking_data``. The script also fits MART and DART
at eta 0.1 on one synthetic regression and the ranking set and plots the
per-tree contributions (over-specialisation) to
``benchmarks/results/dart_vs_mart_overspecialisation.png``.

Run: ``python benchmarks/dart_vs_mart.py`` (about 10 minutes on 2 busy
cores) or ``--quick``. Writes ``benchmarks/results/dart_vs_mart.json``.
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits,
                              make_classification, make_friedman1)
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error
from sklearn.model_selection import train_test_split

from dartboost import DartClassifier, DartRegressor
from dartboost.analysis import plot_tree_contributions, tree_contributions
from dartboost.ranking import DartRanker, make_ranking_data, ndcg_score

RESULTS = Path(__file__).parent / "results"
MART_ETAS = (0.02, 0.05, 0.1)
DART_DROP_RATES = (0.05, 0.1, 0.2)


# --------------------------------------------------------------- data sets
def _tasks(quick):
    """name -> (kind, loader(seed) -> X, y, qid or None, metric name)."""
    n_rank = 120 if quick else 300
    n_syn = 3000 if quick else 6000
    return {
        "diabetes (regression, sklearn)": (
            "regression", lambda s: (*load_diabetes(return_X_y=True), None)),
        "friedman1 (regression, synthetic)": (
            "regression", lambda s: (*make_friedman1(n_syn, n_features=10, noise=1.0,
                                                     random_state=s), None)),
        "breast_cancer (binary, sklearn)": (
            "classification", lambda s: (*load_breast_cancer(return_X_y=True), None)),
        "digits (10 classes, sklearn)": (
            "classification", lambda s: (*load_digits(return_X_y=True), None)),
        "make_classification (binary, synthetic)": (
            "classification", lambda s: (*make_classification(
                n_syn, n_features=20, n_informative=10, flip_y=0.05, random_state=s), None)),
        "latent-relevance LTR (ranking, synthetic)": (
            "ranking", lambda s: make_ranking_data(n_rank, random_state=s)),
    }


def _split(X, y, qid, seed):
    """60/20/20 train/validation/test; ranking splits whole queries."""
    if qid is None:
        idx = np.arange(len(y))
        strat = y if np.issubdtype(np.asarray(y).dtype, np.integer) else None
        tr, rest = train_test_split(idx, test_size=0.4, random_state=seed, stratify=strat)
        va, te = train_test_split(rest, test_size=0.5, random_state=seed,
                                  stratify=None if strat is None else y[rest])
        return np.sort(tr), np.sort(va), np.sort(te)
    queries = np.unique(qid)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(queries)
    n = len(queries)
    parts = perm[: int(0.6 * n)], perm[int(0.6 * n): int(0.8 * n)], perm[int(0.8 * n):]
    return tuple(np.flatnonzero(np.isin(qid, p)) for p in parts)  # qid order kept


# ----------------------------------------------------------------- metrics
def _metric(kind, y, pred, qid):
    """Primary metric, oriented so that larger is better, and extras."""
    if kind == "regression":
        rmse = float(np.sqrt(mean_squared_error(y, pred)))
        return -rmse, {"rmse": rmse}
    if kind == "classification":
        ll = float(log_loss(y, pred, labels=np.arange(pred.shape[1])))
        return -ll, {"log_loss": ll, "accuracy": float(accuracy_score(y, pred.argmax(1)))}
    nd = float(ndcg_score(y, pred, qid=qid, k=10))
    return nd, {"ndcg@10": nd}


def _model(kind, seed, n_jobs, **params):
    params = dict(params, random_state=seed, early_stopping=False, n_jobs=n_jobs)
    if kind == "regression":
        return DartRegressor(**params)
    if kind == "classification":
        return DartClassifier(**params)
    return DartRanker(eval_at=10, **params)


def _fit(model, X, y, qid):
    t0 = time.perf_counter()
    if qid is None:
        model.fit(X, y)
    else:
        model.fit(X, y, qid=qid)
    return time.perf_counter() - t0


def _staged(kind, model, X):
    return model.staged_predict_proba(X) if kind == "classification" else \
        model.staged_predict(X)


def _final(kind, model, X):
    return model.predict_proba(X) if kind == "classification" else model.predict(X)


def _best_stage(kind, model, X_va, y_va, q_va):
    """(validation score, n_iter) of the best stage; staged predictions carry
    the DART weights each stage had."""
    best = (-np.inf, 0)
    for i, pred in enumerate(_staged(kind, model, X_va), start=1):
        score, _ = _metric(kind, y_va, pred, q_va)
        if score > best[0]:
            best = (score, i)
    return best


def _predict_at(kind, model, X, n_iter):
    for i, pred in enumerate(_staged(kind, model, X), start=1):
        if i == n_iter:
            return pred
    raise ValueError("n_iter beyond the model")


def run_task(name, kind, loader, seed, args):
    X, y, qid = loader(seed)
    X = np.asarray(X, dtype=np.float64)
    tr, va, te = _split(X, y, qid, seed)
    q = (lambda idx: None) if qid is None else (lambda idx: qid[idx])
    data = {s: (X[i], y[i], q(i)) for s, i in (("tr", tr), ("va", va), ("te", te))}
    N = args.n_estimators
    # the tiny sklearn sets would not split at the default leaf size
    leaf = 20 if len(tr) >= 2000 else 5
    base = dict(learning_rate=0.1, n_estimators=N, max_leaf_nodes=31 if leaf == 20 else 8,
                min_samples_leaf=leaf)
    dart_kw = dict(drop_rate=0.1, skip_drop=0.5, max_drop=50, normalize_type="tree")
    out = {}
    fit_times = {}

    def evaluate(label, pred, fit_s, extra=None):
        score, metrics = _metric(kind, data["te"][1], pred, data["te"][2])
        out[label] = {"score": score, **metrics, "fit_s": fit_s, **(extra or {})}

    mart = _model(kind, seed, args.n_jobs, boosting="mart", **base)
    fit_times["mart"] = _fit(mart, *data["tr"])
    evaluate("MART eta=0.1", _final(kind, mart, data["te"][0]), fit_times["mart"])
    dart = _model(kind, seed, args.n_jobs, boosting="dart", **base, **dart_kw)
    fit_times["dart"] = _fit(dart, *data["tr"])
    evaluate("DART eta=0.1", _final(kind, dart, data["te"][0]), fit_times["dart"])

    # MART tuned: eta and number of trees on the validation split
    best = None
    tuned_fit_s = 0.0
    for eta in MART_ETAS:
        n_trees = int(min(4 * N, round(N * 0.1 / eta)))
        m = mart if eta == 0.1 else _model(kind, seed, args.n_jobs, boosting="mart",
                                            **dict(base, learning_rate=eta,
                                                   n_estimators=n_trees))
        if eta != 0.1:
            tuned_fit_s += _fit(m, *data["tr"])
        else:
            tuned_fit_s += fit_times["mart"]
        score, n_iter = _best_stage(kind, m, data["va"][0], data["va"][1], data["va"][2])
        if best is None or score > best[0]:
            best = (score, n_iter, eta, m)
    _, n_iter, eta, m = best
    evaluate("MART tuned", _predict_at(kind, m, data["te"][0], n_iter), tuned_fit_s,
             {"eta": eta, "n_iter": n_iter})

    # DART tuned: drop rate and number of trees on the validation split
    best = None
    tuned_fit_s = 0.0
    for rate in DART_DROP_RATES:
        d = dart if rate == 0.1 else _model(kind, seed, args.n_jobs, boosting="dart",
                                             **base, **dict(dart_kw, drop_rate=rate))
        tuned_fit_s += fit_times["dart"] if rate == 0.1 else _fit(d, *data["tr"])
        score, n_iter = _best_stage(kind, d, data["va"][0], data["va"][1], data["va"][2])
        if best is None or score > best[0]:
            best = (score, n_iter, rate, d)
    _, n_iter, rate, d = best
    evaluate("DART tuned", _predict_at(kind, d, data["te"][0], n_iter), tuned_fit_s,
             {"drop_rate": rate, "n_iter": n_iter})
    return out, {"n_train": int(len(tr)), "n_val": int(len(va)), "n_test": int(len(te))}


def overspecialisation_figure(args):
    """MART vs DART (eta 0.1, same trees) per-tree contributions on friedman1
    and the ranking set; returns the summary numbers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_syn = 3000 if args.quick else 6000
    X, y = make_friedman1(n_syn, n_features=10, noise=1.0, random_state=0)
    Xr, yr, qr = make_ranking_data(120 if args.quick else 300, random_state=0)
    N = args.n_estimators
    common = dict(n_estimators=N, random_state=0, early_stopping=False, n_jobs=args.n_jobs)
    dart_kw = dict(drop_rate=0.1, skip_drop=0.5, max_drop=50)
    paper = dict(learning_rate=1.0, drop_rate=0.1, skip_drop=0.0, max_drop=50)
    fits = {
        "friedman1 regression": (
            lambda **kw: DartRegressor(**common, **kw).fit(X, y), X),
        "latent-relevance ranking": (
            lambda **kw: DartRanker(**common, **kw).fit(Xr, yr, qid=qr), Xr),
    }
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    numbers = {}
    for row, (title, (fit, Xd)) in enumerate(fits.items()):
        curves = {
            "MART eta=0.1": tree_contributions(fit(boosting="mart", learning_rate=0.1), Xd),
            "DART eta=0.1": tree_contributions(
                fit(boosting="dart", learning_rate=0.1, **dart_kw), Xd),
            # the paper's setting: no shrinkage, new tree 1/(k+1), no skipping
            "DART eta=1 (paper)": tree_contributions(fit(boosting="dart", **paper), Xd),
        }
        plot_tree_contributions(curves, axes=axes[row], smooth=5)
        axes[row][0].set_title(f"{title}: mean |w_t f_t(x)| (5-tree moving avg)", fontsize=10)
        axes[row][1].set_title(f"{title}: examples moved > 1% of score std", fontsize=10)
        numbers[title] = {
            name: {"first_tree_mean_abs": float(c.mean_abs[0]),
                   "last_10_mean_abs": float(c.mean_abs[-10:].mean()),
                   "share_of_last_half": c.late_share(0.5),
                   "frac_changed_first_10": float(c.frac_changed[:10].mean()),
                   "frac_changed_last_half": float(c.frac_changed[N // 2:].mean()),
                   "threshold": c.threshold}
            for name, c in curves.items()}
    fig.suptitle(f"Over-specialisation: per-tree contribution, {N} trees "
                 "(DART eta=0.1: drop 0.1, skip 0.5; paper: eta=1, drop 0.1, skip 0)")
    fig.tight_layout()
    name = "dart_vs_mart_overspecialisation_quick.png" if args.quick else \
        "dart_vs_mart_overspecialisation.png"
    fig.savefig(RESULTS / name, dpi=110)
    plt.close(fig)
    return numbers, name


MODELS = ("MART eta=0.1", "DART eta=0.1", "MART tuned", "DART tuned")
PRIMARY = {"regression": "rmse", "classification": "log_loss", "ranking": "ndcg@10"}
# DART minus MART, paired by seed (same split), on the primary score (larger = better)
PAIRS = (("DART eta=0.1", "MART eta=0.1"), ("DART tuned", "MART tuned"),
         ("DART eta=0.1", "MART tuned"))


def summarise(per_seed):
    """Mean/std over seeds of every metric, and paired DART - MART differences."""
    models = list(per_seed[0])
    keys = [k for k in per_seed[0][models[0]] if isinstance(per_seed[0][models[0]][k], float)]
    summary = {m: {f"{k}_{stat}": float(fn([r[m][k] for r in per_seed]))
                   for k in keys for stat, fn in (("mean", np.mean), ("std", np.std))}
               for m in models}
    for m in models:
        for extra in ("eta", "drop_rate", "n_iter"):
            if extra in per_seed[0][m]:
                summary[m][f"{extra}_chosen"] = [r[m][extra] for r in per_seed]
    paired = {}
    for a, b in PAIRS:
        d = np.array([r[a]["score"] - r[b]["score"] for r in per_seed])
        paired[f"{a} - {b}"] = {"mean": float(d.mean()), "std": float(d.std()),
                                "dart_wins": int(np.sum(d > 0)), "n_seeds": int(d.size)}
    return summary, paired


def print_tables(results):
    print("| task | metric | " + " | ".join(MODELS) + " |")
    print("|---|---|" + "---|" * len(MODELS))
    for name, r in results.items():
        metrics = [PRIMARY[r["kind"]]] + (["accuracy"] if r["kind"] == "classification" else [])
        for metric in metrics:
            cells = [f"{r['summary'][m][metric + '_mean']:.4f} ± "
                     f"{r['summary'][m][metric + '_std']:.4f}" for m in MODELS]
            print(f"| {name} | {metric} | " + " | ".join(cells) + " |")
    print("\nPaired by seed, DART minus MART on the primary score (positive = DART better; "
          "RMSE and log-loss negated):\n")
    print("| task | " + " | ".join(f"{a} − {b}" for a, b in PAIRS) + " |")
    print("|---|" + "---|" * len(PAIRS))
    for name, r in results.items():
        cells = [f"{p['mean']:+.4f} ± {p['std']:.4f} ({p['dart_wins']}/{p['n_seeds']})"
                 for p in r["paired"].values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-estimators", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--tasks", nargs="*", default=None,
                        help="substrings of task names to run (default: all)")
    parser.add_argument("--from-json", default=None,
                        help="re-summarise the per-seed results of an earlier run and redraw "
                             "the figure instead of refitting the task models")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_estimators, args.seeds = 40, [0, 1]
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    previous = None
    if args.from_json:
        previous = json.loads(Path(args.from_json).read_text())
        args.n_estimators = previous["settings"]["n_estimators"]
        args.seeds = previous["settings"]["seeds"]
        results = {name: {k: r[k] for k in ("kind", "sizes", "per_seed")}
                   for name, r in previous["results"].items()}
    else:
        tasks = _tasks(args.quick)
        if args.tasks:
            tasks = {k: v for k, v in tasks.items() if any(s in k for s in args.tasks)}
        results = {}
        for name, (kind, loader) in tasks.items():
            per_seed = []
            for seed in args.seeds:
                res, sizes = run_task(name, kind, loader, seed, args)
                per_seed.append(res)
                print(f"{name} seed {seed}: " + ", ".join(
                    f"{k} {v['score']:.4f}" for k, v in res.items()), flush=True)
            results[name] = {"kind": kind, "sizes": sizes, "per_seed": per_seed}
    for r in results.values():
        r["summary"], r["paired"] = summarise(r["per_seed"])
    print()
    print_tables(results)
    over, fig_name = overspecialisation_figure(args)
    print("\nover-specialisation (share of the total contribution made by the last half of "
          "the trees; fraction of examples moved by trees of the last half):")
    for title, nums in over.items():
        print(f"  {title}: " + ", ".join(
            f"{m} {v['share_of_last_half']:.3f} / {v['frac_changed_last_half']:.3f}"
            for m, v in nums.items()))
    env = {"python": platform.python_version(), "cpus": os.cpu_count(),
           "loadavg_1min_start": load_start, "loadavg_1min_end": os.getloadavg()[0],
           "wall_s": time.perf_counter() - t_start}
    if previous is not None:
        env = dict(previous["environment"], resummarised_wall_s=env["wall_s"])
    out = {
        "benchmark": "dart_vs_mart",
        "settings": {"n_estimators": args.n_estimators, "seeds": args.seeds,
                     "dart": {"drop_rate": 0.1, "skip_drop": 0.5, "max_drop": 50,
                              "normalize_type": "tree"},
                     "mart_tuned_etas": MART_ETAS, "dart_tuned_drop_rates": DART_DROP_RATES,
                     "split": "60/20/20 train/val/test, new split per seed",
                     "leaves": "31 leaves / min 20 rows (8 / 5 on sets < 2000 train rows)",
                     "primary_metric": PRIMARY},
        "results": results,
        "overspecialisation": {"figure": fig_name, "numbers": over},
        "environment": env,
    }
    path = RESULTS / ("dart_vs_mart_quick.json" if args.quick else "dart_vs_mart.json")
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path} ({time.perf_counter() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
