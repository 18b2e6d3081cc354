"""ANN ops held as modules, so ``convert`` can swap each for its spike-correct operator."""
from __future__ import annotations

import torch
from torch import nn


class MatMul(nn.Module):
    """``a @ b``; becomes a compensated spike×spike product on conversion."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b
