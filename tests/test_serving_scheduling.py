"""Deterministic tests of CodedPool's scheduling with an in-process fake backend.

``ManualBackend`` holds every task on its slot until the test finishes, fails
or kills it, and ``ManualClock`` is the pool's only time source; with
``threaded=False`` the dispatcher runs only in ``pool.step()``. So batching,
groups, decode waits, retries, hangs and the containment of errors are tested
step by step, with no sleeps and no processes. (A few real-process smoke tests
are in test_serving_pool.py.)
"""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression

from dartboost.coded import CodedPredictor
from dartboost.serving import CodedPool
from dartboost.serving._errors import ModelError, PoolBrokenError, QueryError, QueryTimeout
from dartboost.serving._inprocess import ManualBackend, ManualClock

BAD = 1234.5  # a feature value the fake model "fails" on


@pytest.fixture(scope="module")
def clf():
    X, y = make_classification(n_samples=400, n_features=5, n_informative=3, random_state=0)
    base = LogisticRegression(max_iter=500).fit(X, y)
    coded = CodedPredictor(base, k=2, r=1, parity_estimator=LinearRegression(),
                           random_state=0).fit(X)
    return X, base, coded


def _pool(model, **kw):
    backend = kw.pop("backend", None) or ManualBackend()
    clock = kw.pop("clock", None) or ManualClock()
    kw.setdefault("batch_size", 1)
    kw.setdefault("group_timeout", 1.0)
    pool = CodedPool(model, backend=backend, clock=clock, threaded=False, **kw)
    return pool, backend, clock


def _base_slots(pool):
    return [s for s, r in pool.roles().items() if r == "base"]


def _serve_group(pool, be, clock, X, parity_first=True):
    """Two one-row requests in one group; the parity and slot 0 answer before slot 1."""
    futs = [pool.submit(X[i:i + 1]) for i in range(2)]
    pool.step()
    s0, s1 = _base_slots(pool)
    extra = [s for s in be.busy() if s not in (s0, s1)]
    clock.advance(0.001)
    if parity_first:
        for s in extra:
            be.finish(s)
    be.finish(s0)
    pool.step()
    clock.advance(0.001)
    if s1 in be.running:
        be.finish(s1)
    pool.step()
    return [f.result(timeout=0) for f in futs]


def test_healthy_pool_answers_exactly_by_default(clf):
    # Finding: with the old default decode_wait=0 a healthy pool answered a
    # share of its queries by reconstruction. Now nothing is late or lost,
    # so every answer is the base model's own.
    X, base, coded = clf
    pool, be, clock = _pool(coded)
    res = []
    for g in range(30):
        res += _serve_group(pool, be, clock, X[2 * g:2 * g + 2])
    assert not any(r.degraded for r in res)
    assert pool.stats()["rows_reconstructed"] == 0
    np.testing.assert_array_equal(np.concatenate([r.values for r in res]), base.predict(X[:60]))
    pool.close()


def test_parm_policy_is_still_available(clf):
    X, base, coded = clf
    pool, be, clock = _pool(coded, decode_wait=0)
    res = _serve_group(pool, be, clock, X[:2])
    assert [r.degraded for r in res] == [False, True]
    pool.close()


def test_late_batch_is_decoded_against_observed_latencies(clf):
    X, base, coded = clf
    pool, be, clock = _pool(coded, late_factor=2.0)
    for g in range(12):  # 24 healthy latencies of 1-2 ms
        _serve_group(pool, be, clock, X[2 * g:2 * g + 2])
    late_after = pool.stats()["late_after_ms"] / 1e3
    assert 0 < late_after < 0.01
    futs = [pool.submit(X[100 + i:101 + i]) for i in range(2)]
    pool.step()
    s0, s1 = _base_slots(pool)
    be.finish(s0)
    be.finish_all(kinds=("parity",))
    pool.step()
    assert futs[0].done() and not futs[1].done()
    clock.advance(late_after / 2)
    pool.step()
    assert not futs[1].done()  # not late yet: wait for the exact answer
    clock.advance(late_after)
    pool.step()
    res = futs[1].result(timeout=0)
    assert res.degraded
    np.testing.assert_allclose(res.raw, coded.base_predict_raw(X[101:102]), atol=1e-6)
    pool.close()


def test_lost_batch_is_decoded_at_once_and_retry_cancelled(clf):
    X, base, coded = clf
    pool, be, clock = _pool(coded)
    futs = [pool.submit(X[i:i + 1]) for i in range(2)]
    pool.step()
    s0, s1 = _base_slots(pool)
    be.finish(s0)
    be.finish_all(kinds=("parity",))
    pool.step()
    be.die(s1)  # its worker dies mid-task
    pool.step()
    res = futs[1].result(timeout=0)
    assert res.degraded and pool.stats()["worker_restarts"] == 1
    assert not be.running  # the retry was cancelled, not run
    pool.close()


def test_group_that_cannot_be_decoded_waits_for_retries(clf):
    # Both slots of a k = 2, r = 1 group lost: the parity alone determines
    # nothing, so the pool neither decodes nor answers with a default: it
    # waits for the retries (once one is in, the other, still lost, may be
    # decoded from it; either way the answer is right).
    X, base, coded = clf
    pool, be, clock = _pool(coded)
    futs = [pool.submit(X[i:i + 1]) for i in range(2)]
    pool.step()
    s0, s1 = _base_slots(pool)
    be.finish_all(kinds=("parity",))
    be.die(s0)
    be.die(s1)
    pool.step()
    assert not any(f.done() for f in futs)
    be.finish_all()
    pool.step()
    res = [f.result(timeout=0) for f in futs]
    assert sum(r.degraded for r in res) <= 1
    for i, r in enumerate(res):
        np.testing.assert_allclose(r.raw, coded.base_predict_raw(X[i:i + 1]), atol=1e-6)
    assert pool.stats()["retries"] == 2
    pool.close()


def test_hung_worker_is_killed_and_batch_retried(clf):
    X, base, coded = clf
    pool, be, clock = _pool(base, mode="none", n_workers=1, hang_timeout=5.0)
    fut = pool.submit(X[:1])
    pool.step()
    clock.advance(6.0)
    pool.step()  # hang detected: killed, restarted, retried
    assert pool.stats()["worker_restarts"] == 1 and be.busy() == [0]
    be.finish(0)
    pool.step()
    np.testing.assert_array_equal(fut.result(timeout=0).values, base.predict(X[:1]))
    pool.close()


def test_request_deadline_fires_on_the_injected_clock(clf):
    X, base, coded = clf
    pool, be, clock = _pool(base, mode="none", n_workers=1, request_timeout=5.0,
                            hang_timeout=100.0)
    fut = pool.submit(X[:1])
    pool.step()
    clock.advance(4.0)
    pool.step()
    assert not fut.done()
    clock.advance(2.0)
    pool.step()
    assert isinstance(fut.exception(timeout=0), QueryTimeout)
    pool.close()


def test_answered_requests_are_not_kept_until_their_timeout(clf):
    # Finding (issue 15, HTTP p99): every request kept a deadline timer holding it,
    # its rows, future and result for the whole request_timeout; at thousands of
    # requests per second 10^5 live objects that every garbage collection scanned.
    X, base, coded = clf
    pool, be, clock = _pool(base, mode="none", n_workers=1, request_timeout=600.0,
                            hang_timeout=1e6)
    be.auto = True
    futs = []
    for i in range(300):
        futs.append(pool.submit(X[i:i + 1]))
        pool.step()
        clock.advance(0.001)
        pool.step()
    assert all(f.result(timeout=0).values.tolist() == base.predict(X[i:i + 1]).tolist()
               for i, f in enumerate(futs))
    held = len(pool._timers) + len(getattr(pool, "_expiry", ()))
    assert held <= 5, f"{held} timers/requests still held after all were answered"
    # The deadline still fires for a request that is not answered.
    be.auto = False
    late = pool.submit(X[:1])
    pool.step()
    clock.advance(601.0)
    pool.step()
    assert isinstance(late.exception(timeout=0), QueryTimeout)
    pool.close()


def test_batching_cuts_pending_rows_into_batches(clf):
    X, base, coded = clf
    pool, be, clock = _pool(base, mode="none", n_workers=1, batch_size=4)
    futs = [pool.submit(X[i:i + 1]) for i in range(10)]
    futs.append(pool.submit(X[10:16]))
    pool.step()
    for _ in range(10):
        be.finish_all()
        pool.step()
    assert [n for _, kind, _, n in be.log if not kind.startswith("warm")] == [4, 4, 4, 4]
    out = np.concatenate([f.result(timeout=0).values for f in futs])
    np.testing.assert_array_equal(out, base.predict(X[:16]))
    pool.close()


def test_every_slot_warms_up_before_the_pool_is_ready(clf):
    X, base, coded = clf

    class Counting(ManualBackend):
        def warm_up(self, slot, kind, index, X, timeout=None):
            self.warmed = getattr(self, "warmed", []) + [(slot, kind)]
            return super().warm_up(slot, kind, index, X, timeout)

    pool, be, clock = _pool(coded, backend=Counting())
    assert sorted(be.warmed) == [(0, "base"), (1, "base"), (2, "parity")]
    assert pool.health() == {"status": "ok", "ready": True}
    pool.close()
    assert pool.health()["status"] == "closed"


def test_non_finite_queries_are_refused_at_submit(clf):
    # Finding: Infinity / 1e999 was not rejected at submit and failed the
    # whole batch it shared with valid requests.
    X, base, coded = clf
    pool, be, clock = _pool(coded, batch_size=8)
    bad = X[:1].copy()
    bad[0, 2] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        pool.submit(bad)
    bad[0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pool.submit(bad)  # LogisticRegression does not accept NaN
    pool.close()


def test_nan_queries_reach_a_base_that_accepts_nan():
    from dartboost import DartRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    base = DartRegressor(n_estimators=5, n_jobs=1, random_state=0).fit(X, np.nan_to_num(X[:, 0]))
    pool, be, clock = _pool(base, mode="none", n_workers=1, backend=ManualBackend(auto=True))
    fut = pool.submit(X[:5])
    pool.step()
    np.testing.assert_array_equal(fut.result(timeout=0).values, base.predict(X[:5]))
    with pytest.raises(ValueError, match="infinite"):
        pool.submit(np.full((1, 4), np.inf))
    pool.close()


@pytest.mark.parametrize("how", ["raises", "non_finite"])
def test_one_bad_query_never_fails_its_batch_mates(clf, how):
    X, base, coded = clf
    be = ManualBackend(auto=True)
    if how == "raises":
        be.error_hook = lambda slot, kind, Xb: (ValueError("bad row") if kind == "base"
                                                and (Xb[:, 0] == BAD).any() else None)
    else:
        def hook(slot, kind, Xb, raw):
            raw = raw.copy()
            raw[Xb[:, 0] == BAD] = np.nan
            return raw
        be.output_hook = hook
    pool, _, clock = _pool(coded, batch_size=8, backend=be)
    bad = X[50:51].copy()
    bad[0, 0] = BAD
    futs = [pool.submit(X[i:i + 1]) for i in range(7)] + [pool.submit(bad)]
    futs += [pool.submit(X[10:13])]
    pool.step()
    assert isinstance(futs[7].exception(timeout=0), ModelError)
    good = [f for i, f in enumerate(futs) if i != 7]
    out = np.concatenate([f.result(timeout=0).values for f in good])
    np.testing.assert_array_equal(out, base.predict(np.vstack([X[:7], X[10:13]])))
    assert pool.stats()["batch_splits"] >= 1
    assert not any(f.result(timeout=0).degraded for f in good)
    pool.close()


def test_decode_error_does_not_kill_the_dispatcher(clf):
    # Finding: an exception in decode() killed the dispatcher thread; every
    # later request hung and /health still said ok.
    X, base, coded = clf
    pool, be, clock = _pool(coded, decode_wait=0)

    def broken_decode(*a, **k):
        raise ValueError("available base outputs contain NaN or infinity.")

    pool.coded = type("C", (), {})()  # a stand-in whose decode always raises
    for name in ("encode", "can_decode", "outputs_to_prediction", "k", "r"):
        setattr(pool.coded, name, getattr(coded, name))
    pool.coded.decode = broken_decode
    res = _serve_group(pool, be, clock, X[:2])
    assert not any(r.degraded for r in res)  # answered exactly instead
    assert pool.stats()["decode_errors"] == 1
    assert pool.health()["status"] == "ok"
    pool.close()


def test_handler_error_fails_only_its_requests(clf):
    X, base, coded = clf
    pool, be, clock = _pool(base, mode="none", n_workers=1, backend=ManualBackend(auto=True))
    real = pool._on_result
    calls = []

    def flaky(t, raw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(t, raw)

    pool._on_result = flaky
    f1 = pool.submit(X[:1])
    pool.step()
    f2 = pool.submit(X[1:2])
    pool.step()
    assert isinstance(f1.exception(timeout=0), QueryError)
    np.testing.assert_array_equal(f2.result(timeout=0).values, base.predict(X[1:2]))
    assert pool.health()["status"] == "ok" and pool.stats()["internal_errors"] == 1
    pool.close()


def test_unattributable_error_breaks_the_pool_loudly(clf):
    X, base, coded = clf
    pool, be, clock = _pool(base, mode="none", n_workers=1)
    fut = pool.submit(X[:1])
    pool.step()

    def bad_restart(*a):
        raise RuntimeError("dispatcher state corrupt")

    pool._on_restarted = bad_restart
    be.die(0)
    pool.step()
    assert isinstance(fut.exception(timeout=0), (PoolBrokenError, QueryError))
    assert pool.health()["status"] == "broken"
    with pytest.raises(PoolBrokenError):
        pool.submit(X[:1])
    pool.close()


def test_threaded_dispatcher_failure_reports_broken(clf):
    import time

    X, base, coded = clf
    pool = CodedPool(base, mode="none", n_workers=1, backend=ManualBackend(auto=True))
    fut = pool.submit(X[:1])
    assert fut.result(timeout=10).values.shape == (1,)

    def bad(*a):
        raise RuntimeError("boom")

    pool._dispatch = bad  # not attributable to any request: the loop stops
    f2 = pool.submit(X[:1])
    with pytest.raises(PoolBrokenError):
        f2.result(timeout=10)
    for _ in range(100):
        if pool.health()["status"] == "broken":
            break
        time.sleep(0.01)
    assert pool.health()["status"] == "broken"
    pool.close()


def test_backup_mode_exact_when_healthy_backup_when_lost(clf):
    # The old default (backup after the median latency) answered about half
    # of a healthy pool's queries with the backup.
    X, base, coded = clf
    from dartboost.serving import make_backup_model

    backup = make_backup_model(base, X)
    pool, be, clock = _pool(coded, mode="backup", backup=backup, n_workers=2)
    base_slots = _base_slots(pool)
    futs = []
    for i in range(30):
        futs.append(pool.submit(X[i:i + 1]))
        pool.step()
        clock.advance(0.001)
        be.finish_all(kinds=("backup",))  # the backup is always first
        pool.step()
        be.finish_all()
        pool.step()
    assert not any(f.result(timeout=0).degraded for f in futs)
    fut = pool.submit(X[40:41])
    pool.step()
    be.finish_all(kinds=("backup",))
    pool.step()
    slot = next(s for s in base_slots if s in be.running)
    be.die(slot)
    pool.step()
    res = fut.result(timeout=0)
    assert res.degraded and pool.stats()["rows_backup"] == 1
    pool.close()


def test_cancelled_future_does_not_break_the_pool(clf):
    X, base, coded = clf
    pool, be, clock = _pool(base, mode="none", n_workers=1)
    fut = pool.submit(X[:1])
    pool.step()
    assert fut.cancel()  # the caller gave up (e.g. an HTTP deadline)
    be.finish(0)
    pool.step()
    f2 = pool.submit(X[1:2])
    pool.step()
    be.finish(0)
    pool.step()
    np.testing.assert_array_equal(f2.result(timeout=0).values, base.predict(X[1:2]))
    assert pool.health()["status"] == "ok"
    pool.close()


def test_large_request_does_not_hold_small_ones_back(clf):
    # Finding: one 150k-row request delayed small requests by 9.6 s (FIFO
    # batches). Rows are cut into batches only as workers can take them, and
    # round robin across requests: a small request waits for one batch of the
    # big one, not for all of them.
    X, base, coded = clf
    pool, be, clock = _pool(base, mode="none", n_workers=1, batch_size=8)
    big = pool.submit(np.repeat(X[:1], 400, axis=0))
    pool.step()
    small = pool.submit(X[1:2])
    pool.step()
    batches = 0
    while not small.done() and batches < 60:
        be.finish_all()
        pool.step()
        batches += 1
    # one running and one queued batch of the big request, then its turn
    assert small.done() and batches <= 4
    np.testing.assert_array_equal(small.result(timeout=0).values, base.predict(X[1:2]))
    while not big.done() and batches < 200:
        be.finish_all()
        pool.step()
        batches += 1
    np.testing.assert_array_equal(big.result(timeout=0).values,
                                  base.predict(np.repeat(X[:1], 400, axis=0)))
    pool.close()
