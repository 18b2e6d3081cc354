"""snnconvert: ANN-to-SNN conversion of vision transformers and CNNs (Masked Spiking Transformer
pipeline): ``prepare`` → ``calibrate`` → ``convert`` → ``simulate``."""
from snnconvert.convert import NeuronConfig, convert, float_operations
from snnconvert.prepare import PrepareConfig, prepare, prepare_with_report
from snnconvert.runtime import IFNeuron, reset_states

__version__ = "0.1.0"
__all__ = ["NeuronConfig", "PrepareConfig", "convert", "float_operations", "prepare", "prepare_with_report", "IFNeuron",
           "reset_states"]
