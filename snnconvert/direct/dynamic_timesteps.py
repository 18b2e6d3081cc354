"""Dynamic time steps (DTSS, Datta et al., "Spiking Neural Networks with Dynamic Time Steps for
Vision Transformers", §III): each spiking layer learns how many of the T_max steps it sends.

Per layer l, a trainable parameter tensor ``TP_l`` of length T_max gives the score tensor

    ``TS_l = max(TP_l, 0)·coeff``,  coeff the all-ones lower-triangular T_max × T_max matrix,
    i.e. ``TS_l^t = Σ_{i≥t} max(TP_l^i, 0)``: non-increasing in t whatever the parameters (the
    clamp passes its gradient straight through, so a parameter pushed below 0 can come back),

and the binary time-step mask ``TM_l^t = Θ(TS_l^t) = [TS_l^t ≥ 1]``, back-propagated through the
surrogate ``∂TM/∂TS = 1 if 0 < TS < 2 else 0`` (Eq. 5–6); the first step is always kept
(``TM_l^0 = 1``: a layer has at least one step, or it would not be a layer; the paper is silent,
and its smallest T_avg, 1.03, fits), its gradient still that of ``Θ(TS_l^0)``: what the first
step is worth raises every ``TP_l^i``, so a layer can grow from one step. The layer sends ``O_l^t = Y_l^t·TM_l^t`` (Eq. 7), ``Y_l`` its
neurons' spikes. As TS never rises again, the mask keeps a prefix of the steps: the layer has
``T_l = Σ_t TM_l^t`` steps and sends nothing after them (no steps are skipped in between), so a
simulation stops computing it after step T_l (:mod:`snnconvert.runtime.execution`).
``T_avg = Σ_l T_l / L`` over the L masked layers (Eq. 3).

The mask loss ``λ_m · Σ_{l ∈ groups} Σ_t TM_l^t`` (Eq. 8) pulls the steps of the layers in the
chosen groups down: ``sps`` (the patch-splitting stem), ``qkv`` (the query, key and value
neurons), ``attn`` (the attention's output neurons and its projection), ``mlp``.

A layer starting with ``T_init`` steps gets ``TS = 1.5`` for its first T_init steps and ``0.75``
after: every score starts inside the surrogate's window, so every step can be gained or lost.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from snnconvert.errors import SnnConvertError

#: the layer groups a mask loss can select (the paper's Table III)
GROUPS = ("sps", "qkv", "attn", "mlp")


class _StepMask(torch.autograd.Function):
    """``[TS ≥ 1]`` forward; ``∂TM/∂TS = 1`` on ``0 < TS < 2`` backward."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scores)
        return (scores >= 1).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (scores,) = ctx.saved_tensors
        return grad * ((scores > 0) & (scores < 2)).to(grad.dtype)


class TimestepMask(nn.Module):
    """The time-step mask of one spiking layer (see the module docstring).

    Args:
        max_steps: T_max, the length of ``TP``.
        initial_steps: T_init, the steps the layer starts with (1..T_max).
        group: which mask-loss group the layer belongs to (one of :data:`GROUPS`).
    """

    def __init__(self, max_steps: int, initial_steps: int, group: str):
        super().__init__()
        check_steps(max_steps, initial_steps)
        if group not in GROUPS:
            raise SnnConvertError(f"unknown layer group {group!r}; choose one of {', '.join(GROUPS)}")
        self.group = group
        initial = torch.full((max_steps,), 0.75)
        initial[:initial_steps] = 1.5
        # TP^t = TS^t − TS^{t+1} (TS^{T_max} = 0): non-negative, so the scores start as given
        self.tp = nn.Parameter(initial - torch.cat([initial[1:], torch.zeros(1)]))

    @property
    def max_steps(self) -> int:
        return self.tp.numel()

    def scores(self) -> torch.Tensor:
        """``TS = max(TP, 0)·coeff``: the reversed cumulative sum of the clamped parameters."""
        clamped = self.tp + (self.tp.clamp(min=0) - self.tp).detach()  # ∂/∂TP = 1 everywhere
        return clamped.flip(0).cumsum(0).flip(0)

    def mask(self) -> torch.Tensor:
        """``TM``: 1 for the steps the layer sends (the first always), 0 after (length T_max)."""
        mask = _StepMask.apply(self.scores())
        return torch.cat([mask[:1] + (1 - mask[:1]).detach(), mask[1:]])  # 1, with Θ(TS⁰)'s gradient

    def at(self, t: int | torch.Tensor) -> torch.Tensor:
        """``TM^{t−1}``, the mask of step ``t`` (1-based: the steps done, this one included; 0 after
        T_max). ``t`` is a number, or a 0-d tensor in an exported step."""
        mask = torch.cat([self.mask(), self.tp.new_zeros(1)])
        index = (t - 1).clamp(max=self.max_steps) if isinstance(t, torch.Tensor) else min(t - 1, self.max_steps)
        return mask[index]

    @property
    def steps(self) -> int:
        """``T_l``: how many steps the layer sends."""
        return int(self.mask().detach().sum())

    def extra_repr(self) -> str:
        return f"group={self.group}, steps={self.steps}/{self.max_steps}"


def check_steps(max_steps: int, initial_steps: int) -> None:
    """Refuse a T_max or T_init that cannot be, naming the fix."""
    if max_steps < 1:
        raise SnnConvertError(f"the maximum time steps must be >= 1, got {max_steps}")
    if not 1 <= initial_steps <= max_steps:
        raise SnnConvertError(f"the initial time steps must be in 1..{max_steps} (the maximum), got {initial_steps}")


def check_groups(groups: Iterable[str]) -> tuple[str, ...]:
    """``groups`` as a tuple, each one of :data:`GROUPS`."""
    groups = tuple(groups)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise SnnConvertError(f"unknown mask-loss group(s) {', '.join(map(repr, unknown))}; choose from "
                              f"{', '.join(GROUPS)}")
    return groups


def timestep_masks(model: nn.Module) -> dict[str, TimestepMask]:
    """Every time-step mask of ``model``, by the name of the layer (neuron) it masks."""
    return {name.rpartition(".")[0]: m for name, m in model.named_modules() if isinstance(m, TimestepMask)}


def mask_loss(model: nn.Module, groups: Iterable[str]) -> torch.Tensor:
    """``Σ_{l ∈ groups} Σ_t TM_l^t`` over the masks of ``model`` (times λ_m, the mask loss)."""
    groups = set(groups)
    terms = [m.mask().sum() for m in timestep_masks(model).values() if m.group in groups]
    return torch.stack(terms).sum() if terms else torch.zeros(())


@dataclass(frozen=True)
class LayerSteps:
    """One masked layer: its name, group and ``T_l`` out of T_max."""

    name: str
    group: str
    steps: int
    max_steps: int


def layer_steps(model: nn.Module) -> list[LayerSteps]:
    """``T_l`` of every masked layer of ``model``, in module order."""
    return [LayerSteps(n, m.group, m.steps, m.max_steps) for n, m in timestep_masks(model).items()]


def average_steps(layers: list[LayerSteps]) -> float:
    """``T_avg = Σ_l T_l / L`` (Eq. 3)."""
    return sum(layer.steps for layer in layers) / max(1, len(layers))
