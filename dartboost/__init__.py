"""dartboost: gradient-boosted trees with DART and MART, and the fault-tolerance
layer to serve them safely (coded prediction, ABFT-checked GPU inference, an
erasure-coded model store)."""

import os as _os

# The compiled kernels run many short OpenMP regions per tree. With libgomp's
# default spin-waiting, a machine busy with other processes (joblib workers,
# serving pools, a CI box) makes idle threads burn their time slice at every
# barrier: measured 5-6x slower fits under load. Passive waiting costs a few
# microseconds per region on an idle machine. Set before the runtime loads;
# a value the user set is kept.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from ._build_check import check_built as _check_built  # noqa: E402

_check_built()

from .estimators import DartClassifier, DartRegressor  # noqa: E402
from .ranking import DartRanker  # noqa: E402
from ._model_format import FormatError  # noqa: E402

__version__ = _check_built.version()

__all__ = ["DartClassifier", "DartRanker", "DartRegressor", "FormatError", "__version__"]
