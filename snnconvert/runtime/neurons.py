"""Spiking neurons a QCFS activation becomes: IF with reset by subtraction, and its signed variant.

Each step: ``v += x_t``; fire ``s_t`` spikes; ``v −= θ·s_t``; output ``θ·s_t``; ``v(0) = θ/2``.
How many spikes a neuron may fire depends on the coding (:mod:`snnconvert.runtime.coding`):

* **rate** (``levels=None``): at most ``t`` net spikes by step t (a rate in [0, 1], as QCFS clips
  to [0, λ]). On constant input z the mean output over T steps is ``θ·clip(floor(z·T/θ + 1/2)/T, 0, 1)``,
  i.e. QCFS with T levels: a network of IF neurons tends, as T grows, to its ANN with QCFS levels → ∞.
* **count** (``levels=L``): at most L net spikes in all, θ = λ/L; the total output for a total input
  Z is ``θ·clip(floor(Z/θ + 1/2), 0, L)``: QCFS with L levels, whatever T, once the neuron has
  fired its count.

``max_spikes`` (k) bounds the spikes of one step (k = 1: binary, or ternary when signed); every
spike of a burst is one event in the spike, SOP and energy counts.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from snnconvert.runtime.state import StatefulModule, adopt_state_shapes
from snnconvert.runtime.statistics import NeuronRecord, Recorder


class SpikingNeuron(StatefulModule, Recorder):
    """A neuron the monitors and energy counters see: after each step ``v`` holds its membrane
    potential and ``threshold`` its θ; while recording it keeps its statistics in its own step
    (:class:`~snnconvert.runtime.statistics.Recorder`)."""

    emits_spikes = True  # its outputs are spikes (the energy counter's sources)

    def reset(self) -> None:
        super().reset()
        self.record: NeuronRecord | None = None


class IFNeuron(SpikingNeuron):
    """IF neuron, reset by subtraction, output ``θ·s`` (single-step: input and output ``[N, *]``).

    Args:
        threshold: θ, a scalar or a tensor that broadcasts over the input (channel-wise).
        initial_potential: v(0) as a fraction of θ (1/2 matches the QCFS shift φ; a tensor for
            per-channel potentials, e.g. after potential calibration).
        max_spikes: k, the most spikes one step may fire (None: as many as the potential holds).
        levels: None for rate coding; L for count coding (at most L spikes in all).
        bias: a constant added to the input (bias calibration): every step under rate coding,
            once (into v(0)) under count coding.

    A :class:`~snnconvert.runtime.masking.RandomSpikeMask` set as ``mask`` drops some of the
    spikes the neuron sends (the membrane is reset for every spike fired).
    """

    def __init__(self, threshold: torch.Tensor | float, initial_potential: torch.Tensor | float = 0.5,
                 max_spikes: int | None = 1, levels: int | None = None, bias: torch.Tensor | None = None):
        super().__init__()
        threshold = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        if not bool((threshold > 0).all()):
            raise ValueError("IF thresholds must be positive; recalibrate the QCFS thresholds "
                             "(snnconvert calibrate) before converting")
        if max_spikes is not None and max_spikes < 1:
            raise ValueError(f"max_spikes must be >= 1 or None, got {max_spikes}")
        if levels is not None and levels < 1:
            raise ValueError(f"levels must be >= 1 or None, got {levels}")
        self.register_buffer("threshold", threshold)
        self.register_buffer("initial_potential", torch.as_tensor(initial_potential, dtype=torch.float32).clone())
        self.register_buffer("bias", None if bias is None else torch.as_tensor(bias, dtype=torch.float32).clone())
        self.max_spikes = max_spikes
        self.levels = levels
        self.mask: nn.Module | None = None
        self.reset()

    @property
    def tracks_count(self) -> bool:
        """Whether firing depends on the net count sent so far (otherwise: single spikes under rate coding)."""
        return self.levels is not None or self.max_spikes != 1

    @property
    def single_spikes(self) -> bool:
        return not self.tracks_count

    #: the membrane potential, and the net spikes sent so far per element (where firing depends on it)
    memories = ("v", "net")

    def reset(self) -> None:
        super().reset()
        self._spikes: torch.Tensor | None = None  # this step's spikes (float)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before potentials were stored hold θ alone: v(0) = θ/2
        state_dict.setdefault(prefix + "initial_potential", torch.tensor(0.5))
        adopt_state_shapes(self, state_dict, prefix, ("threshold", "initial_potential", "bias"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _start(self, x: torch.Tensor) -> None:
        initial = self._initial(x)
        self.v, self.net = initial["v"], initial.get("net")
        self._spikes = torch.empty_like(self.v)

    def _initial(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state at t = 0 for inputs shaped like ``like``: ``v(0)``, and ``net = 0``."""
        dtype = torch.promote_types(like.dtype, self.threshold.dtype)
        v = (self.initial_potential * self.threshold).to(dtype=dtype, device=like.device).expand_as(like).clone()
        if self.bias is not None and self.levels is not None:
            v.add_(self.bias)
        return {"v": v, "net": torch.zeros_like(v)} if self.tracks_count else {"v": v}

    def initial_state(self) -> dict[str, torch.Tensor]:
        return self._initial(self.v)

    def load_state(self, state: dict[str, torch.Tensor], t: int | torch.Tensor) -> None:
        super().load_state(state, t)
        self._spikes = None  # no buffer: the spikes of a loaded step are a new tensor

    def _room(self) -> torch.Tensor | int:
        """How many more net spikes may be sent: up to t (rate coding) or L (count coding)."""
        return (self.t if self.levels is None else self.levels) - self.net

    def _fire(self) -> torch.Tensor:
        """This step's spikes per element, from ``v`` (a float tensor)."""
        if not self.tracks_count:
            if self._spikes is None:
                return torch.ge(self.v, self.threshold).to(self.v.dtype)
            return torch.ge(self.v, self.threshold, out=self._spikes)
        up = (self.v / self.threshold).floor_().clamp_(min=0)
        if self.max_spikes is not None:
            up.clamp_(max=self.max_spikes)
        return torch.minimum(up, self._room())

    def pending(self) -> torch.Tensor | None:
        """Per element, whether the neuron would fire at the next step on zero input (None before
        a step): count coding's quiescence (:class:`~snnconvert.runtime.early_exit.Quiescence`)."""
        if self.v is None:
            return None
        if not self.tracks_count:
            return torch.ge(self.v, self.threshold)
        return self._fire() != 0

    def step(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``v += x``; fire s; ``v −= θ·s``; return ``θ·s`` (into ``out`` if given)."""
        if self.v is None:
            self._start(x)
        self.t = self.t + 1  # not in place: an exported step shares one counter
        self.v.add_(x)
        if self.bias is not None and self.levels is None:
            self.v.add_(self.bias)
        spikes = self._fire()
        if self.net is not None:
            self.net.add_(spikes)
        if self.mask is not None:  # the membrane is reset for every spike fired; some are not sent
            self.v.sub_(spikes * self.threshold)
            spikes = self.mask(spikes)
        out = torch.mul(spikes, self.threshold, out=out)
        if self.mask is None:
            self.v.sub_(out)
        if self.recording != "none":
            self._record(spikes if self.single_spikes else spikes.abs(), self.v)
        return out

    def multi_step(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, self.threshold.dtype), device=x.device)
        for x_t, out_t in zip(x.chunk(self.steps), out.chunk(self.steps)):
            self.step(x_t, out_t)
        return out

    def extra_repr(self) -> str:
        shape = "layer" if self.threshold.numel() == 1 else f"channel{tuple(self.threshold.shape)}"
        v0 = f"{float(self.initial_potential):g}" if self.initial_potential.numel() == 1 else "per channel"
        coding = "rate" if self.levels is None else f"count ≤ {self.levels}"
        return (f"threshold={shape}, v0={v0}·θ, max_spikes={self.max_spikes}, {coding}"
                + (", bias" if self.bias is not None else ""))


class SignedIFNeuron(IFNeuron):
    """IF neuron that can also fire negative spikes to take back earlier ones (a rate- or
    count-coded form of SpikeZIP-TF's spike-tracing bipolar ST-BIF neuron).

    Each step it fires ``k⁺ = floor(v/θ)`` spikes if ``v ≥ θ`` or takes back ``k⁻ = ceil(−v/θ)``
    if ``v < 0``, at most ``max_spikes`` per step, keeping the net count within ``[0, t]`` (rate
    coding) or ``[0, L]`` (count coding). The count tracks ``clip(round(S_t/θ), 0, bound)`` of the
    cumulative input ``S_t``, so an input that rises and falls leaves no surplus spikes (no
    unevenness error). With ``max_spikes=None`` the tracking is exact at every step: a rate-coded
    network of such neurons computes at step t its QCFS ANN with t levels on the running means (the
    QCFS ANN itself at t = L); a count-coded one computes its QCFS ANN from the first step.

    ``symmetric`` (what a signed QCFS site becomes): the net count may go as far below zero as
    above it, ``[−t, t]`` or ``[−L, L]``, so the neuron sends values of ``[−λ, λ]``.
    """

    tracks_count = True  # a negative spike needs a positive net count to take back

    def __init__(self, *args, symmetric: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.symmetric = symmetric

    def _fire(self) -> torch.Tensor:
        ratio = self.v / self.threshold
        up = ratio.floor().clamp_(min=0)
        down = (-ratio).ceil_().clamp_(min=0)
        if self.max_spikes is not None:
            up.clamp_(max=self.max_spikes)
            down.clamp_(max=self.max_spikes)
        below = self.net + (self.t if self.levels is None else self.levels) if self.symmetric else self.net
        return torch.minimum(up, self._room()) - torch.minimum(down, below)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", symmetric" if self.symmetric else "")


#: neuron models a QCFS activation can become, by name: ``factory(threshold, initial_potential,
#: [max_spikes,] levels)``; ``signed-burst-if`` is ``signed-if`` with no bound on a step's spikes
NEURONS: dict[str, Callable[..., IFNeuron]] = {
    "if": IFNeuron,
    "signed-if": SignedIFNeuron,
    "signed-burst-if": partial(SignedIFNeuron, max_spikes=None),
}
