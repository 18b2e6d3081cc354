"""The QCFS → IF rewrite of a prepared model: neurons, folded BatchNorms, spike-correct operators."""
from snnconvert.convert.config import NeuronConfig
from snnconvert.convert.convert import MODES, FloatOp, convert, float_operations
from snnconvert.convert.fold import fold_batchnorms
from snnconvert.runtime.masking import RandomSpikeMask

__all__ = ["NeuronConfig", "MODES", "FloatOp", "convert", "float_operations", "fold_batchnorms", "RandomSpikeMask"]
