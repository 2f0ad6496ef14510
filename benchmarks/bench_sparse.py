"""High-dimensional sparse text features: dartboost vs LightGBM on one CSR matrix.

The corpus ships with this machine's Python: the docstrings of every module,
class and function in the standard library and in NumPy, SciPy, pandas and
scikit-learn, read from their source files with :mod:`ast` (nothing is
imported or downloaded). The task is binary: does a docstring come from the
standard library or from one of the scientific packages? Texts are turned
into a TF-IDF CSR matrix (``TfidfVectorizer``, word unigrams and bigrams,
``min_df=8``), which gives tens of thousands of features, almost all of them
zero in almost every row -- the shape of a bag-of-words problem.

Each fit runs in a fresh child process that loads the saved CSR matrix, so
its peak resident memory (``ru_maxrss``) is the fit's own: the table shows
the peak and the increase over the memory held before ``fit`` (data
loaded). Both libraries get the same settings (100 iterations, learning rate
0.1, 31 leaves, 20 rows per leaf, 255 bins, the same threads); fit time is
the median of ``--repeats`` runs, test log-loss and accuracy on a held-out
quarter.

``--before DIR`` adds ``dartboost_mart_before``: the same fit by another
build of dartboost installed in ``DIR`` (``pip install --target DIR`` of an
older checkout), run in the same interleaved rounds, so a change is measured
side by side under the same load. Each run records the machine's load
average (the machine may be shared) and, for dartboost, the bytes of the
binned training data the fit holds.

``--dense-check R --before DIR`` instead times dense tables (100 trees, 1
and 2 threads): one without a mostly-default feature (80,000 x 50
``make_classification`` rows) and one with 200 one-hot columns beside 20
normal ones (60,000 rows: its one-hot columns are kept as entries), this
build and the other alternated one process per fit, R fits each; it checks
that both grow the same trees and writes
``benchmarks/results/sparse_binned_dense_check.json``.

``--phases`` fits dartboost once in this process on the text data and
writes where the time of the compiled split steps goes
(``_grow.phase_seconds``) and how many histograms the fit's pool allocated
to ``benchmarks/results/bench_sparse_entries_phases.json``.

Run: ``python benchmarks/bench_sparse.py [--repeats R] [--max-docs N]
[--n-estimators T] [--before DIR]``; writes
``benchmarks/results/bench_sparse.json`` (``--n-estimators`` gives a shorter
run: histogram memory does not grow with the number of trees).
"""
import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np

SETTINGS = dict(n_estimators=100, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20)
PACKAGES = ("numpy", "scipy", "pandas", "sklearn")


def _docstrings(root):
    """Docstrings of the modules, classes and functions under ``root``
    (sorted file order: the corpus is the same on every run)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= 40:
                        out.append(doc)
    return out


def corpus(max_docs, seed=0):
    """``(texts, labels)``: 0 for the standard library, 1 for the packages."""
    import importlib.util
    stdlib = _docstrings(sysconfig.get_paths()["stdlib"])
    science = []
    for pkg in PACKAGES:
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.submodule_search_locations:
            science += _docstrings(list(spec.submodule_search_locations)[0])
    texts = stdlib + science
    labels = np.r_[np.zeros(len(stdlib)), np.ones(len(science))]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))[:max_docs]
    return [texts[i] for i in order], labels[order]


def _child(lib, path, n_jobs, seed, n_estimators):
    """Fit ``lib`` on the saved data in this process; print one JSON line."""
    import resource
    import time

    import scipy.sparse as sp
    X_train = sp.load_npz(os.path.join(path, "X_train.npz")).tocsr()
    X_test = sp.load_npz(os.path.join(path, "X_test.npz")).tocsr()
    y = np.load(os.path.join(path, "y.npz"))
    y_train, y_test = y["train"], y["test"]
    settings = dict(SETTINGS, n_estimators=n_estimators)
    if lib == "dartboost_mart":
        from dartboost import DartClassifier
        model = DartClassifier(boosting="mart", random_state=seed, n_jobs=n_jobs,
                               early_stopping=False, max_bins=255, **settings)
    else:
        import lightgbm as lgb
        model = lgb.LGBMClassifier(n_estimators=settings["n_estimators"],
                                   learning_rate=SETTINGS["learning_rate"],
                                   num_leaves=SETTINGS["max_leaf_nodes"],
                                   min_child_samples=SETTINGS["min_samples_leaf"],
                                   max_bin=255, n_jobs=n_jobs, random_state=seed, verbose=-1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    model.fit(X_train, y_train)
    fit_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    proba = np.clip(model.predict_proba(X_test)[:, 1], 1e-15, 1 - 1e-15)
    logloss = float(-np.mean(y_test * np.log(proba) + (1 - y_test) * np.log(1 - proba)))
    acc = float(np.mean((proba > 0.5) == y_test))
    out = {"fit_s": fit_s, "peak_rss_mib": peak, "rss_before_fit_mib": before,
           "fit_rss_increase_mib": peak - before, "test_logloss": logloss,
           "test_accuracy": acc, "load_average_1min": os.getloadavg()[0]}
    if lib.startswith("dartboost"):
        import dartboost
        out["binned_train_mib"] = _binned_mib(model, X_train, settings)
        out["dartboost_path"] = os.path.dirname(dartboost.__file__)
    print(json.dumps(out))


def _binned_mib(model, X_train, settings):
    """MiB of the binned training data a fit of this build holds (binned
    again after the fit, whose peak is already read)."""
    mapper = model.booster_.bin_mapper
    try:
        from dartboost._grower import histogram_offsets
        n_bins = mapper.n_bins_non_missing_
        binned, _ = mapper.transform_splittable(
            X_train, settings["min_samples_leaf"],
            offsets_of=lambda features: histogram_offsets(n_bins[features]))
    except TypeError:  # a build before the entries: one rows x features array
        binned, _ = mapper.transform_splittable(X_train, settings["min_samples_leaf"])
    return binned.nbytes / 2**20


def _dense_table(kind):
    if kind == "plain":
        from sklearn.datasets import make_classification
        return make_classification(n_samples=80_000, n_features=50, n_informative=20,
                                   random_state=0)
    rng = np.random.default_rng(0)
    n = 60_000
    normal = rng.normal(size=(n, 20))
    levels = rng.integers(0, 200, n)
    onehot = np.zeros((n, 200))
    onehot[np.arange(n), levels] = 1.0
    y = (normal[:, 0] + (levels % 7 == 0) + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    return np.hstack([normal, onehot]), y


def _dense_child(n_jobs, kind):
    """Fit 100 trees on a dense table in this process; print time and a
    digest of the trees."""
    import hashlib
    import time

    from dartboost import DartClassifier
    X, y = _dense_table(kind)
    model = DartClassifier(boosting="mart", n_estimators=100, random_state=0, n_jobs=n_jobs,
                           early_stopping=False)
    t0 = time.perf_counter()
    model.fit(X, y)
    fit_s = time.perf_counter() - t0
    digest = hashlib.sha256(model.booster_.nodes.tobytes()).hexdigest()
    print(json.dumps({"fit_s": fit_s, "trees_sha256": digest,
                      "load_average_1min": os.getloadavg()[0]}))


def dense_check(before, repeats, out_path):
    runs = {}
    for kind in ("plain", "onehot"):
        for n_jobs in (1, 2):
            for _ in range(repeats):
                for lib in ("now", "before"):
                    runs.setdefault(f"{kind}_{lib}_{n_jobs}_threads", []).append(
                        run(f"dense-{kind}" if lib == "now" else f"dense-{kind}_before", None,
                            n_jobs, 0, 0, before))
    results = {}
    for key, rs in runs.items():
        results[key] = {"fit_s_median": statistics.median(r["fit_s"] for r in rs),
                        "fit_s_runs": [r["fit_s"] for r in rs],
                        "load_average_runs": [r["load_average_1min"] for r in rs],
                        "trees_sha256": sorted({r["trees_sha256"] for r in rs})}
        r = results[key]
        print(f"{key:<26}{r['fit_s_median']:>8.2f} s  {[round(t, 2) for t in r['fit_s_runs']]}")
    same = {kind: all(results[f"{kind}_now_{t}_threads"]["trees_sha256"]
                      == results[f"{kind}_before_{t}_threads"]["trees_sha256"] for t in (1, 2))
            for kind in ("plain", "onehot")}
    print("identical trees:", same)
    with open(out_path, "w") as fh:
        json.dump({"data": {"plain": "make_classification 80000 x 50",
                            "onehot": "60000 rows: 20 normal columns, 200 one-hot columns"},
                   "model": "mart, 100 trees", "identical_trees": same, "results": results},
                  fh, indent=2)
    print(f"wrote {out_path}")


def phases(X, y, args, out_path):
    """One dartboost fit in this process: the compiled split steps' phase
    seconds and the histograms its pool allocated (and held at most)."""
    import time

    from dartboost import DartClassifier, _grower
    from dartboost._cext import _grow
    allocated = []
    take = _grower.GrowerBuffers.take_histogram

    def counting_take(self, n_records):
        if not self._free_histograms:
            allocated.append(n_records)
        return take(self, n_records)

    _grower.GrowerBuffers.take_histogram = counting_take
    try:
        model = DartClassifier(boosting="mart", random_state=args.seed, n_jobs=args.n_jobs,
                               early_stopping=False, max_bins=255,
                               **dict(SETTINGS, n_estimators=args.n_estimators))
        _grow.phase_seconds(reset=True)
        t0 = time.perf_counter()
        model.fit(X, y)
        fit_s = time.perf_counter() - t0
    finally:
        _grower.GrowerBuffers.take_histogram = take
    out = {"fit_s": fit_s, "phase_seconds": _grow.phase_seconds(),
           "histograms_allocated": len(allocated),
           "records_per_histogram": allocated[0] if allocated else 0,
           "n_jobs": args.n_jobs, "n_estimators": args.n_estimators,
           "load_average_1min": os.getloadavg()[0]}
    print(json.dumps(out, indent=1))
    with open(out_path, "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"wrote {out_path}")


def run(lib, path, n_jobs, seed, n_estimators, before=None):
    env, python = dict(os.environ), sys.executable
    if lib.endswith("_before"):
        # the other build first on the path, in the base interpreter (a
        # virtual environment's editable install would take precedence)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [before, env.get("PYTHONPATH")]))
        python = getattr(sys, "_base_executable", sys.executable)
    out = subprocess.run([python, __file__, "--child", lib.removesuffix("_before"),
                          "--data", str(path), "--n-jobs", str(n_jobs), "--seed", str(seed),
                          "--n-estimators", str(n_estimators)],
                         check=True, capture_output=True, text=True, env=env,
                         cwd=tempfile.gettempdir())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-docs", type=int, default=60_000)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--libs", default="dartboost_mart,lightgbm")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", action="store_true",
                        help="one in-process dartboost fit: phase timers, histograms")
    parser.add_argument("--dense-check", type=int, default=0,
                        help="fits of each build on a dense table (needs --before)")
    parser.add_argument("--before", default=None,
                        help="a folder with another dartboost build (pip install --target)")
    parser.add_argument("--n-estimators", type=int, default=SETTINGS["n_estimators"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "bench_sparse.json"))
    args = parser.parse_args()
    if args.child and args.child.startswith("dense-"):
        return _dense_child(args.n_jobs, args.child.removeprefix("dense-"))
    if args.child:
        return _child(args.child, args.data, args.n_jobs, args.seed, args.n_estimators)
    if args.dense_check:
        if not args.before:
            parser.error("--dense-check needs --before")
        return dense_check(args.before, args.dense_check, os.path.join(
            os.path.dirname(args.out), "sparse_binned_dense_check.json"))

    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    texts, labels = corpus(args.max_docs, args.seed)
    n_train = len(texts) * 3 // 4
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=8, dtype=np.float64)
    X_train = vec.fit_transform(texts[:n_train]).tocsr()
    if args.phases:
        return phases(X_train, labels[:n_train], args, os.path.join(
            os.path.dirname(args.out), "bench_sparse_entries_phases.json"))
    X_test = vec.transform(texts[n_train:]).tocsr()
    n, p = X_train.shape
    csr_mib = (X_train.data.nbytes + X_train.indices.nbytes + X_train.indptr.nbytes) / 2**20
    # features that can split: stored in at least min_samples_leaf training rows
    nnz_col = np.diff(X_train.tocsc().indptr)
    info = {"n_train": n, "n_test": X_test.shape[0], "n_features": p,
            "nnz_train": int(X_train.nnz), "density": X_train.nnz / (n * p),
            "csr_train_mib": csr_mib, "dense_uint8_mib": n * p / 2**20,
            "features_in_ge_min_samples_leaf_rows": int(np.sum(
                nnz_col >= SETTINGS["min_samples_leaf"])),
            "positive_fraction": float(labels.mean()),
            "settings": dict(SETTINGS, n_estimators=args.n_estimators),
            "n_jobs": args.n_jobs, "repeats": args.repeats}
    print(f"train {n} x {p} CSR, nnz {X_train.nnz} ({info['density']:.2e}), "
          f"{csr_mib:.0f} MiB; dense uint8 bins would be {info['dense_uint8_mib']:.0f} MiB; "
          f"{info['features_in_ge_min_samples_leaf_rows']} features in >= "
          f"{SETTINGS['min_samples_leaf']} rows")
    results = {}
    with tempfile.TemporaryDirectory() as path:
        sp.save_npz(os.path.join(path, "X_train.npz"), X_train)
        sp.save_npz(os.path.join(path, "X_test.npz"), X_test)
        np.savez(os.path.join(path, "y.npz"), train=labels[:n_train], test=labels[n_train:])
        libs = args.libs.split(",")
        if args.before:
            libs.insert(1, "dartboost_mart_before")
        runs = {lib: [] for lib in libs}
        for _ in range(args.repeats):  # interleaved: load drifts hit both alike
            for lib in libs:
                runs[lib].append(run(lib, path, args.n_jobs, args.seed, args.n_estimators,
                                     args.before))
        for lib in libs:
            rs = runs[lib]
            results[lib] = {key: statistics.median(r[key] for r in rs) for key in rs[0]
                            if key != "dartboost_path"}
            if "dartboost_path" in rs[0]:
                results[lib]["dartboost_path"] = rs[0]["dartboost_path"]
            results[lib]["fit_s_runs"] = [r["fit_s"] for r in rs]
            results[lib]["fit_rss_increase_mib_runs"] = [r["fit_rss_increase_mib"] for r in rs]
            results[lib]["load_average_runs"] = [r["load_average_1min"] for r in rs]
    ref = results.get("lightgbm")
    print(f"{'library':<22}{'fit s':>9}{'peak MiB':>10}{'fit +MiB':>10}{'binned MiB':>11}"
          f"{'logloss':>9}{'acc':>7}{'time/LGB':>10}{'mem/LGB':>9}")
    for lib, r in results.items():
        t_ratio = r["fit_s"] / ref["fit_s"] if ref else float("nan")
        m_ratio = r["fit_rss_increase_mib"] / ref["fit_rss_increase_mib"] if ref else float("nan")
        r["fit_time_vs_lightgbm"], r["fit_memory_vs_lightgbm"] = t_ratio, m_ratio
        print(f"{lib:<22}{r['fit_s']:>9.2f}{r['peak_rss_mib']:>10.0f}"
              f"{r['fit_rss_increase_mib']:>10.0f}{r.get('binned_train_mib', float('nan')):>11.1f}"
              f"{r['test_logloss']:>9.4f}"
              f"{r['test_accuracy']:>7.3f}{t_ratio:>10.2f}{m_ratio:>9.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"data": info, "results": results}, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
