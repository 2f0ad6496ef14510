"""Thread defaults (``_cext/_openmp.pyx``, ``_common.effective_n_threads``) and the
scoped OpenMP wait policy of ``_cext/__init__.py``."""
import os
import subprocess
import sys

import pytest
from threadpoolctl import threadpool_limits

from dartboost import _common
from dartboost._cext import _openmp
from dartboost._common import available_cpus, effective_n_threads


def _python(code, **env):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=120, check=True)


def test_threads_in_region_reports_the_team_size():
    assert _openmp.threads_in_region(1) == 1
    assert _openmp.threads_in_region(2) == 2


@pytest.mark.skipif(available_cpus() < 2, reason="needs 2 CPUs to tell 1 thread from all")
def test_threadpool_limits_bind_the_default():
    assert effective_n_threads(None) >= 2
    with threadpool_limits(limits=1, user_api="openmp"):
        n = effective_n_threads(None)
        assert n == 1
        # the kernels get that count, and a region asked for it runs on one thread
        assert _openmp.threads_in_region(n) == 1
    # an explicit n_jobs is the user's choice and is not capped by the limit
    with threadpool_limits(limits=1, user_api="openmp"):
        assert effective_n_threads(2) == 2


@pytest.mark.skipif(available_cpus() < 2, reason="needs 2 CPUs to tell 1 thread from all")
def test_omp_num_threads_binds_the_default():
    out = _python("from dartboost._common import effective_n_threads as e; print(e(None))",
                  OMP_NUM_THREADS="1")
    assert out.stdout.strip() == "1"


def test_cpu_quota_caps_every_default(monkeypatch):
    # a cgroup quota of one CPU (as joblib's cpu_count reports it) caps None and -1
    monkeypatch.setattr(_common, "available_cpus", lambda: 1)
    assert effective_n_threads(None) == 1
    assert effective_n_threads(-1) == 1
    assert effective_n_threads(8) == 1


def test_negative_n_jobs_counts_from_the_available_cpus():
    n = available_cpus()
    assert effective_n_threads(-1) == n
    assert effective_n_threads(-n - 5) == 1


def test_import_changes_no_environment_variable():
    # scikit-learn's own import sets KMP_* variables; import it first so the
    # comparison sees dartboost's import alone
    code = ("import os, sklearn.utils\n"
            "before = dict(os.environ)\n"
            "import dartboost, dartboost._cext\n"
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
            "print('ok')")
    assert _python(code).stdout.strip() == "ok"


def test_kernels_runtime_waits_passively_unless_the_user_chose():
    # libgomp prints its settings at load with OMP_DISPLAY_ENV=verbose; a
    # passive policy shows as a spin count of 0 (the default spins 300000)
    code = "import dartboost._cext._openmp"
    quiet = _python(code, OMP_DISPLAY_ENV="verbose")
    assert "GOMP_SPINCOUNT = '0'" in quiet.stderr
    chosen = _python(code, OMP_DISPLAY_ENV="verbose", OMP_WAIT_POLICY="ACTIVE")
    assert "GOMP_SPINCOUNT = '0'" not in chosen.stderr
