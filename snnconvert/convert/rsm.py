"""Random Spike Masking (RSM, MST paper §3.4): drop spikes at random to save energy.

Each element survives with probability 1 − p: ``s_t ← s_t ⊙ m_t``, ``m_t ~ Bernoulli(1 − p)`` drawn
independently per element and step. A mask sits right after a spiking site — a QCFS activation of
a prepared model, which :func:`~snnconvert.convert.convert` turns into an IF neuron in place — so
the same mask acts on QCFS outputs while fine-tuning and on spikes while simulating.

Targets: ``q``, ``k`` and ``attn`` (the scaled scores) of every spiking attention, ``sa`` (all
three: the MST paper's self-attention masking), ``mlp`` (the hidden layer of every spiking MLP),
and ``conv`` (every QCFS over channels-first maps: the activations of a CNN, including a VGG
classifier's hidden layers). Masks are added to the prepared model (``conv`` sites are found only
there) and survive conversion.

The mask itself is :class:`~snnconvert.runtime.masking.RandomSpikeMask`; this module decides
where masks go.
"""
from __future__ import annotations

from collections import OrderedDict
from torch import nn

from snnconvert.convert.attention import SpikeAttention, SpikeWindowAttention
from snnconvert.convert.blocks import SpikeMlp
from snnconvert.convert.config import MaskConfig
from snnconvert.convert.qcfs import QCFS
from snnconvert.runtime.masking import RandomSpikeMask
from snnconvert.errors import SnnConvertError

#: target → (owner types, attribute names of the spiking sites in each owner)
TARGETS: dict[str, tuple[tuple[type, ...], tuple[str, ...]]] = {
    "q": ((SpikeAttention, SpikeWindowAttention), ("q_act",)),
    "k": ((SpikeAttention, SpikeWindowAttention), ("k_act",)),
    "attn": ((SpikeAttention, SpikeWindowAttention), ("attn_act",)),
    "sa": ((SpikeAttention, SpikeWindowAttention), ("q_act", "k_act", "attn_act")),
    "mlp": ((SpikeMlp,), ("act1",)),
}


def mask_sites(model: nn.Module, target: str) -> list[tuple[nn.Module, tuple[str, ...]]]:
    """``(owner, attributes)`` of every owner of ``target``'s sites, in model order: one per
    attention or MLP for the transformer targets, one per activation for ``conv``."""
    if target == "conv":  # QCFS over channels-first maps (CNN activations; found before conversion only)
        return [(owner, (name,)) for owner in model.modules() for name, child in owner.named_children()
                if isinstance(child, QCFS) and child.channel_axis == 1]
    types, attrs = TARGETS[target]
    return [(owner, attrs) for owner in model.modules() if isinstance(owner, types)]


def add_spike_masks(model: nn.Module, config: MaskConfig) -> list[str]:
    """Put a :class:`RandomSpikeMask` after every selected site of a prepared or converted model,
    in place; returns the masked sites' names. A site becomes ``Sequential(site, mask)``."""
    names = {id(m): n for n, m in model.named_modules()}
    masked, seed = [], config.seed
    for target, ratio in config.ratios.items():
        for owner, attrs in mask_sites(model, target)[: config.blocks]:
            for attr in attrs:
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
