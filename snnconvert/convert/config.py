"""Typed configuration of the prepare stage."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrepareConfig:
    """How ``prepare`` rewrites an ANN.

    Attributes:
        levels: QCFS quantization levels L (the SNN matches the QCFS ANN exactly at T = L on
            constant input, and approaches it as T grows).
        threshold: initial λ of every new QCFS (calibration usually replaces it).
        mlp_batchnorm: add a BatchNorm after each Linear of the transformer MLPs, before its
            QCFS (the MST variant; they fold into the Linears at conversion).
    """

    levels: int = 8
    threshold: float = 4.0
    mlp_batchnorm: bool = False

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")
        if self.threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
