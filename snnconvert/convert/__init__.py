"""ANN surgery and conversion over the traced graph: prepare → (train / calibrate) → convert."""
from snnconvert.convert.config import MASK_TARGETS, MaskConfig, NeuronConfig, PrepareConfig
from snnconvert.convert.convert import MODES, FloatOp, convert, float_operations
from snnconvert.convert.fold import fold_batchnorms
from snnconvert.convert.norm import ChannelBatchNorm
from snnconvert.convert.prepare import (Change, PrepareReport, change_effects, is_prepared, prepare,
                                       prepare_with_report, qcfs_modules)
from snnconvert.convert.qcfs import QCFS, qcfs
from snnconvert.convert.rsm import add_spike_masks, mask_sites, spike_masks
from snnconvert.runtime.masking import RandomSpikeMask

__all__ = [
    "PrepareConfig", "MaskConfig", "NeuronConfig", "MASK_TARGETS", "MODES", "FloatOp", "convert", "float_operations",
    "fold_batchnorms", "ChannelBatchNorm", "Change", "PrepareReport", "change_effects", "is_prepared",
    "prepare", "prepare_with_report", "qcfs_modules", "QCFS", "qcfs", "RandomSpikeMask", "add_spike_masks",
    "mask_sites", "spike_masks",
]
