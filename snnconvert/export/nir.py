"""NIR (the Neuromorphic Intermediate Representation): what keeps a model from mapping onto it exactly.

NIR's neurons integrate in continuous time (``τ·dv/dt = …``; a runtime picks the step), fire when
``v > θ`` and send unit spikes; its IF and LIF start at ``v = 0``. snnconvert's neurons step in
discrete time and fire at ``v ≥ θ``; a converted IF neuron also starts at ``v(0) = θ/2`` (the QCFS
shift) and sends ``θ·s``, and expectation-compensated ops (softmax, products of two spike
streams, norms) and spike masks have no NIR primitive. So no model snnconvert builds maps
exactly today, and :func:`nir_blockers` says why, op by op: an export to NIR is refused with its
first reason rather than written approximately.
"""
from __future__ import annotations

from torch import nn

from snnconvert.graph.edit import in_run_order
from snnconvert.runtime.masking import RandomSpikeMask
from snnconvert.runtime.neurons import IFNeuron, SpikingNeuron
from snnconvert.runtime.operators import ExpectationCompensated
from snnconvert.runtime.state import StatefulModule


def nir_blockers(snn: nn.Module) -> list[str]:
    """Why each stateful module of ``snn`` has no exact NIR form (``name: reason``), in the order they run."""
    reasons = []
    for name, module in in_run_order(snn):
        if isinstance(module, IFNeuron):
            v0 = f"{float(module.initial_potential):g}·θ" if module.initial_potential.numel() == 1 else "a per-channel"
            reasons.append(f"{name}: {type(module).__name__} steps in discrete time, fires at v ≥ θ from v(0) = {v0} "
                           "and sends θ·s; NIR's IF integrates in continuous time, fires at v > θ from v = 0 and "
                           "sends unit spikes")
        elif isinstance(module, SpikingNeuron):
            reasons.append(f"{name}: {type(module).__name__} steps in discrete time and fires at v ≥ θ; NIR's "
                           "neurons integrate in continuous time and fire at v > θ")
        elif isinstance(module, ExpectationCompensated):
            reasons.append(f"{name}: an expectation-compensated {module.fn.extra_repr() or type(module.fn).__name__} "
                           "has no NIR primitive")
        elif isinstance(module, RandomSpikeMask):
            reasons.append(f"{name}: random spike masking has no NIR primitive")
        elif isinstance(module, StatefulModule):
            reasons.append(f"{name}: {type(module).__name__} (a step-dependent input) has no NIR primitive")
    return reasons
