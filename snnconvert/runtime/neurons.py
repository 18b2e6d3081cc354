"""Spiking neurons a QCFS activation becomes: IF with reset by subtraction, and its signed variants.

IF: each step ``v += x_t``; ``s_t = [v ≥ θ]``; ``v -= θ·s_t``; output ``θ·s_t``; ``v(0) = θ/2``.
Over T steps of constant input z the mean output is ``θ·clip(floor(z·T/θ + 1/2)/T, 0, 1)``, i.e.
QCFS with T levels: a network of IF neurons tends, as T grows, to its ANN with QCFS levels → ∞.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from snnconvert.runtime.state import StatefulModule, adopt_threshold_shape


class SpikingNeuron(StatefulModule):
    """A neuron the monitors and energy counters see: after each step ``v`` holds its membrane
    potential and ``threshold`` its θ; :meth:`spike_count` reads the (signed) spikes of an output.

    While ``counting`` it keeps, in its own step, how many spikes each element has sent since the
    last reset (``counts``; ``first_counts`` after the first step): the energy accounting's input.
    """

    emits_spikes = True  # its outputs are spikes (the energy counter's sources)
    counting = False

    def reset(self) -> None:
        self.counts: torch.Tensor | None = None
        self.first_counts: torch.Tensor | None = None

    def count(self, events: torch.Tensor) -> None:
        """Add one step's spikes per element (a count, or a bool tensor for single spikes)."""
        if self.counts is None:
            self.counts = events.to(torch.float32, copy=True)
            self.first_counts = self.counts.clone()
        else:
            self.counts.add_(events)

    def spike_count(self, out: torch.Tensor) -> torch.Tensor:
        """Spikes per element of an output of this neuron."""
        raise NotImplementedError

    def residual(self) -> torch.Tensor:
        """Potential left after this step's spikes, before any hard reset, in units of θ."""
        return self.v / self.threshold


class IFNeuron(SpikingNeuron):
    """IF neuron, reset by subtraction, output ``θ·s`` (single-step: input and output ``[N, *]``).

    Args:
        threshold: θ, a scalar or a tensor that broadcasts over the input (channel-wise).
        initial_potential: v(0) as a fraction of θ (1/2 matches the QCFS shift φ).

    A :class:`~snnconvert.runtime.masking.RandomSpikeMask` set as ``mask`` drops some of the
    spikes the neuron sends (the membrane is reset for every spike fired).
    """

    def __init__(self, threshold: torch.Tensor | float, initial_potential: float = 0.5):
        super().__init__()
        threshold = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        if not bool((threshold > 0).all()):
            raise ValueError("IF thresholds must be positive; recalibrate the QCFS thresholds "
                             "(snnconvert calibrate) before converting")
        self.register_buffer("threshold", threshold)
        self.initial_potential = float(initial_potential)
        self.mask: nn.Module | None = None
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.v: torch.Tensor | None = None

    def spike_count(self, out: torch.Tensor) -> torch.Tensor:
        return out / self.threshold

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        adopt_threshold_shape(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.v is None:
            self.v = (self.initial_potential * self.threshold).expand_as(x).clone()
        self.v.add_(x)
        fired = self.v >= self.threshold
        out = fired * self.threshold
        self.v.sub_(out)
        if self.mask is not None:
            out = self.mask(out)
            fired = out != 0
        if self.counting:
            self.count(fired)
        return out

    def extra_repr(self) -> str:
        shape = "layer" if self.threshold.numel() == 1 else f"channel{tuple(self.threshold.shape)}"
        return f"threshold={shape}, v0={self.initial_potential}·θ"


class SignedIFNeuron(IFNeuron):
    """IF neuron that can also fire negative spikes to take back earlier ones, optionally several
    spikes per step (a rate-coded form of SpikeZIP-TF's spike-tracking ST-BIF neuron).

    Each step: ``v += x_t``; fire ``k⁺ = floor(v/θ)`` spikes if ``v ≥ θ`` or take back
    ``k⁻ = ceil(−v/θ)`` if ``v < 0``, at most ``max_spikes`` per step, keeping the net count
    ``n = Σ s`` within ``[0, t]`` (rate in [0, 1], as QCFS clips to [0, λ]); ``v −= θ·s_t``;
    output ``θ·s_t``. The count tracks ``clip(round(S_t/θ), 0, t)`` of the cumulative input
    ``S_t``, so an input that rises and falls leaves no surplus spikes (no unevenness error).
    With ``max_spikes=None`` the tracking is exact at every step: a network of such neurons at
    step t computes its QCFS ANN with t levels on the running means, i.e. the QCFS ANN itself at t = L.
    """

    def __init__(self, threshold: torch.Tensor | float, initial_potential: float = 0.5,
                 max_spikes: int | None = 1):
        super().__init__(threshold, initial_potential)
        if max_spikes is not None and max_spikes < 1:
            raise ValueError(f"max_spikes must be >= 1 or None, got {max_spikes}")
        self.max_spikes = max_spikes

    def reset(self) -> None:
        super().reset()
        self.net: torch.Tensor | None = None  # net spikes sent so far, per element
        self.t = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.v is None:
            self.v = (self.initial_potential * self.threshold).expand_as(x).clone()
            self.net = torch.zeros_like(x)
        self.t += 1
        self.v.add_(x)
        ratio = self.v / self.threshold
        up = ratio.floor().clamp_(min=0)
        down = (-ratio).ceil_().clamp_(min=0)
        if self.max_spikes is not None:
            up.clamp_(max=self.max_spikes)
            down.clamp_(max=self.max_spikes)
        spikes = torch.minimum(up, self.t - self.net) - torch.minimum(down, self.net)
        out = spikes * self.threshold
        self.v.sub_(out)
        self.net.add_(spikes)
        if self.mask is not None:
            out = self.mask(out)
            spikes = self.spike_count(out)
        if self.counting:
            self.count(spikes.abs())
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_spikes={self.max_spikes}"


#: neuron models a QCFS activation can become, by name: ``factory(threshold, initial_potential)``
NEURONS: dict[str, Callable[..., IFNeuron]] = {
    "if": IFNeuron,
    "signed-if": SignedIFNeuron,
    "signed-burst-if": partial(SignedIFNeuron, max_spikes=None),
}
