"""dartboost: gradient-boosted trees with DART and MART, and the fault-tolerance
layer to serve them safely (coded prediction, ABFT-checked GPU inference, an
erasure-coded model store)."""

from .estimators import DartClassifier, DartRegressor
from .ranking import DartRanker

__version__ = "0.1.0"

__all__ = ["DartClassifier", "DartRanker", "DartRegressor", "__version__"]
