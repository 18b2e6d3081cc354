"""Neurons for direct training: IF, LIF, PLIF and KLIF, with hard or soft reset.

Each step (single-step mode; multi-step mode runs the same over the first dimension, time):

* charge ``H[t]``:  IF ``V + X``;  LIF ``V + (X − (V − V_reset))/τ`` (Spikformer Eq. 1);
  PLIF the same with ``1/τ = sigmoid(w)``, ``w`` learnable (one per layer);
  KLIF ``ReLU(k·H_LIF[t])`` with a learnable ``k``
* fire ``S[t] = Θ(H[t] − V_th)``, differentiated through a surrogate gradient
* reset: hard ``V[t] = H[t]·(1 − S[t]) + V_reset·S[t]``, soft ``V[t] = H[t] − V_th·S[t]``

``V[0] = V_reset`` (0 for soft reset). The output is the spike tensor ``S`` (0 or 1), or with a
time-step mask (:mod:`snnconvert.direct.dynamic_timesteps`) ``S[t]·TM[t]``: the neuron charges,
fires and resets as ever, but sends nothing after its last step.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from snnconvert.direct.dynamic_timesteps import TimestepMask
from snnconvert.direct.surrogate import Surrogate, surrogate as make_surrogate
from snnconvert.errors import SnnConvertError
from snnconvert.runtime.neurons import SpikingNeuron

RESETS = ("hard", "soft")


class SpikingNode(SpikingNeuron):
    """Base of the trainable neurons: fire and reset around a subclass's ``charge``.

    Args:
        threshold: V_th.
        reset: ``hard`` (to ``v_reset``) or ``soft`` (subtract V_th).
        v_reset: the hard reset potential.
        surrogate: a :class:`Surrogate` or its name.
        detach_reset: do not back-propagate through the reset (Spikformer's setting).
        timestep_mask: the layer's dynamic time steps (None: it sends at every step).
    """

    def __init__(self, threshold: float = 1.0, reset: str = "hard", v_reset: float = 0.0,
                 surrogate: Surrogate | str = "sigmoid", detach_reset: bool = False,
                 timestep_mask: TimestepMask | None = None):
        super().__init__()
        if reset not in RESETS:
            raise SnnConvertError(f"unknown reset {reset!r}; choose one of {', '.join(RESETS)}")
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.hard_reset, self.v_reset = reset == "hard", float(v_reset) if reset == "hard" else 0.0
        self.surrogate = make_surrogate(surrogate) if isinstance(surrogate, str) else surrogate
        self.detach_reset = detach_reset
        self.timestep_mask = timestep_mask
        self.reset()

    @property
    def last_step(self) -> int | None:
        """The steps after which it sends nothing (its mask's T_l; None without a mask)."""
        return None if self.timestep_mask is None else self.timestep_mask.steps

    memories = ("v",)  # the membrane potential

    def initial_state(self) -> dict[str, torch.Tensor]:
        return {"v": torch.full_like(self.v, self.v_reset)}

    def charge(self, x: torch.Tensor) -> torch.Tensor:
        """``H[t]`` from ``V[t−1]`` (``self.v``) and the input."""
        raise NotImplementedError

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if self.v is None:
            self.v = torch.full_like(x, self.v_reset)
        self.t = self.t + 1  # not in place: an exported step shares one counter
        h = self.charge(x)
        spikes = self.surrogate(h - self.threshold)
        s = spikes.detach() if self.detach_reset else spikes
        self.v = h * (1 - s) + self.v_reset * s if self.hard_reset else h - self.threshold * s
        sent = spikes if self.timestep_mask is None else spikes * self.timestep_mask.at(self.t)
        if self.recording != "none":  # the overshoot ``H[t] − V_th·S[t]`` is what a soft reset keeps
            fired = spikes.detach()
            self._record(sent.detach(), self.v.detach(), (h - self.threshold * fired).detach())
        return sent

    def extra_repr(self) -> str:
        reset = f"hard to {self.v_reset:g}" if self.hard_reset else "soft"
        steps = "" if self.timestep_mask is None else f", steps={self.last_step}/{self.timestep_mask.max_steps}"
        return f"threshold={float(self.threshold):g}, reset={reset}, surrogate={self.surrogate}{steps}"


class IFNode(SpikingNode):
    """``H = V + X``."""

    def charge(self, x):
        return self.v + x


class LIFNode(SpikingNode):
    """``H = V + (X − (V − V_reset))/τ``; with ``decay_input=False``: ``V − (V − V_reset)/τ + X``."""

    def __init__(self, tau: float = 2.0, decay_input: bool = True, **kwargs):
        super().__init__(**kwargs)
        if tau <= 1:
            raise ValueError(f"tau must be > 1, got {tau}")
        self.tau, self.decay_input = float(tau), decay_input

    def inverse_tau(self) -> torch.Tensor | float:
        return 1.0 / self.tau

    def charge(self, x):
        k = self.inverse_tau()
        leak = self.v - self.v_reset
        return self.v + (x - leak) * k if self.decay_input else self.v - leak * k + x

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}, {super().extra_repr()}"


class PLIFNode(LIFNode):
    """LIF with a learnable time constant: ``1/τ = sigmoid(w)``, ``w(0) = −ln(τ₀ − 1)``."""

    def __init__(self, tau: float = 2.0, **kwargs):
        super().__init__(tau=tau, **kwargs)
        self.w = nn.Parameter(torch.tensor(-math.log(tau - 1.0)))

    def inverse_tau(self):
        return torch.sigmoid(self.w)

    def extra_repr(self) -> str:
        return f"tau={1.0 / float(torch.sigmoid(self.w.detach())):.3g} (learnable), {SpikingNode.extra_repr(self)}"


class KLIFNode(LIFNode):
    """LIF whose charge passes through ``ReLU(k·H)`` with a learnable ``k`` (``k(0) = 1``)."""

    def __init__(self, tau: float = 2.0, **kwargs):
        super().__init__(tau=tau, **kwargs)
        self.k = nn.Parameter(torch.tensor(1.0))

    def charge(self, x):
        return torch.relu(self.k * super().charge(x))


#: trainable neurons by name: ``factory(**kwargs)`` (threshold, reset, surrogate, tau …)
NODES: dict[str, Callable[..., SpikingNode]] = {"if": IFNode, "lif": LIFNode, "plif": PLIFNode, "klif": KLIFNode}


def make_node(name: str, **kwargs) -> SpikingNode:
    """The neuron called ``name``; ``tau`` is dropped for IF."""
    if name not in NODES:
        raise SnnConvertError(f"unknown neuron {name!r}; choose one of {', '.join(NODES)}")
    if name == "if":
        kwargs.pop("tau", None)
    return NODES[name](**kwargs)
