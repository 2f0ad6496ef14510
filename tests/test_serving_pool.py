"""Tests of dartboost.serving.CodedPool on local (loky) worker processes.

Models are linear on purpose: for a linear base the sum-parity model is exact,
so a reconstructed answer must match the base output to rounding, which makes
decoding errors visible. No test asserts on wall-clock speed.
"""

import os
import time

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression

from dartboost.coded import CodedPredictor, raw_output
from dartboost.serving import (
    CodedPool,
    FaultSpec,
    PoolClosedError,
    QueryTimeout,
    make_backup_model,
    pool_for_mode,
)
from process_utils import alive


def _wait_dead(pids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture(scope="module")
def clf_data():
    X, y = make_classification(n_samples=1500, n_features=8, n_informative=5, random_state=0)
    base = LogisticRegression(max_iter=500).fit(X, y)
    return X, base


@pytest.fixture(scope="module")
def coded2(clf_data):
    X, base = clf_data
    # A least-squares parity for a linear base is exact (up to rounding).
    return CodedPredictor(base, k=2, r=1, parity_estimator=LinearRegression(),
                          random_state=0).fit(X)


@pytest.fixture(scope="module")
def slow_pool(coded2):
    # One pool shared by several tests (worker start-up dominates test time):
    # base worker 0 is always slow, so under ParM's policy (decode_wait=0)
    # its batches come back decoded.
    pool = CodedPool(coded2, n_workers=2, faults={0: FaultSpec(service_time=0.2)},
                     batch_size=1, group_timeout=0.005, decode_wait=0)
    yield pool
    pool.close()


def _stream(pool, X, n, gap=0.002):
    futs = []
    for i in range(n):
        futs.append(pool.submit(X[i % len(X)][None, :]))
        time.sleep(gap)
    return futs


def test_coded_answers_match_base_and_flags(clf_data, slow_pool):
    X, base = clf_data
    pool = slow_pool
    futs = _stream(pool, X, 60)
    res = [f.result(timeout=30) for f in futs]
    st = pool.stats()
    raw = np.concatenate([r.raw for r in res])
    approx = np.concatenate([r.approximate for r in res])
    vals = np.concatenate([r.values for r in res])
    # Row by row, as the workers ran them (BLAS rounds a batch differently).
    ref_raw = np.vstack([raw_output(base, X[i:i + 1]) for i in range(60)])
    # Exact rows are bit-identical to the base model; decoded rows are flagged
    # and, the base being linear, equal to it up to the parity fit's rounding.
    np.testing.assert_array_equal(raw[~approx], ref_raw[~approx])
    assert approx.sum() > 0 and st["rows_reconstructed"] == approx.sum()
    np.testing.assert_allclose(raw[approx], ref_raw[approx], atol=1e-6)
    np.testing.assert_array_equal(vals, base.predict(X[:60]))
    assert st["requests_ok"] == 60 and st["requests_failed"] == 0
    assert st["tasks_cancelled"] + st["tasks_wasted"] > 0  # late work was dropped


def test_multirow_requests_split_and_reassembled(clf_data, slow_pool):
    X, base = clf_data
    futs = [slow_pool.submit(X[:23]), slow_pool.submit(X[23:24]), slow_pool.submit(X[24:61])]
    res = [f.result(timeout=30) for f in futs]
    np.testing.assert_array_equal(np.concatenate([r.values for r in res]), base.predict(X[:61]))
    assert [len(r.values) for r in res] == [23, 1, 37]


@pytest.mark.parametrize("backend", ["process", "loky"])
def test_kill_crash_and_hang_mid_stream_lose_no_query(clf_data, coded2, backend):
    X, base = clf_data
    # Base 0 crashes (SIGKILL to itself) in its 10th task, base 1 hangs in its
    # 12th (killed after hang_timeout); the parity worker is killed from outside.
    faults = {0: FaultSpec(service_time=0.005, kill_after=10),
              1: FaultSpec(service_time=0.005, hang_after=12),
              2: FaultSpec(service_time=0.005)}
    pool = CodedPool(coded2, n_workers=2, batch_size=1, group_timeout=0.005,
                     faults=faults, hang_timeout=3.0, backend=backend)
    try:
        pids_before = pool.worker_pids()
        futs = []
        for i in range(200):
            futs.append(pool.submit(X[i][None, :]))
            time.sleep(0.004)
            if i == 120:
                assert pool.kill_worker(2)
        outcomes = [f.exception(timeout=60) for f in futs]
        res = [f.result() for f in futs]
        # The hung batch was decoded long ago; the hung worker itself is only
        # killed after hang_timeout. Wait for that, then for the restarts.
        deadline = time.monotonic() + 60
        while pool.stats()["worker_restarts"] < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.wait_ready(60)
        st = pool.stats()
        pids_after = pool.worker_pids()
        # Restarted workers serve again (their one-shot faults are not repeated).
        np.testing.assert_array_equal(pool.predict(X[:7]), base.predict(X[:7]))
    finally:
        pool.close()
    assert all(e is None for e in outcomes)
    np.testing.assert_array_equal(np.concatenate([r.values for r in res]), base.predict(X[:200]))
    assert st["requests_ok"] == 200 and st["requests_failed"] == 0
    assert st["worker_restarts"] >= 3 and st["task_failures"] >= 2, (st, pids_before, pids_after)
    assert all(pids_after[s] != pids_before[s] for s in range(3))
    # Shutdown leaves neither the killed nor the replacement processes behind.
    assert _wait_dead(list(pids_before.values()) + list(pids_after.values())) == []


def test_timeout_close_and_no_orphans(clf_data):
    X, base = clf_data
    # One worker that hangs on its first task, with hang detection off: the
    # request must still end, with an explicit time-out.
    pool = CodedPool(base, mode="none", n_workers=1, faults=FaultSpec(hang_after=1),
                     hang_timeout=60.0, request_timeout=1.0)
    pids = list(pool.worker_pids().values())
    assert all(alive(p) for p in pids)
    fut = pool.submit(X[:3])
    with pytest.raises(QueryTimeout):
        fut.result(timeout=30)
    assert pool.stats()["requests_failed"] == 1
    # Requests still queued at close() fail explicitly; the hung worker is killed.
    futs = [pool.submit(X[i:i + 1]) for i in range(10)]
    pool.close()
    for f in futs:
        assert f.done() and isinstance(f.exception(), PoolClosedError)
    with pytest.raises(PoolClosedError):
        pool.submit(X[:1])
    assert _wait_dead(pids) == []


def test_bad_input_rejected(clf_data, coded2, slow_pool):
    X, base = clf_data
    with pytest.raises(TypeError, match="CodedPredictor"):
        CodedPool(base, mode="coded")
    with pytest.raises(ValueError, match="mode"):
        CodedPool(coded2, mode="fastest")
    with pytest.raises(ValueError, match="backup"):
        CodedPool(coded2, mode="backup")
    with pytest.raises(ValueError, match="batch_size"):
        CodedPool(coded2, batch_size=0)
    pool = slow_pool
    with pytest.raises(ValueError, match="features"):
        pool.submit(X[:2, :5])
    with pytest.raises(ValueError, match="2-D"):
        pool.submit(np.zeros((2, 2, 8)))
    with pytest.raises(ValueError, match="no rows"):
        pool.submit(np.zeros((0, 8)))
    # The pool keeps serving after rejecting bad input.
    np.testing.assert_array_equal(pool.predict(X[:5]), base.predict(X[:5]))


# "none" and "equal" differ only in worker count (same code path as the
# time-out test's "none" pool), so they are not started separately here.
@pytest.mark.parametrize("mode", ["replication", "backup"])
def test_baseline_modes(clf_data, coded2, mode):
    X, base = clf_data
    backup = make_backup_model(base, X) if mode == "backup" else None
    slow = FaultSpec(service_time=0.002, slow_prob=0.2, slow_scale=100.0, seed=1)
    n = 1 if mode == "replication" else 2
    pool = pool_for_mode(mode, coded2, n_workers=n, backup=backup, base_faults=slow,
                         extra_faults=FaultSpec(), batch_size=1, backup_timeout=0.05)
    with pool:
        n_slots = len(pool.worker_pids())
        futs = _stream(pool, X, 60, gap=0.004)
        res = [f.result(timeout=60) for f in futs]
        st = pool.stats()
    expect_slots = {"replication": 2, "backup": 3}[mode]
    assert n_slots == expect_slots
    vals = np.concatenate([r.values for r in res])
    approx = np.concatenate([r.approximate for r in res])
    ref = base.predict(X[:60])
    if mode == "backup":
        assert st["rows_backup"] == approx.sum() > 0  # slow base batches fell back
        np.testing.assert_array_equal(vals[~approx], ref[~approx])
        assert (vals[approx] == ref[approx]).mean() > 0.8  # a distilled linear backup
    else:
        assert not approx.any()
        np.testing.assert_array_equal(vals, ref)


def test_regression_multirow_partial_groups():
    X, y = make_regression(n_samples=600, n_features=5, random_state=1)
    base = LinearRegression().fit(X, y)
    cp = CodedPredictor(base, k=3, r=1, parity_estimator=LinearRegression(),
                        random_state=0).fit(X)
    # Slot 1 is slow; batches of unequal size and partial groups get padded.
    with CodedPool(cp, n_workers=3, batch_size=3, group_timeout=0.002, decode_wait=0,
                   faults={1: FaultSpec(service_time=0.2)}) as pool:
        futs = []
        for i in range(0, 120, 4):
            futs.append(pool.submit(X[i:i + 1 + i % 4]))
            time.sleep(0.002)
        res = [f.result(timeout=30) for f in futs]
        # A lone request after a pause: its group can only close by time-out.
        time.sleep(0.05)
        lone = pool.submit(X[200:202]).result(timeout=30)
        time.sleep(0.05)
        st = pool.stats()
    for i, r in zip(range(0, 120, 4), res):
        np.testing.assert_allclose(r.values, base.predict(X[i:i + 1 + i % 4]), rtol=1e-6,
                                   atol=1e-6)
    np.testing.assert_allclose(lone.values, base.predict(X[200:202]), rtol=1e-6, atol=1e-6)
    assert st["rows_reconstructed"] > 0 and st["groups_partial"] > 0, st


def test_fresh_coded_pool_answers_idle_requests_exactly(clf_data, coded2):
    # Finding: `dartboost serve --mode coded` answered its first 2 of 6 idle
    # requests approximately (cold workers, decode as soon as k of k + r).
    X, base = clf_data
    with CodedPool(coded2, n_workers=2) as pool:
        assert pool.health()["ready"]
        res = []
        for i in range(6):
            res.append(pool.submit(X[i:i + 1]).result(timeout=30))
            time.sleep(0.05)
    assert not any(r.degraded for r in res)
    np.testing.assert_array_equal(np.concatenate([r.values for r in res]), base.predict(X[:6]))


_ORPHAN_SCRIPT = """
import sys, time, joblib
from dartboost.serving import CodedPool, FaultSpec
if __name__ == "__main__":
    model = joblib.load(sys.argv[1])
    # A worker stuck in a task must not survive its pool either.
    pool = CodedPool(model, mode="none", n_workers=2, backend=sys.argv[2],
                     faults={0: FaultSpec(hang_after=1)})
    pool.submit([[0.0] * 8])
    print(" ".join(str(p) for p in pool.worker_pids().values()), flush=True)
    time.sleep(600)
"""


def test_workers_exit_when_pool_process_is_killed(clf_data, tmp_path, backend="process"):
    # loky workers run the same parent watch (installed by their initializer).
    import subprocess
    import sys

    import joblib

    import dartboost

    _, base = clf_data
    joblib.dump(base, tmp_path / "m.joblib")
    (tmp_path / "s.py").write_text(_ORPHAN_SCRIPT)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(dartboost.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, str(tmp_path / "s.py"), str(tmp_path / "m.joblib"),
                             backend], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
    finally:
        proc.kill()  # SIGKILL: no clean-up code runs in the pool's process
        proc.wait()
    assert _wait_dead(pids, timeout=15) == []
