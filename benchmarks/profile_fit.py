"""cProfile of one dartboost fit on a bench_scaling shape (where the time goes)."""
import cProfile
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, "benchmarks")
from bench_scaling import cache_data  # noqa: E402
from bench_gbdt import build_model  # noqa: E402

shape, lib, n_threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
with np.load(cache_data(shape)) as data:
    X, y = data["X_tr"], data["y_tr"]
model = build_model(lib, "binary", 2, 100, n_threads=n_threads)
prof = cProfile.Profile()
t0 = time.perf_counter()
prof.enable()
model.fit(X, y)
prof.disable()
print(f"{lib} {shape} {n_threads} threads: fit {time.perf_counter() - t0:.2f} s")
pstats.Stats(prof).sort_stats("tottime").print_stats(14)
