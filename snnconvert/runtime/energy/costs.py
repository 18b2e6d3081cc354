"""The cost model: energy per operation, and what one op of a model did (:class:`LayerOps`).

``E = E_AC·(SOP + additions) + E_MAC·(MAC + float ops)`` with the 45 nm defaults ``E_AC = 0.9 pJ``
(a 32-bit float addition), ``E_MAC = 4.6 pJ``.
"""
from __future__ import annotations

from dataclasses import dataclass

#: what a :class:`LayerOps` counts
FIELDS = ("sops", "macs", "float_ops", "adds")


@dataclass(frozen=True)
class EnergyCosts:
    """Energy per operation in pJ; the defaults are 45 nm CMOS figures (32-bit float)."""

    ac_pj: float = 0.9
    mac_pj: float = 4.6

    def __post_init__(self) -> None:
        if self.ac_pj < 0 or self.mac_pj < 0:
            raise ValueError(f"energies per operation must be >= 0, got AC {self.ac_pj} pJ, MAC {self.mac_pj} pJ")

    def of(self, sops: float, macs: float, float_ops: float = 0, adds: float = 0) -> float:
        """``E_AC·(SOP + additions) + E_MAC·(MAC + float ops)`` in pJ."""
        return self.ac_pj * (sops + adds) + self.mac_pj * (macs + float_ops)


@dataclass
class LayerOps:
    """Operations of one op of the model, summed over steps and samples.

    Attributes:
        name: the module, or ``<owner>.<op>`` for a function call.
        kind: ``linear`` (Linear / Conv), ``product`` (a product of two streams), ``elementwise``
            (a floating-point op) or ``add`` (additions of real values, reductions).
        sops: synaptic operations (accumulates, additions) driven by events.
        macs: multiply-accumulates with real-valued operands.
        float_ops: other floating-point ops.
        adds: additions of real values.
        once: an op on the input alone (the encoding layer: counted once per sample).
    """

    name: str
    kind: str = "linear"
    sops: float = 0
    macs: float = 0
    float_ops: float = 0
    adds: float = 0
    once: bool = False
