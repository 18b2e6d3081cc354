"""Spiking runtime: neurons, spike-correct operators, state, monitors and the simulator."""
from snnconvert.runtime.coding import CODINGS, InputOnce, OnceOffset
from snnconvert.runtime.masking import RandomSpikeMask, reseed_masks
from snnconvert.runtime.monitors import LayerSpikes, SpikeMonitor
from snnconvert.runtime.neurons import NEURONS, IFNeuron, SignedIFNeuron
from snnconvert.runtime.operators import ExpectationCompensated
from snnconvert.runtime.simulator import SimulationResult, evaluate, simulate
from snnconvert.runtime.state import StatefulModule, reset_states

__all__ = ["CODINGS", "InputOnce", "OnceOffset", "NEURONS", "IFNeuron", "SignedIFNeuron", "ExpectationCompensated", "StatefulModule", "reset_states",
           "RandomSpikeMask", "reseed_masks", "LayerSpikes", "SpikeMonitor", "SimulationResult", "evaluate", "simulate"]
