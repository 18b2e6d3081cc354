"""Typed configuration of a directly trained SNN: neuron, surrogate gradient, encoding, T."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snnconvert.direct.encoding import ENCODERS
from snnconvert.direct.neurons import NODES, RESETS
from snnconvert.direct.surrogate import SURROGATES
from snnconvert.errors import SnnConvertError


@dataclass(frozen=True)
class DirectConfig:
    """How a spiking network is built and unrolled for direct training.

    Attributes:
        timesteps: T, the steps the loss averages over (and the simulation runs).
        neuron: ``if``, ``lif``, ``plif`` or ``klif``.
        surrogate: ``sigmoid``, ``atan``, ``softsign`` or ``triangle`` (default α each).
        encoding: ``direct``, ``rate``, ``latency`` or ``phase``.
        tau: the (initial, for PLIF/KLIF) membrane time constant; unused by IF.
        reset: ``hard`` or ``soft``.
        detach_reset: no gradient through the reset.
    """

    timesteps: int = 4
    neuron: str = "lif"
    surrogate: str = "sigmoid"
    encoding: str = "direct"
    tau: float = 2.0
    reset: str = "hard"
    detach_reset: bool = True

    def __post_init__(self) -> None:
        for value, known, what in ((self.neuron, NODES, "neuron"), (self.surrogate, SURROGATES, "surrogate"),
                                   (self.encoding, ENCODERS, "encoding"), (self.reset, RESETS, "reset")):
            if value not in known:
                raise SnnConvertError(f"unknown {what} {value!r}; choose one of {', '.join(known)}")
        if self.timesteps < 1:
            raise SnnConvertError(f"timesteps must be >= 1, got {self.timesteps}")

    def neuron_args(self) -> dict[str, Any]:
        """Keyword arguments every spiking model takes for its neurons."""
        return {"neuron": self.neuron, "surrogate": self.surrogate, "tau": self.tau, "reset": self.reset,
                "detach_reset": self.detach_reset}

    def describe(self) -> str:
        return (f"{self.neuron} ({self.reset} reset), {self.surrogate} surrogate, {self.encoding} encoding, "
                f"T = {self.timesteps}")
