"""Calibration from sample data: QCFS thresholds (max / percentile / MSE, layer or channel) and BatchNorm statistics."""
from snnconvert.calibrate.observers import METHODS, ActivationObserver
from snnconvert.calibrate.thresholds import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds

__all__ = ["METHODS", "ActivationObserver", "CalibrationConfig", "calibrate_batchnorm", "calibrate_thresholds"]
