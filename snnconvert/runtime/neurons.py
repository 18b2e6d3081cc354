"""Integrate-and-Fire neuron with reset by subtraction: what a QCFS activation becomes.

Each step: ``v += x_t``; ``s_t = [v ≥ θ]``; ``v -= θ·s_t``; output ``θ·s_t``; with ``v(0) = θ/2``.
Over T steps of constant input z the mean output is ``θ·clip(floor(z·T/θ + 1/2)/T, 0, 1)``,
i.e. QCFS with T levels, so the SNN approaches the QCFS ANN as T grows.
"""
from __future__ import annotations

import torch

from snnconvert.runtime.state import StatefulModule, adopt_threshold_shape


class IFNeuron(StatefulModule):
    """IF neuron, reset by subtraction, output ``θ·s`` (single-step: input and output ``[N, *]``).

    Args:
        threshold: θ, a scalar or a tensor that broadcasts over the input (channel-wise).
        initial_potential: v(0) as a fraction of θ (1/2 matches the QCFS shift φ).
    """

    def __init__(self, threshold: torch.Tensor | float, initial_potential: float = 0.5):
        super().__init__()
        threshold = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        if not bool((threshold > 0).all()):
            raise ValueError("IF thresholds must be positive; recalibrate the QCFS thresholds "
                             "(snnconvert calibrate) before converting")
        self.register_buffer("threshold", threshold)
        self.initial_potential = float(initial_potential)
        self.reset()

    @classmethod
    def from_qcfs(cls, act):
        """θ = λ and v(0) = φ·θ of a trained QCFS activation."""
        return cls(act.threshold.detach(), initial_potential=act.shift)

    def reset(self) -> None:
        self.v: torch.Tensor | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        adopt_threshold_shape(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.v is None:
            self.v = (self.initial_potential * self.threshold).expand_as(x).clone()
        self.v.add_(x)
        out = (self.v >= self.threshold) * self.threshold
        self.v.sub_(out)
        return out

    def extra_repr(self) -> str:
        shape = "layer" if self.threshold.numel() == 1 else f"channel{tuple(self.threshold.shape)}"
        return f"threshold={shape}, v0={self.initial_potential}·θ"


class SignedIFNeuron(IFNeuron):
    """IF neuron that can also fire negative spikes to take back earlier ones (a rate-coded form of
    SpikeZIP-TF's spike-tracking ST-BIF neuron).

    Each step: ``v += x_t``; ``s_t = +1`` if ``v ≥ θ``, ``−1`` if ``v < 0`` and the net count
    ``n = Σ s`` is positive, else 0; ``v −= θ·s_t``; output ``θ·s_t``. The net count then tracks
    ``clip(round(S_t/θ), 0, t)`` of the cumulative input ``S_t`` (one spike per step at most), so
    an input that rises and falls leaves no surplus spikes behind (no unevenness error).
    """

    def reset(self) -> None:
        super().reset()
        self.count: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.v is None:
            self.v = (self.initial_potential * self.threshold).expand_as(x).clone()
            self.count = torch.zeros_like(x)
        self.v.add_(x)
        spikes = (self.v >= self.threshold).to(x.dtype) - ((self.v < 0) & (self.count > 0)).to(x.dtype)
        out = spikes * self.threshold
        self.v.sub_(out)
        self.count.add_(spikes)
        return out


#: neuron models a QCFS activation can become, by name
NEURONS: dict[str, type[IFNeuron]] = {"if": IFNeuron, "signed-if": SignedIFNeuron}
