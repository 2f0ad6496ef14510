"""Neural estimators and ABFT-checked GPU inference (torch, Triton).

Importing :mod:`dartboost.gpu` never requires torch: the heavy modules import it
lazily, so ``import dartboost`` works on machines without the ``gpu`` extra.

Public API
----------
NeuralClassifier, NeuralRegressor
    scikit-learn estimators backed by a torch MLP (or a small CNN for images),
    with optional ABFT-checked inference.
protect, unprotect, is_protected, protection_report, calibrate, check,
refresh_checksums, verify_weights, fault_log, ABFTFaultError, ABFTFaultWarning, FaultEvent
    Algorithm-based fault tolerance for ``nn.Linear``/``nn.Conv2d`` layers of any
    torch model: ``scheme='fused'`` (augmented cuBLAS GEMM, check fused into the epilogue),
    ``'global'``, ``'tile'`` (fused Triton kernel),
    ``'auto'`` (intensity-guided) or ``'off'``.
inject_fault, flip_bit, detection_report
    Bit-flip fault injection and detection statistics.
arithmetic_intensity, choose_scheme, device_ridge, auto_threshold, calibrate_auto
    The rules behind ``scheme='auto'`` (pure) and their device measurements.
plan_layer, default_calibration, measure_cost_model
    The cost model that ``scheme='auto'`` uses per layer and batch size.
"""
import importlib

_EXPORTS = {
    "NeuralClassifier": "._neural",
    "NeuralRegressor": "._neural",
    "protect": "._protect",
    "unprotect": "._protect",
    "is_protected": "._protect",
    "protection_report": "._protect",
    "calibrate": "._calibration",
    "check": "._protect",
    "refresh_checksums": "._protect",
    "verify_weights": "._protect",
    "fault_log": "._protect",
    "ABFTFaultError": "._protect",
    "ABFTFaultWarning": "._protect",
    "FaultEvent": "._protect",
    "measure_cost_model": "._calibration",
    "default_calibration": "._calibration",
    "plan_layer": "._auto",
    "inject_fault": "._faults",
    "flip_bit": "._faults",
    "detection_report": "._faults",
    "arithmetic_intensity": "._auto",
    "choose_scheme": "._auto",
    "device_ridge": "._calibration",
    "auto_threshold": "._calibration",
    "calibrate_auto": "._calibration",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
