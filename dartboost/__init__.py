"""dartboost: gradient-boosted trees with DART and MART, and the fault-tolerance
layer to serve them safely (coded prediction, ABFT-checked GPU inference, an
erasure-coded model store)."""

from ._build_check import check_built as _check_built  # noqa: E402

_check_built()

from .estimators import DartClassifier, DartRegressor  # noqa: E402
from .ranking import DartRanker  # noqa: E402
from ._model_format import FormatError  # noqa: E402

__version__ = _check_built.version()

__all__ = ["DartClassifier", "DartRanker", "DartRegressor", "FormatError", "__version__"]
