"""Distributed training on Dask (``dask[distributed]``).

Data-parallel histogram boosting: partitions stay on the workers, which
bin them with globally agreed thresholds, build histograms of their rows and
keep their rows' scores; the client sums the histograms, decides every split
and runs the DART scheme once. The model equals a single-machine fit on the
same data and seed, and a fit survives a lost worker by resuming from its
coded checkpoint. Regressor, classifier and ranker (queries within one
partition each), with categorical features (category lists agreed across
partitions), eval sets and early stopping (metrics computed partition-wise),
constraints, class weights and callable objectives. See ``docs/dask.md``.
"""
from ._distributed import DataLost
from ._estimators import DaskDartClassifier, DaskDartRanker, DaskDartRegressor

__all__ = ["DaskDartClassifier", "DaskDartRanker", "DaskDartRegressor", "DataLost"]
