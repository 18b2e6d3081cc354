"""Quantization-clip-floor-shift activation (QCFS, Bu et al. 2022).

``h(z) = λ · clip(floor(z·L/λ + φ) / L, 0, 1)`` with a learnable threshold λ, ``L`` levels and
shift ``φ = 1/2``; the floor passes gradients straight through. An IF neuron with threshold θ = λ
and initial potential θ/2 fires at the rate ``h(z)/λ`` on constant input over ``T = L`` steps.

A *signed* site clips to ``[−1, 1]`` instead of ``[0, 1]`` (``2L + 1`` levels of ``[−λ, λ]``): it
quantizes a value that is not an activation (a linear bottleneck's residual stream) and becomes a
signed neuron whose net count may go negative.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from snnconvert.graph.ops import SPIKING, register_module_kind
from snnconvert.runtime.state import adopt_state_shapes


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


def qcfs(x: torch.Tensor, threshold: torch.Tensor, levels: int, shift: float = 0.5,
         signed: bool = False) -> torch.Tensor:
    """Functional QCFS: ``λ · clip(floor(x·L/λ + φ)/L, 0, 1)`` (``signed``: clipped to ``[−1, 1]``);
    ``threshold`` broadcasts over ``x``."""
    y = floor_ste(x * (levels / threshold) + shift) / levels
    return threshold * y.clamp(-1.0 if signed else 0.0, 1.0)


#: what a QCFS site stands for: an ANN activation it replaced, or a site the MST recipe inserts
#: (after a residual branch's norm, on Q, K, V, the attention scores and output, after a branch's
#: last projection, on an operand or the output of another product), or a site of the event-driven
#: route (attention probabilities; a real-valued stream into a weight layer, signed)
ROLES = ("activation", "norm", "q", "k", "v", "scores", "attention", "projection", "operand", "product",
         "probabilities", "stream")


class QCFS(nn.Module):
    """QCFS activation with a learnable threshold λ (layer-wise or per channel).

    Args:
        levels: number of quantization levels L.
        threshold: initial λ (a scalar, or a tensor that broadcasts over the input).
        shift: φ, 1/2 for conversion with v(0) = θ/2.
        channel_axis: axis that holds channels for channel-wise calibration, or None when
            this site only supports a layer-wise threshold (attention scores, Q/K/V heads).
        cap: the upper clip of the activation it replaces (ReLU6: 6): λ is never above it.
        role: what the site stands for (:data:`ROLES`; random spike masks select sites by role).
        signed: clip to ``[−λ, λ]`` instead of ``[0, λ]`` (a site on a value the ANN passes on as it is).
    """

    def __init__(self, levels: int = 8, threshold: float | torch.Tensor = 8.0, shift: float = 0.5,
                 channel_axis: int | None = -1, cap: float | None = None, role: str = "activation",
                 signed: bool = False):
        super().__init__()
        if levels < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        if role not in ROLES:
            raise ValueError(f"unknown QCFS role {role!r}; one of {', '.join(ROLES)}")
        self.levels = int(levels)
        self.shift = float(shift)
        self.channel_axis = channel_axis
        self.cap = cap
        self.role = role
        self.signed = bool(signed)
        self.threshold = nn.Parameter(torch.as_tensor(threshold if cap is None else min(threshold, cap),
                                                      dtype=torch.float32).clone())

    def effective_threshold(self) -> torch.Tensor:
        """λ, clipped to the cap when the site has one."""
        return self.threshold if self.cap is None else self.threshold.clamp(max=self.cap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return qcfs(x, self.effective_threshold(), self.levels, self.shift, self.signed)

    def relu_form(self, x: torch.Tensor) -> torch.Tensor:
        """``clip(x, 0, cap)``: the ReLU-family activation the site stands for, neither clipped at
        λ nor quantized (what the ANN computes where the site replaced a ReLU or ReLU6); ``x``
        itself at a signed site."""
        if self.signed:
            return x
        return x.clamp(min=0) if self.cap is None else x.clamp(0, self.cap)

    def set_threshold(self, value: torch.Tensor) -> None:
        """Replace λ (shape may change from layer-wise to channel-wise); clipped to the cap."""
        value = value.detach().to(self.threshold.device, torch.float32)
        self.threshold = nn.Parameter((value if self.cap is None else value.clamp(max=self.cap)).clone())

    def extra_repr(self) -> str:
        shape = "layer" if self.threshold.numel() == 1 else f"channel{tuple(self.threshold.shape)}"
        cap = f", cap={self.cap:g}" if self.cap is not None else ""
        signed = ", signed" if self.signed else ""
        return f"levels={self.levels}, shift={self.shift}, threshold={shape}{cap}{signed}, role={self.role}"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        adopt_state_shapes(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


register_module_kind(QCFS, SPIKING)


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
