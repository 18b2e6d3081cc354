"""Spiking runtime: neurons, spike-correct operators, state, monitors and the simulator."""
from snnconvert.runtime.coding import CODINGS, InputOnce, OnceOffset
from snnconvert.runtime.masking import RandomSpikeMask, reseed_masks
from snnconvert.runtime.execution import Execution, SimulationOptions
from snnconvert.runtime.monitors import SpikeMonitor
from snnconvert.runtime.neurons import NEURONS, IFNeuron, SignedIFNeuron
from snnconvert.runtime.operators import ExpectationCompensated
from snnconvert.runtime.simulator import SimulationResult, Watch, evaluate, simulate
from snnconvert.runtime.state import StatefulModule, reset_states, set_steps
from snnconvert.runtime.statistics import LayerSpikes

__all__ = ["CODINGS", "InputOnce", "OnceOffset", "NEURONS", "IFNeuron", "SignedIFNeuron", "ExpectationCompensated", "StatefulModule", "reset_states",
           "set_steps", "Execution", "SimulationOptions", "RandomSpikeMask", "reseed_masks", "LayerSpikes", "SpikeMonitor", "SimulationResult", "Watch", "evaluate", "simulate"]
