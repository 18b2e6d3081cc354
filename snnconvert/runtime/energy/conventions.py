"""A simulation's energy under three conventions, each beside the ANN's under the same one, and
beside the SNN's fair twin.

* ``every_op`` (ours, :mod:`snnconvert.runtime.energy.analysis`): ``E_AC·(SOP + additions) + E_MAC·(MAC +
  float ops)`` over every op of the graph (event-driven where the run was); the ANN: the same ops,
  every value real, one forward.
* ``papers`` (as MST and Spikformer report): ``E_AC·SOP + E_MAC·MAC`` of the ops on the input
  alone (the encoding layer); the ANN: ``E_MAC`` × the MACs of its weight layers and products.
  Float ops, additions and every other MAC are left out: a number to hold against a paper's
  table, not against hardware.
* ``memory``: ``E_mem`` per 32-bit on-chip access (default 5 pJ: a 45 nm 8 KB SRAM): a weight read
  per SOP and per MAC (no reuse: an upper bound; a weight-stationary dataflow reads fewer), and a
  read and a write of each neuron's potential at every step it runs; the ANN: a weight read per
  MAC, and a write and a read of each activation at the sites that are neurons in the SNN. The
  ``total`` adds it to ``every_op``.
* ``quantized_twin``: the QCFS ANN run as the quantized network it is (Yan et al., arXiv
  2409.08290): activations of ``b = ⌈log₂(L+1)⌉`` bits (8 for the image), ``w``-bit weights
  (default 8), every MAC of a weight layer or a product an integer multiply of ``b × w`` bits
  (``E_mult = 0.2 pJ · b·w / 64``, Horowitz's 8-bit multiply at 45 nm, scaled with the bits; an
  upper bound for a product of two b-bit activations) and a 32-bit integer add (0.1 pJ); its float
  ops and additions as in ``every_op``. The SNN's figure beside it is its ``every_op`` one.

``spikes_per_synapse``: the SNN's synaptic operations per inference over its synapses (the MACs the
ANN does in the ops the SNN feeds spikes): Dampfhoffer et al. (IEEE TETCI 2023) find IF SNNs only
compete with efficient ANN hardware between 0.15 and 1.38.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from snnconvert.runtime.energy.costs import EnergyCosts, LayerOps

@dataclass(frozen=True)
class TwinCosts:
    """The integer datapath of the quantized twin and the memory access of the memory convention (pJ)."""

    weight_bits: int = 8
    multiply_8bit_pj: float = 0.2
    add_32bit_pj: float = 0.1
    access_pj: float = 5.0

    def mac_pj(self, activation_bits: int) -> float:
        return self.multiply_8bit_pj * activation_bits * self.weight_bits / 64 + self.add_32bit_pj


def activation_bits(levels: int) -> int:
    """Bits of a QCFS activation with L levels (L + 1 values): ``⌈log₂(L+1)⌉``."""
    return max(1, math.ceil(math.log2(levels + 1)))


def _sum(ops: list[LayerOps], field: str, keep=lambda op: True) -> float:
    return float(sum(getattr(op, field) for op in ops if keep(op)))


def energy_conventions(snn: list[LayerOps], ann: list[LayerOps], samples: int, neuron_steps: float,
                       neurons: float, levels: int | None, costs: EnergyCosts = EnergyCosts(),
                       twin: TwinCosts = TwinCosts()) -> dict:
    """Energy per inference in µJ, ``{convention: {"snn", "ann", "ratio"}}``, and spikes per synapse.

    Args:
        snn: a simulation's per-op totals over ``samples`` samples.
        ann: the same ops, dense, per sample (``OpAccounting(snn, dense=True).per_sample()``).
        neuron_steps: neurons × steps the SNN ran, per sample; ``neurons``: its neurons.
        levels: the QCFS levels L (None: no quantized twin).
    """
    per = 1.0 / max(1, samples)
    sops, macs, floats, adds = (_sum(snn, f) * per for f in ("sops", "macs", "float_ops", "adds"))
    ann_macs, ann_floats, ann_adds = (_sum(ann, f) for f in ("macs", "float_ops", "adds"))
    encoding_macs = _sum(snn, "macs", lambda op: op.once) * per
    figures = {
        "every_op": (costs.of(sops, macs, floats, adds), costs.of(0, ann_macs, ann_floats, ann_adds)),
        "papers": (costs.ac_pj * sops + costs.mac_pj * encoding_macs, costs.mac_pj * ann_macs),
        "memory": (twin.access_pj * (sops + macs + 2 * neuron_steps), twin.access_pj * (ann_macs + 2 * neurons)),
    }
    figures["total"] = tuple(a + b for a, b in zip(figures["every_op"], figures["memory"]))
    if levels is not None:
        bits = activation_bits(levels)
        integer = sum(op.macs * twin.mac_pj(8 if op.once else bits) for op in ann if op.kind in ("linear", "product"))
        rest = costs.of(0, sum(op.macs for op in ann if op.kind not in ("linear", "product")), ann_floats, ann_adds)
        figures["quantized_twin"] = (figures["every_op"][0], integer + rest)
    spiking = {op.name for op in snn if op.sops > 0}
    synapses = sum(op.macs for op in ann if op.name in spiking)
    out = {name: {"snn_uj": snn_pj / 1e6, "ann_uj": ann_pj / 1e6, "ratio": snn_pj / ann_pj if ann_pj else None}
           for name, (snn_pj, ann_pj) in figures.items()}
    out["quantized_twin_activation_bits"] = activation_bits(levels) if levels is not None else None
    out["spikes_per_synapse"] = sops / synapses if synapses else None
    return out
