"""Random Spike Masking (RSM, MST paper §3.4): drop spikes at random to save energy.

Each element survives with probability 1 − p: ``s_t ← s_t ⊙ m_t``, ``m_t ~ Bernoulli(1 − p)`` drawn
independently per element and step. A mask sits right after a spiking site — a QCFS activation of
a prepared model, which :func:`~snnconvert.convert.convert` turns into an IF neuron in place — so
the same mask acts on QCFS outputs while fine-tuning and on spikes while simulating.

Targets: ``q``, ``k`` and ``attn`` (the scaled scores) of every spiking attention, ``mlp`` (the
hidden layer of every spiking MLP), and ``conv`` (every QCFS over channels-first maps: the
activations of a CNN, including a VGG classifier's hidden layers). Masks are added to the
prepared model (``conv`` sites are found only there) and survive conversion.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from snnconvert.convert.attention import SpikeAttention, SpikeWindowAttention
from snnconvert.convert.blocks import SpikeMlp
from snnconvert.convert.qcfs import QCFS
from snnconvert.errors import SnnConvertError

#: target → (owner types, attribute names of the spiking sites in each owner)
TARGETS: dict[str, tuple[tuple[type, ...], tuple[str, ...]]] = {
    "q": ((SpikeAttention, SpikeWindowAttention), ("q_act",)),
    "k": ((SpikeAttention, SpikeWindowAttention), ("k_act",)),
    "attn": ((SpikeAttention, SpikeWindowAttention), ("attn_act",)),
    "mlp": ((SpikeMlp,), ("act1",)),
}


class RandomSpikeMask(nn.Module):
    """Keep each element of the input with probability ``1 − ratio`` (no rescaling).

    Draws come from the module's own generator, seeded with ``seed`` and restarted by
    :meth:`reseed`, so a run is reproducible; ``ratio = 0`` returns the input itself.
    """

    def __init__(self, ratio: float, seed: int = 0):
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"masking ratio must be in [0, 1), got {ratio}")
        self.ratio, self.seed = ratio, seed
        self._generator: torch.Generator | None = None

    def reseed(self) -> None:
        """Start the mask sequence again from ``seed``."""
        self._generator = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ratio == 0.0:
            return x
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        keep = torch.rand(x.shape, generator=self._generator, device=x.device) >= self.ratio
        return x * keep

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, seed={self.seed}"


@dataclass(frozen=True)
class MaskConfig:
    """Where and how much to mask.

    Attributes:
        ratios: masking ratio p per target (``q``, ``k``, ``attn``, ``mlp``, ``conv``).
        blocks: mask only the first ``blocks`` owners of each target in model order (transformer
            blocks for ``q``/``k``/``attn``/``mlp``, activations for ``conv``); None: all.
        seed: seed of the first mask; each further mask gets the next seed.
    """

    ratios: dict[str, float] = field(default_factory=dict)
    blocks: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.ratios) - set(TARGETS) - {"conv"})
        if unknown:
            raise SnnConvertError(f"unknown masking targets {unknown}; choose from "
                                  f"{', '.join([*TARGETS, 'conv'])}")
        if self.blocks is not None and self.blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {self.blocks}")


def mask_sites(model: nn.Module, target: str) -> list[tuple[nn.Module, str]]:
    """``(owner, attribute)`` of every site of ``target``, in model order."""
    if target == "conv":  # QCFS over channels-first maps (CNN activations; found before conversion only)
        return [(owner, name) for owner in model.modules() for name, child in owner.named_children()
                if isinstance(child, QCFS) and child.channel_axis == 1]
    types, attrs = TARGETS[target]
    return [(owner, attr) for owner in model.modules() if isinstance(owner, types) for attr in attrs]


def add_spike_masks(model: nn.Module, config: MaskConfig) -> list[str]:
    """Put a :class:`RandomSpikeMask` after every selected site of a prepared or converted model,
    in place; returns the masked sites' names. A site becomes ``Sequential(site, mask)``."""
    names = {id(m): n for n, m in model.named_modules()}
    masked, seed = [], config.seed
    for target, ratio in config.ratios.items():
        sites = mask_sites(model, target)
        if config.blocks is not None:
            sites = sites[: config.blocks]
        for owner, attr in sites:
            site = getattr(owner, attr)
            if isinstance(site, nn.Sequential) and isinstance(site[-1], RandomSpikeMask):
                raise SnnConvertError(f"{names[id(owner)]}.{attr} is masked already")
            setattr(owner, attr, nn.Sequential(OrderedDict(site=site, mask=RandomSpikeMask(ratio, seed))))
            masked.append(f"{names[id(owner)]}.{attr}".lstrip("."))
            seed += 1
    return masked


def spike_masks(model: nn.Module) -> dict[str, RandomSpikeMask]:
    """Every mask of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, RandomSpikeMask)}
