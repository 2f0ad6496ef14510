"""MART, the identity boosting scheme: every tree keeps weight ``learning_rate``.

A boosting scheme decides, around the growth of one iteration's trees, which
earlier iterations leave the scores and how weights change; the loop in
:mod:`dartboost._boosting` calls the same three members for every scheme:

- ``keeps_leaf_ids``: whether score keepers must keep each tree's cached
  leaf ids (only a scheme that revisits old trees needs them);
- ``begin_iteration(weights, rng, keepers)`` -> dropped iterations, after
  removing their contribution from every keeper's scores;
- ``end_iteration(keepers)`` -> ``(new_weight, scale)``: the new trees'
  weight and the factor applied to the dropped ones, whose rescaled
  contribution has been added back.

:class:`~dartboost._dart.DartScheme` is the other one.
"""
import numpy as np

_NOTHING = np.empty(0, dtype=np.int64)


class MartScheme:
    """Plain gradient boosting: nothing dropped, nothing rescaled.

    Parameters
    ----------
    learning_rate : float
    """

    keeps_leaf_ids = False

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate

    def begin_iteration(self, weights, rng, keepers):
        return _NOTHING

    def end_iteration(self, keepers):
        return self.learning_rate, 1.0
