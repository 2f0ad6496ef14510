"""Lazy access to torch and triton so ``import dartboost.gpu`` needs neither."""
import importlib
import os

_cache = {}


def _load(name, hint):
    mod = _cache.get(name)
    if mod is None:
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"dartboost.gpu needs {hint}; install it with `pip install dartboost[gpu]`"
            ) from exc
        _cache[name] = mod
    return mod


def torch():
    """The ``torch`` module (imported on first use)."""
    return _load("torch", "PyTorch")


def triton():
    """The ``triton`` module (imported on first use)."""
    return _load("triton", "Triton")


def tl():
    """``triton.language``."""
    return _load("triton.language", "Triton")


def triton_available():
    """True when triton can be imported."""
    if "triton" in _cache:
        return True
    try:
        triton()
        return True
    except ImportError:
        return False


def interpreter_active():
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``).

    Triton reads the variable when a kernel is decorated, so it must be set before
    the first dartboost kernel is built.
    """
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
