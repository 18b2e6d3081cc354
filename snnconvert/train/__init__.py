"""Training of prepared QCFS models (from scratch for small models)."""
from snnconvert.train.trainer import TrainConfig, TrainResult, fit

__all__ = ["TrainConfig", "TrainResult", "fit"]
