"""Coded prediction: rebuild late or lost predictions from parity computations.

A model served from k instances gets r extra *parity* computations per group
of k queries, so that up to r missing predictions are decoded from the others
instead of waited for.

- :class:`CodedPredictor` (alias :class:`ParityModel`): parity models trained
  on encoded queries (ParM, SOSP 2019), for any fitted scikit-learn estimator.
- :class:`LearnedCode`: neural encoder/decoder trained end to end around a
  frozen differentiable base (Kosaian et al., 2018); needs torch.
- :class:`ParityEnsemble` and :class:`TreeRangeShard`: parity members for a
  group of different models (ensemble members, shards of a boosted model).
- :func:`degraded_mode_report`: available and degraded-mode accuracy,
  reconstruction quality and parity cost, beside an equal-cost backup
  (:func:`equal_cost_backup`).

torch is imported only when a learned code is fitted.
"""

from ._base import DECODED, DEFAULT, EXACT, UnrecoverableGroupError
from ._codes import (
    ConcatEncoder,
    FunctionEncoder,
    ImageConcatEncoder,
    SumEncoder,
    code_matrix,
    decode_amplification,
    linear_decode,
    proba_from_raw,
    raw_gives_proba,
    raw_output,
)
from ._backup import equal_cost_backup
from ._ensemble import ParityEnsemble, TreeRangeShard
from ._learned import LearnedCode
from ._parity import CodedPredictor, ParityModel, default_parity_estimator
from ._report import degraded_mode_report

__all__ = [
    "CodedPredictor",
    "ParityModel",
    "LearnedCode",
    "ParityEnsemble",
    "TreeRangeShard",
    "degraded_mode_report",
    "equal_cost_backup",
    "raw_output",
    "proba_from_raw",
    "raw_gives_proba",
    "code_matrix",
    "linear_decode",
    "decode_amplification",
    "default_parity_estimator",
    "SumEncoder",
    "ConcatEncoder",
    "ImageConcatEncoder",
    "FunctionEncoder",
    "UnrecoverableGroupError",
    "EXACT",
    "DECODED",
    "DEFAULT",
]
