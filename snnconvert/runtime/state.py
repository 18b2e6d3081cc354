"""Stateful spiking modules, the one place that resets them, and time-batched stepping.

A stateful module advances one time step per call (:meth:`StatefulModule.step`). Set to take
``K`` steps per call (:func:`set_steps`), its inputs and output hold K steps stacked along the
leading dimension, time outermost (``[K·M, …]`` for M rows a step): the ops between stateful
modules then run once for all K steps (one GEMM instead of K), and each stateful module scans its
K steps exactly as K single steps would.

Its state can also be read and given (:meth:`StatefulModule.state`, :meth:`~StatefulModule.load_state`):
what an exported step takes and returns (:mod:`snnconvert.export`). Every module counts the steps
done since the reset in ``t`` (a number, or one 0-d tensor that an exported step shares).
"""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.graph.ops import SPIKING, register_module_kind


class StatefulModule(nn.Module):
    """A module that carries state across time steps; ``reset()`` returns it to t = 0.

    Subclasses define :meth:`step`; :meth:`multi_step` (K steps, one after the other) may be
    overridden with a faster form that gives the same result. The tensors carried from step to
    step are declared once, by attribute name, in :attr:`memories` (None until the first step
    after a reset; an attribute holding a list of tensors is carried as ``<name>0``, ``<name>1`` …):
    :meth:`reset`, :meth:`state` and :meth:`load_state` follow from it, and :meth:`initial_state`
    is zeros unless a subclass says otherwise (a neuron's ``v(0)``).
    """

    steps = 1  # time steps per call (see the module docstring)
    t: int | torch.Tensor = 0  # steps done since the reset
    #: the tensors carried to the next step, by attribute name
    memories: tuple[str, ...] = ()
    #: the steps after which its output is zero whatever its input (None: it may send at any
    #: step); a simulation stops computing it, and what only it reads, after them
    last_step: int | None = None

    def reset(self) -> None:
        """Back to t = 0: no step done, every memory None."""
        self.t = 0
        for name in self.memories:
            setattr(self, name, None)

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors carried to the next step, by name ({} before the first step since the reset)."""
        found = {}
        for name in self.memories:
            value = getattr(self, name)
            if isinstance(value, list):
                found.update({f"{name}{i}": v for i, v in enumerate(value)})
            elif value is not None:
                found[name] = value
        return found

    def initial_state(self) -> dict[str, torch.Tensor]:
        """What :meth:`state` holds before the first step (same shapes; called after a step)."""
        return {name: torch.zeros_like(value) for name, value in self.state().items()}

    def load_state(self, state: dict[str, torch.Tensor], t: int | torch.Tensor) -> None:
        """Go on from ``state`` after ``t`` steps (``t`` a number, or a 0-d tensor in an exported
        step); the module then updates those tensors, in place or not."""
        self.t = t
        for name in self.memories:
            setattr(self, name, state[name] if name in state else _numbered(state, name) or None)

    def forward(self, *args, **kwargs):
        return self.step(*args, **kwargs) if self.steps == 1 else self.multi_step(*args, **kwargs)

    def step(self, *args, **kwargs):
        """One time step."""
        raise NotImplementedError

    def multi_step(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``steps`` time steps of ``x`` (``[K·M, …]``), one after the other."""
        return torch.cat([self.step(x_t, *args, **kwargs) for x_t in x.chunk(self.steps)])


def _numbered(state: dict[str, torch.Tensor], name: str) -> list[torch.Tensor]:
    """``state[name0], state[name1] …`` as far as they go (a list memory)."""
    values = []
    while f"{name}{len(values)}" in state:
        values.append(state[f"{name}{len(values)}"])
    return values


register_module_kind(StatefulModule, SPIKING)


def reset_states(model: nn.Module) -> None:
    """Reset every stateful module of ``model`` (the simulator calls this before each sample batch)."""
    for m in model.modules():
        if isinstance(m, StatefulModule):
            m.reset()


def is_first(t: int | torch.Tensor) -> float | torch.Tensor:
    """1 before the first step (``t = 0`` steps done), else 0: a number, or a 0-d float tensor when
    ``t`` is one (an exported step)."""
    return (t == 0).float() if isinstance(t, torch.Tensor) else float(t == 0)


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
