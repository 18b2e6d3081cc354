"""Surrogate gradients: the Heaviside step forward, a smooth function's derivative backward.

A spike is ``s = Θ(x)`` with ``x = v − θ``; its derivative is zero almost everywhere, so training
back-propagates ``g'(x)`` of a smooth ``g`` that approximates Θ instead:

* ``sigmoid`` (α = 4, Spikformer): ``g = σ(αx)``, ``g' = α·σ(αx)·(1 − σ(αx))``
* ``atan`` (α = 2): ``g = arctan(παx/2)/π + 1/2``, ``g' = (α/2) / (1 + (παx/2)²)``
* ``softsign`` (α = 2, the survey's Eq. 8): ``g = (αx/(1 + |αx|) + 1)/2``, ``g' = α / (2·(1 + |αx|)²)``
* ``triangle`` (α = 1): ``g' = max(0, α − α²·|x|)``, ``g`` its piecewise-quadratic integral
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from snnconvert.errors import SnnConvertError


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None


@dataclass(frozen=True)
class Surrogate:
    """Θ(x) forward with ``derivative(x) = g'(x)`` backward; ``primitive`` is ``g`` itself."""

    alpha: float

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ValueError(f"surrogate alpha must be > 0, got {self.alpha}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _Spike.apply(x, self)

    def primitive(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    alpha: float = 4.0

    def primitive(self, x):
        return torch.sigmoid(self.alpha * x)

    def derivative(self, x):
        s = torch.sigmoid(self.alpha * x)
        return self.alpha * s * (1 - s)


@dataclass(frozen=True)
class ATan(Surrogate):
    alpha: float = 2.0

    def primitive(self, x):
        return torch.atan(math.pi / 2 * self.alpha * x) / math.pi + 0.5

    def derivative(self, x):
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * x) ** 2)


@dataclass(frozen=True)
class SoftSign(Surrogate):
    alpha: float = 2.0

    def primitive(self, x):
        ax = self.alpha * x
        return 0.5 * (ax / (1 + ax.abs()) + 1)

    def derivative(self, x):
        return self.alpha / (2 * (1 + (self.alpha * x).abs()) ** 2)


@dataclass(frozen=True)
class Triangle(Surrogate):
    alpha: float = 1.0

    def primitive(self, x):
        ax = (self.alpha * x).clamp(-1, 1)
        return 0.5 + ax - ax * ax.abs() / 2

    def derivative(self, x):
        return (self.alpha - self.alpha ** 2 * x.abs()).clamp(min=0)


#: surrogate functions by name, with their default α
SURROGATES: dict[str, type[Surrogate]] = {"sigmoid": Sigmoid, "atan": ATan, "softsign": SoftSign, "triangle": Triangle}


def surrogate(name: str, alpha: float | None = None) -> Surrogate:
    """The surrogate called ``name`` (with its default α unless ``alpha`` is given)."""
    if name not in SURROGATES:
        raise SnnConvertError(f"unknown surrogate {name!r}; choose one of {', '.join(SURROGATES)}")
    return SURROGATES[name]() if alpha is None else SURROGATES[name](alpha)
