"""Fault events and the exceptions/warnings that report them."""
from dataclasses import dataclass, field

from ._abft import DEFAULT_ALPHA

__all__ = ["ABFTFaultError", "ABFTFaultWarning", "FaultEvent", "fault_message"]


class ABFTFaultError(RuntimeError):
    """A fault was detected and confirmed by recomputation.

    Attributes
    ----------
    events : list of FaultEvent
    """

    def __init__(self, message, events):
        super().__init__(message)
        self.events = events


class ABFTFaultWarning(RuntimeWarning):
    """Issued by ``on_fault='flag'`` when a confirmed fault was detected."""


@dataclass
class FaultEvent:
    """One flagged layer call after recompute-to-confirm.

    Attributes
    ----------
    layer : str
        Qualified name of the layer in the protected model.
    scheme : str
        ``'global'`` or ``'tile'``.
    kind : str
        ``'transient'``, ``'weight'`` or ``'unconfirmed'``.
    ratio : float
        Largest residual / tolerance ratio seen (``inf`` for NaN/Inf).
    recomputed_ratio : float
        Ratio of the plain recomputation (float64 reference check).
    where : list
        Flagged rows (global) or ``(row_block, col_block)`` tiles (tile).
    alpha : float
    """

    layer: str
    scheme: str
    kind: str
    ratio: float
    recomputed_ratio: float
    where: list = field(default_factory=list)
    alpha: float = DEFAULT_ALPHA

    @property
    def confirmed(self):
        return self.kind in ("transient", "weight")


def fault_message(events):
    """Human-readable summary of confirmed events (used by errors and warnings)."""
    lines = [f"  {e.layer} [{e.scheme}]: {e.kind} fault, ratio {e.ratio:.3g} > alpha "
             f"{e.alpha:g} (recomputed {e.recomputed_ratio:.3g})" for e in events]
    return "ABFT detected confirmed fault(s):\n" + "\n".join(lines)
