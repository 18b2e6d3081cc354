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


def adopt_threshold_shape(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
    """Before loading, give ``module.threshold`` the shape stored in ``state_dict``.

    Thresholds are layer-wise (a scalar) or channel-wise depending on how a model was calibrated,
    so a freshly built model must take the shape of the checkpoint it loads.
    """
    stored = state_dict.get(prefix + "threshold")
    current = module.threshold
    if stored is not None and stored.shape != current.shape:
        value = stored.detach().to(current.device, current.dtype).clone()
        if isinstance(current, nn.Parameter):
            module.threshold = nn.Parameter(value, requires_grad=current.requires_grad)
        else:
            module.threshold = value
