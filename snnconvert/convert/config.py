"""Typed configuration of the neurons convert puts in place of QCFS, and of how values are coded over time."""
from __future__ import annotations

from dataclasses import dataclass

from snnconvert.checks import check_fields
from snnconvert.errors import ArgumentError, SnnConvertError
from snnconvert.runtime.coding import CODINGS
from snnconvert.runtime.neurons import NEURONS


@dataclass(frozen=True)
class NeuronConfig:
    """The neurons ``convert`` puts in place of QCFS, and how values are coded over time.

    Attributes:
        neuron: ``if`` (integrate-and-fire, reset by subtraction) or ``signed-if`` (also fires
            negative spikes to take back surplus ones); ``signed-burst-if`` is ``signed-if`` with
            no bound on a step's spikes.
        max_spikes: k, the most spikes a neuron fires in one step (k = 1: binary spikes, ternary
            when signed); None: no bound. Every spike counts as one event.
        coding: ``rate`` (running means; the default) or ``count`` (totals: the image and the
            constants presented once, at most L spikes per neuron; see :mod:`snnconvert.runtime.coding`).
    """

    neuron: str = "if"
    max_spikes: int | None = 1
    coding: str = "rate"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.neuron not in NEURONS:
            raise SnnConvertError(f"unknown neuron {self.neuron!r}; choose one of {', '.join(NEURONS)}")
        if self.neuron == "signed-burst-if":
            if self.max_spikes not in (1, None):  # 1: the field's default
                raise ArgumentError(f"signed-burst-if has no bound on spikes per step: use the neuron signed-if "
                                    f"with max_spikes {self.max_spikes} (--neuron signed-if --max-spikes "
                                    f"{self.max_spikes})")
            object.__setattr__(self, "neuron", "signed-if")
            object.__setattr__(self, "max_spikes", None)
        if self.max_spikes is not None and self.max_spikes < 1:
            raise SnnConvertError(f"max_spikes must be >= 1 (or None for no bound), got {self.max_spikes}")
        if self.coding not in CODINGS:
            raise SnnConvertError(f"unknown coding {self.coding!r}; choose one of {', '.join(CODINGS)}")

    @classmethod
    def of(cls, value: str | dict | NeuronConfig) -> NeuronConfig:
        """A config from a neuron name (the other settings at their defaults), a dict or a config."""
        if isinstance(value, NeuronConfig):
            return value
        return cls(**value) if isinstance(value, dict) else cls(value)

    def describe(self) -> str:
        """``signed-if, ≤ 1 spike/step, count coding``."""
        bound = "no bound on spikes/step" if self.max_spikes is None else \
            f"≤ {self.max_spikes} spike{'s' if self.max_spikes > 1 else ''}/step"
        return f"{self.neuron}, {bound}, {self.coding} coding"
