"""ANN surgery over the traced graph: the ANN in its QCFS form, ready to train and calibrate
(the ``prepare`` of prepare → calibrate → convert)."""
from snnconvert.prepare.config import MASK_TARGETS, MaskConfig, PrepareConfig
from snnconvert.prepare.norm import ChannelBatchNorm
from snnconvert.prepare.qcfs import QCFS, qcfs
from snnconvert.prepare.rewrite import (ROUTE_SITES, Change, PrepareReport, RouteSites, change_effects, is_prepared,
                                        prepare, prepare_with_report, qcfs_modules)
from snnconvert.prepare.rsm import add_spike_masks, mask_sites, spike_masks

__all__ = [
    "PrepareConfig", "MaskConfig", "MASK_TARGETS", "ChannelBatchNorm", "Change", "PrepareReport", "RouteSites",
    "ROUTE_SITES", "change_effects", "is_prepared", "prepare", "prepare_with_report", "qcfs_modules", "QCFS", "qcfs",
    "add_spike_masks", "mask_sites", "spike_masks",
]
