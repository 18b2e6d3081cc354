"""ANN surgery and conversion: prepare → (train / calibrate) → convert."""
from snnconvert.convert.blocks import added_batchnorms
from snnconvert.convert.config import MASK_TARGETS, MaskConfig, PrepareConfig
from snnconvert.convert.convert import MODES, FloatOp, convert, float_operations
from snnconvert.convert.fold import fold_batchnorms
from snnconvert.convert.norm import ChannelBatchNorm
from snnconvert.convert.prepare import find_unconvertible, is_prepared, prepare, qcfs_modules
from snnconvert.convert.qcfs import QCFS, qcfs
from snnconvert.convert.rsm import RandomSpikeMask, add_spike_masks, mask_sites, spike_masks
from snnconvert.convert.rules import ArchitectureRule, list_rules, register_rule

__all__ = [
    "PrepareConfig", "MODES", "FloatOp", "convert", "float_operations", "fold_batchnorms",
    "ChannelBatchNorm", "find_unconvertible", "is_prepared", "prepare", "qcfs_modules", "QCFS", "qcfs",
    "ArchitectureRule", "list_rules", "register_rule", "added_batchnorms",
    "MASK_TARGETS", "MaskConfig", "RandomSpikeMask", "add_spike_masks", "mask_sites", "spike_masks",
]
