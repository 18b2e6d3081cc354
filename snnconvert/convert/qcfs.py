"""Quantization-clip-floor-shift activation (QCFS, Bu et al. 2022).

``h(z) = λ · clip(floor(z·L/λ + φ) / L, 0, 1)`` with a learnable threshold λ, ``L`` levels and
shift ``φ = 1/2``; the floor passes gradients straight through. An IF neuron with threshold θ = λ
and initial potential θ/2 fires at the rate ``h(z)/λ`` on constant input over ``T = L`` steps.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from snnconvert.runtime.state import adopt_threshold_shape


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` forward, identity gradient backward."""
    return _FloorSTE.apply(x)


def qcfs(x: torch.Tensor, threshold: torch.Tensor, levels: int, shift: float = 0.5) -> torch.Tensor:
    """Functional QCFS: ``λ · clip(floor(x·L/λ + φ)/L, 0, 1)``; ``threshold`` broadcasts over ``x``."""
    y = floor_ste(x * (levels / threshold) + shift) / levels
    return threshold * y.clamp(0.0, 1.0)


class QCFS(nn.Module):
    """QCFS activation with a learnable threshold λ (layer-wise or per channel).

    Args:
        levels: number of quantization levels L.
        threshold: initial λ (a scalar, or a tensor that broadcasts over the input).
        shift: φ, 1/2 for conversion with v(0) = θ/2.
        channel_axis: axis that holds channels for channel-wise calibration, or None when
            this site only supports a layer-wise threshold (attention scores, Q/K/V heads).
    """

    def __init__(self, levels: int = 8, threshold: float | torch.Tensor = 8.0, shift: float = 0.5,
                 channel_axis: int | None = -1):
        super().__init__()
        if levels < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        self.levels = int(levels)
        self.shift = float(shift)
        self.channel_axis = channel_axis
        self.threshold = nn.Parameter(torch.as_tensor(threshold, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return qcfs(x, self.threshold, self.levels, self.shift)

    def set_threshold(self, value: torch.Tensor) -> None:
        """Replace λ (shape may change from layer-wise to channel-wise)."""
        self.threshold = nn.Parameter(value.detach().to(self.threshold.device, torch.float32).clone())

    def extra_repr(self) -> str:
        shape = "layer" if self.threshold.numel() == 1 else f"channel{tuple(self.threshold.shape)}"
        return f"levels={self.levels}, shift={self.shift}, threshold={shape}"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        adopt_threshold_shape(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def with_levels(model: nn.Module, levels: int) -> nn.Module:
    """A copy of a prepared model with every QCFS set to ``levels`` levels."""
    copied = copy.deepcopy(model)
    for m in copied.modules():
        if isinstance(m, QCFS):
            m.levels = levels
    return copied


def rate_limit_model(model: nn.Module) -> nn.Module:
    """A copy of a prepared model whose QCFS levels → ∞: ``λ·clip(z/λ, 0, 1)`` at every site.

    This is the function an SNN of IF neurons converted from ``model`` computes as T → ∞ (an IF
    neuron's rate over T steps is QCFS with T levels); the QCFS ANN with L levels is its quantized twin.
    """
    return with_levels(model, 1 << 16)
