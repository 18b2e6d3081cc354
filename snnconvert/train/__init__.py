"""Training: QCFS models from scratch, the original ANN, and distillation fine-tuning."""
from snnconvert.train.distill import DistillationLoss
from snnconvert.train.trainer import Objective, TrainConfig, TrainResult, fit

__all__ = ["DistillationLoss", "Objective", "TrainConfig", "TrainResult", "fit"]
