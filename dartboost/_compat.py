"""The private scikit-learn names dartboost uses, in one place.

scikit-learn does not promise stability for these (leading underscore or
``sklearn.utils._param_validation``), so they are imported only here, against
a tested version range: a release that moves them breaks one module, with a
clear message, instead of every estimator.
"""
import sklearn

#: Oldest scikit-learn with every name below (``validate_data`` is 1.6).
SKLEARN_MIN_VERSION = (1, 6)
#: Newest minor release the test suite has run against.
SKLEARN_MAX_TESTED_VERSION = (1, 9)


def parse_version(version):
    """``(major, minor)`` of a version string such as ``"1.9.1"`` or ``"1.10.dev0"``."""
    parts = version.split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def check_sklearn_version(version):
    """Raise ImportError if ``version`` is older than dartboost supports."""
    if parse_version(version) < SKLEARN_MIN_VERSION:
        raise ImportError(
            f"dartboost needs scikit-learn >= {'.'.join(map(str, SKLEARN_MIN_VERSION))}, "
            f"found {version}.")


check_sklearn_version(sklearn.__version__)

from sklearn.base import _fit_context  # noqa: E402
from sklearn.utils._param_validation import Interval, StrOptions  # noqa: E402
from sklearn.utils.validation import _check_sample_weight, validate_data  # noqa: E402

__all__ = ["Interval", "StrOptions", "_check_sample_weight", "_fit_context", "validate_data",
           "check_sklearn_version", "SKLEARN_MIN_VERSION", "SKLEARN_MAX_TESTED_VERSION"]
