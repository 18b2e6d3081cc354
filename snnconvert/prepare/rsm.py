"""Random Spike Masking (RSM, MST paper §3.4): drop spikes at random to save energy.

Each element survives with probability 1 − p: ``s_t ← s_t ⊙ m_t``, ``m_t ~ Bernoulli(1 − p)`` drawn
independently per element and step. A mask sits right after a QCFS site of a prepared model (which
:func:`~snnconvert.convert.convert` turns into an IF neuron that applies the mask to the spikes it
sends), so the same mask acts on QCFS outputs while fine-tuning and on spikes while simulating.

Targets select sites by role (:data:`snnconvert.prepare.qcfs.ROLES`): ``q``, ``k`` and ``attn``
(the scaled scores) of every attention, ``sa`` (all three: the MST paper's self-attention
masking), ``mlp`` (activations over channels-last features: the hidden layer of transformer MLPs)
and ``conv`` (activations over channels-first maps: a CNN's). "Blocks" are the modules owning the
sites (an attention, an MLP, a CNN activation), in graph order.

The mask itself is :class:`~snnconvert.runtime.masking.RandomSpikeMask`; this module decides
where masks go.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import fx, nn

from snnconvert.prepare.config import MaskConfig
from snnconvert.prepare.qcfs import QCFS
from snnconvert.errors import SnnConvertError
from snnconvert.graph.edit import insert_after
from snnconvert.runtime.masking import RandomSpikeMask

#: target → which QCFS sites it masks
TARGETS: dict[str, Callable[[QCFS], bool]] = {
    "q": lambda s: s.role == "q",
    "k": lambda s: s.role == "k",
    "attn": lambda s: s.role == "scores",
    "sa": lambda s: s.role in ("q", "k", "scores"),
    "mlp": lambda s: s.role == "activation" and s.channel_axis == -1,
    "conv": lambda s: s.role == "activation" and s.channel_axis == 1,
}


def mask_sites(model: nn.Module, target: str) -> list[list[str]]:
    """The sites ``target`` selects, grouped by the block (module) that owns them, in graph order."""
    select = TARGETS[target]
    blocks: dict[str, list[str]] = {}
    for node in model.graph.nodes:
        if node.op == "call_module":
            module = model.get_submodule(node.target)
            if isinstance(module, QCFS) and select(module):
                owner = node.target.rpartition(".")[0] if target != "conv" else node.target
                blocks.setdefault(owner, []).append(node.target)
    return list(blocks.values())


def add_spike_masks(model: fx.GraphModule, config: MaskConfig) -> list[str]:
    """Put a :class:`RandomSpikeMask` after every selected site of a prepared model, in place
    (``<site>_mask``); returns the masked sites. Each mask gets the next seed, from ``config.seed``."""
    nodes = {n.target: n for n in model.graph.nodes if n.op == "call_module"}
    masked, seed = [], config.seed
    for target, ratio in config.ratios.items():
        for block in mask_sites(model, target)[: config.blocks]:
            for site in block:
                node = nodes[site]
                if any(u.op == "call_module" and isinstance(model.get_submodule(u.target), RandomSpikeMask)
                       for u in node.users):
                    raise SnnConvertError(f"{site} is masked already")
                insert_after(model, node, f"{site}_mask", RandomSpikeMask(ratio, seed))
                masked.append(site)
                seed += 1
    model.recompile()
    return masked


def spike_masks(model: nn.Module) -> dict[str, RandomSpikeMask]:
    """Every mask of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, RandomSpikeMask)}
