"""Stateful spiking modules and the one place that resets them."""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.graph.ops import SPIKING, register_module_kind


class StatefulModule(nn.Module):
    """A module that carries state across time steps; ``reset()`` returns it to t = 0."""

    def reset(self) -> None:
        raise NotImplementedError


register_module_kind(StatefulModule, SPIKING)


def reset_states(model: nn.Module) -> None:
    """Reset every stateful module of ``model`` (the simulator calls this before each sample batch)."""
    for m in model.modules():
        if isinstance(m, StatefulModule):
            m.reset()


def adopt_state_shapes(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str,
                       names: tuple[str, ...] = ("threshold",)) -> None:
    """Before loading, give ``module``'s tensors ``names`` the shapes stored in ``state_dict``.

    Thresholds (and a neuron's potentials and biases) are layer-wise (a scalar) or channel-wise
    depending on how a model was calibrated, and a neuron has a bias only once calibrated, so a
    freshly built model must take the shapes of the checkpoint it loads.
    """
    for name in names:
        stored = state_dict.get(prefix + name)
        current = getattr(module, name)
        if stored is None or current is not None and stored.shape == current.shape:
            continue
        reference = current if current is not None else stored
        value = stored.detach().to(reference.device, reference.dtype).clone()
        if isinstance(current, nn.Parameter):
            setattr(module, name, nn.Parameter(value, requires_grad=current.requires_grad))
        else:
            setattr(module, name, value)
