"""Stateful spiking modules, the one place that resets them, and time-batched stepping.

A stateful module advances one time step per call (:meth:`StatefulModule.step`). Set to take
``K`` steps per call (:func:`set_steps`), its inputs and output hold K steps stacked along the
leading dimension, time outermost (``[K·M, …]`` for M rows a step): the ops between stateful
modules then run once for all K steps (one GEMM instead of K), and each stateful module scans its
K steps exactly as K single steps would.
"""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.graph.ops import SPIKING, register_module_kind


class StatefulModule(nn.Module):
    """A module that carries state across time steps; ``reset()`` returns it to t = 0.

    Subclasses define :meth:`step`; :meth:`multi_step` (K steps, one after the other) may be
    overridden with a faster form that gives the same result.
    """

    steps = 1  # time steps per call (see the module docstring)

    def reset(self) -> None:
        raise NotImplementedError

    def forward(self, *args, **kwargs):
        return self.step(*args, **kwargs) if self.steps == 1 else self.multi_step(*args, **kwargs)

    def step(self, *args, **kwargs):
        """One time step."""
        raise NotImplementedError

    def multi_step(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``steps`` time steps of ``x`` (``[K·M, …]``), one after the other."""
        return torch.cat([self.step(x_t, *args, **kwargs) for x_t in x.chunk(self.steps)])


register_module_kind(StatefulModule, SPIKING)


def reset_states(model: nn.Module) -> None:
    """Reset every stateful module of ``model`` (the simulator calls this before each sample batch)."""
    for m in model.modules():
        if isinstance(m, StatefulModule):
            m.reset()


def set_steps(model: nn.Module, steps: int) -> None:
    """Make every stateful module of ``model`` take ``steps`` time steps per call (1: single-step)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for m in model.modules():
        if isinstance(m, StatefulModule):
            m.steps = steps


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
