"""Spiking runtime: neurons, spike-correct operators, state, monitors and the simulator."""
from snnconvert.runtime.neurons import IFNeuron
from snnconvert.runtime.operators import ExpectationCompensated
from snnconvert.runtime.state import StatefulModule, reset_states

__all__ = ["IFNeuron", "ExpectationCompensated", "StatefulModule", "reset_states"]
from snnconvert.runtime.monitors import LayerSpikes, SpikeMonitor
from snnconvert.runtime.simulator import SimulationResult, evaluate, simulate

__all__ += ["LayerSpikes", "SpikeMonitor", "SimulationResult", "evaluate", "simulate"]
