"""cProfile of one fit on a bench_scaling shape (where the time goes).

For dartboost it also prints the seconds of each phase of the compiled
per-split step (``_grow.phase_seconds``: partition, histogram filling,
subtraction + split search, and the roots' histograms and searches), which
one compiled call per split hides from cProfile.

Usage::

    python benchmarks/profile_fit.py binary_500k_50 dartboost_mart 16 [n_trees [R,C[,T]]]

``R,C[,T]`` tunes dartboost's histogram layouts (``_grow.set_layout``: nodes
under 1/R of the rows read the row-major copy, column-major tasks fill C
features; T=0: one parallel region per split instead of per tree); the trees
are the same for any.
"""
import cProfile
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, "benchmarks")
from bench_scaling import cache_data  # noqa: E402
from bench_gbdt import build_model  # noqa: E402

shape, lib, n_threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
n_trees = int(sys.argv[4]) if len(sys.argv) > 4 else 100
with np.load(cache_data(shape)) as data:
    X, y = data["X_tr"], data["y_tr"]
model = build_model(lib, "binary", 2, n_trees, n_threads=n_threads)
if lib.startswith("dartboost"):
    from dartboost._cext import _grow
    if len(sys.argv) > 5:
        below, block, *team = (int(v) for v in sys.argv[5].split(","))
        teams = bool(team[0]) if team else True
        _grow.set_layout(below, block, teams)
        print(f"layout: row-major below 1/{below} of the rows, column blocks of {block}, "
              f"{'one region per tree' if teams else 'one region per split'}")
    _grow.phase_seconds(reset=True)
prof = cProfile.Profile()
t0 = time.perf_counter()
prof.enable()
model.fit(X, y)
prof.disable()
print(f"{lib} {shape} {n_threads} threads: fit {time.perf_counter() - t0:.2f} s")
if lib.startswith("dartboost"):
    print("compiled split steps: " + ", ".join(
        f"{name} {sec:.2f} s" for name, sec in _grow.phase_seconds().items()))
pstats.Stats(prof).sort_stats("tottime").print_stats(14)
