"""Fit time split into a fixed cost and a cost per tree: the elapsed time at
the end of chosen iterations of one fit, dartboost vs LightGBM.

A 100-tree fit time mixes what a library does once (binning, its dataset,
the first tree) with what every tree costs; a model of 500 or 5,000 trees
pays mostly the second. Each library fits one ``bench_scaling`` shape in a
fresh process pinned with ``taskset``, a LightGBM-style callback stamping
the time after every iteration; dartboost also records its compiled split
steps' phase seconds (``_grow.phase_seconds``) at the same iterations.

Usage::

    python benchmarks/bench_fit_curve.py --threads 16 --trees 500
    python benchmarks/bench_fit_curve.py --table --out benchmarks/results/fit_curve.json
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_gbdt import build_model  # noqa: E402
from bench_scaling import SHAPES, cache_data  # noqa: E402

RESULTS = os.path.join(HERE, "results", "fit_curve.json")
MARKS = (1, 10, 50, 100, 200, 300, 400, 500, 1000, 2000)


def one(shape, lib, threads, trees):
    """Stamps of one fit (run in the child process)."""
    task, _, _, n_classes = SHAPES[shape]
    with np.load(cache_data(shape)) as data:
        X, y = data["X_tr"], data["y_tr"]
    model = build_model(lib, task, n_classes, trees, n_threads=threads)
    stamps, phases = [], {}
    marks = {m for m in MARKS if m <= trees} | {trees}
    grow = None
    if lib.startswith("dartboost"):
        from dartboost._cext import _grow as grow
        grow.phase_seconds(reset=True)

    def stamp(env):
        stamps.append(time.perf_counter())
        if grow is not None and env.iteration + 1 in marks:
            phases[env.iteration + 1] = dict(grow.phase_seconds())

    t0 = time.perf_counter()
    if lib.startswith("dartboost"):
        model.set_params(callbacks=[stamp])
        model.fit(X, y)
    else:
        model.fit(X, y, callbacks=[stamp])
    fit_s = time.perf_counter() - t0
    at = {m: stamps[m - 1] - t0 for m in sorted(marks) if m <= len(stamps)}
    return {"fit_s": fit_s, "at": at, "phases": phases}


def per_tree(at, a, b):
    """Milliseconds per tree between iterations ``a`` and ``b``."""
    return 1e3 * (at[b] - at[a]) / (b - a)


def table(results):
    for key, libs in results["runs"].items():
        print(f"\n{key}: seconds at the end of iteration i; ms per tree between marks\n")
        marks = sorted({int(m) for run in libs.values() for m in run["at"]})
        print("| library | " + " | ".join(f"i={m}" for m in marks) + " | ms/tree 1→100 |"
              " ms/tree 100→end |")
        print("|---" * (len(marks) + 3) + "|")
        for lib, run in libs.items():
            at = {int(k): v for k, v in run["at"].items()}
            last = max(at)
            early = per_tree(at, 1, 100) if 100 in at and 1 in at else float("nan")
            late = per_tree(at, 100, last) if 100 in at and last > 100 else float("nan")
            print(f"| {lib} | " + " | ".join(f"{at[m]:.2f}" if m in at else "-" for m in marks)
                  + f" | {early:.1f} | {late:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="binary_1m_50", choices=sorted(SHAPES))
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--libs", default="lightgbm_gbdt,dartboost_mart")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = ap.parse_args()
    if args.one:
        shape, lib, threads, trees = args.one
        print(json.dumps(one(shape, lib, int(threads), int(trees))))
        return
    if args.table:
        with open(args.out) as f:
            table(json.load(f))
        return
    cache_data(args.shape)
    results = {"runs": {}}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
    key = f"{args.shape}_{args.trees}_{args.threads}thr"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for lib in args.libs.split(","):
        cmd = ["taskset", "-c", f"0-{args.threads - 1}", sys.executable, __file__, "--one",
               args.shape, lib, str(args.threads), str(args.trees)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results["runs"].setdefault(key, {})[lib] = json.loads(out.strip().splitlines()[-1])
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    table(results)


if __name__ == "__main__":
    main()
