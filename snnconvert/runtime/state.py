"""Stateful spiking modules and the one place that resets them."""
from __future__ import annotations

from torch import nn


class StatefulModule(nn.Module):
    """A module that carries state across time steps; ``reset()`` returns it to t = 0."""

    def reset(self) -> None:
        raise NotImplementedError


def reset_states(model: nn.Module) -> None:
    """Reset every stateful module of ``model`` (the simulator calls this before each sample batch)."""
    for m in model.modules():
        if isinstance(m, StatefulModule):
            m.reset()
