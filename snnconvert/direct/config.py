"""Typed configuration of a directly trained SNN: neuron, surrogate gradient, encoding, T (fixed, or
dynamic per layer)."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from snnconvert.checks import check_fields
from snnconvert.direct.dynamic_timesteps import check_groups, check_steps
from snnconvert.direct.encoding import ENCODERS
from snnconvert.direct.neurons import NODES, RESETS
from snnconvert.direct.surrogate import SURROGATES
from snnconvert.errors import ArgumentError, SnnConvertError


@dataclass(frozen=True)
class DirectConfig:
    """How a spiking network is built and unrolled for direct training.

    Attributes:
        timesteps: T, the steps the loss averages over (and the simulation runs).
        neuron: ``if``, ``lif``, ``plif`` or ``klif``.
        surrogate: ``sigmoid``, ``atan``, ``softsign`` or ``triangle`` (default α each).
        encoding: ``direct``, ``poisson``, ``latency`` or ``phase`` (``rate``, the name stored by
            earlier versions, reads as ``poisson``).
        tau: the (initial, for PLIF/KLIF) membrane time constant; unused by IF.
        reset: ``hard`` or ``soft``.
        detach_reset: no gradient through the reset.
        dynamic_timesteps: give every spiking layer a learned time-step mask (DTSS,
            :mod:`snnconvert.direct.dynamic_timesteps`); ``timesteps`` is then T_max.
        initial_timesteps: T_init, the steps every layer starts with (None: T_max / 2, rounded
            up: the paper's best trade-off).
        mask_loss: the layer groups whose steps the mask loss pulls down (``sps``, ``qkv``,
            ``attn``, ``mlp``).
        lambda_m: λ_m, the weight of the mask loss.
        mask_lr: the peak learning rate of the masks' parameters (None: the training's). AdamW
            moves a parameter about one learning rate per step, and a layer loses or gains a step
            when its score moves by about 0.5: a short run needs a larger rate than the weights.
    """

    timesteps: int = 4
    neuron: str = "lif"
    surrogate: str = "sigmoid"
    encoding: str = "direct"
    tau: float = 2.0
    reset: str = "hard"
    detach_reset: bool = True
    dynamic_timesteps: bool = False
    initial_timesteps: int | None = None
    mask_loss: tuple[str, ...] = ("qkv", "mlp")
    lambda_m: float = 1e-6
    mask_lr: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask_loss", check_groups(self.mask_loss))  # a stored list, as a tuple
        if self.encoding == "rate":  # the Poisson encoder's name before 0.2, in stored checkpoints and reports
            object.__setattr__(self, "encoding", "poisson")
        check_fields(self)
        for value, known, what in ((self.neuron, NODES, "neuron"), (self.surrogate, SURROGATES, "surrogate"),
                                   (self.encoding, ENCODERS, "encoding"), (self.reset, RESETS, "reset")):
            if value not in known:
                raise SnnConvertError(f"unknown {what} {value!r}; choose one of {', '.join(known)}")
        if self.timesteps < 1:
            raise SnnConvertError(f"timesteps must be >= 1, got {self.timesteps}")
        if not self.dynamic_timesteps:
            unused = [name for name in _DYNAMIC_ONLY if getattr(self, name) != _DEFAULTS[name]]
            if unused:
                raise ArgumentError(f"{', '.join(unused)} need dynamic time steps: add --dynamic-timesteps "
                                    "(dynamic_timesteps: true)")
            return
        if self.initial_timesteps is None:
            object.__setattr__(self, "initial_timesteps", (self.timesteps + 1) // 2)
        check_steps(self.timesteps, self.initial_timesteps)
        if not (self.lambda_m >= 0 and math.isfinite(self.lambda_m)):
            raise SnnConvertError(f"the mask-loss weight λ_m must be a finite number >= 0, got {self.lambda_m}")
        if self.mask_lr is not None and not (self.mask_lr > 0 and math.isfinite(self.mask_lr)):
            raise SnnConvertError(f"the masks' learning rate must be a finite number > 0, got {self.mask_lr}")

    def neuron_args(self) -> dict[str, Any]:
        """Keyword arguments every spiking model takes for its neurons."""
        return {"neuron": self.neuron, "surrogate": self.surrogate, "tau": self.tau, "reset": self.reset,
                "detach_reset": self.detach_reset,
                "dynamic_timesteps": (self.timesteps, self.initial_timesteps) if self.dynamic_timesteps else None}

    def describe(self) -> str:
        steps = f"T = {self.timesteps}"
        if self.dynamic_timesteps:
            loss = "+".join(self.mask_loss) or "none"
            steps = (f"dynamic time steps ≤ {self.timesteps} (from {self.initial_timesteps}, mask loss {loss}, "
                     f"λ_m = {self.lambda_m:g})")
        return f"{self.neuron} ({self.reset} reset), {self.surrogate} surrogate, {self.encoding} encoding, {steps}"


#: the settings only dynamic time steps read (left at their defaults otherwise)
_DYNAMIC_ONLY = ("initial_timesteps", "mask_loss", "lambda_m", "mask_lr")
_DEFAULTS = {f.name: f.default for f in fields(DirectConfig)}
