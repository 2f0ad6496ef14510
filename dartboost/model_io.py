"""Fitted dartboost models as plain state: a JSON-able header and numpy arrays.

A facade over the one model format (:mod:`dartboost._model_format`, the
estimators' ``_get_state``/``_set_state`` and
:class:`~dartboost._booster.Booster`), kept for the store, checkpoints, coded
prediction and serving. Nothing here uses pickle, and a state never makes the
loader import a module: classes come from the registry.
"""
from ._model_format import FORMAT_NAME, FORMAT_VERSION, FormatError, model_class, validate_state

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FormatError", "get_state", "set_state",
           "estimator_from_state"]


def get_state(est):
    """``(header, arrays)`` of a fitted (or being-fitted) estimator."""
    return est._get_state()


def set_state(est, header, arrays):
    """Load ``(header, arrays)`` into ``est`` (same class as in the header)."""
    return est._set_state(header, arrays)


def estimator_from_state(header, arrays, class_name=None):
    """A new estimator rebuilt from ``(header, arrays)``.

    ``class_name``, if given (the store records the qualified class beside the
    state), must name the same registered class as the state.
    """
    validate_state(header, arrays)
    cls = model_class(header.get("class"))
    if class_name is not None and model_class(class_name) is not cls:
        raise FormatError(f"class: {class_name!r} disagrees with the state's "
                          f"{header.get('class')!r}")
    return cls()._set_state(header, arrays)
