"""Calibration from sample data: before conversion, QCFS thresholds (max / percentile / MSE, layer
or channel) and BatchNorm statistics; after it, the SNN's biases or initial potentials, layer by layer."""
from snnconvert.calibrate.corrections import (CORRECTIONS, REFERENCES, CorrectionConfig, SiteCalibration, SiteError,
                                              conversion_errors, correct, site_calibrations)
from snnconvert.calibrate.observers import METHODS, ActivationObserver
from snnconvert.calibrate.thresholds import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds

__all__ = ["METHODS", "ActivationObserver", "CalibrationConfig", "calibrate_batchnorm", "calibrate_thresholds",
           "CORRECTIONS", "REFERENCES", "CorrectionConfig", "SiteCalibration", "SiteError", "conversion_errors",
           "correct", "site_calibrations"]
