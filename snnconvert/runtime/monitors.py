"""Monitors: forward hooks that record spiking statistics without touching the neurons."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from snnconvert.runtime.neurons import IFNeuron


@dataclass
class LayerSpikes:
    """Spikes of one IF layer, summed over every step and sample it saw.

    Attributes:
        name: qualified module name.
        spikes: number of spikes emitted (negative spikes and every spike of a burst included).
        neuron_steps: neurons × steps × samples (every chance to spike).
    """

    name: str
    spikes: int
    neuron_steps: int

    @property
    def rate(self) -> float:
        """Firing rate: spikes per neuron per step."""
        return self.spikes / max(1, self.neuron_steps)


class SpikeMonitor:
    """Counts the spikes every :class:`IFNeuron` of ``model`` emits while attached (a context manager)."""

    def __init__(self, model: nn.Module):
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, IFNeuron)}
        self._spikes: dict[str, torch.Tensor] = {}
        self._elements: dict[str, int] = {}
        self._handles: list = []

    def _hook(self, name: str):
        def record(module: IFNeuron, _inputs, out: torch.Tensor) -> None:
            # out = θ·s with s the signed number of spikes this step (bursts count each spike); the
            # per-step count is rounded to an integer so that totals over many steps stay exact
            theta = module.threshold
            spikes = (out.abs() / theta).sum() if theta.dim() else out.abs().sum() / theta
            self._spikes[name] = self._spikes.get(name, 0) + spikes.round().long()
            self._elements[name] = self._elements.get(name, 0) + out.numel()
        return record

    def __enter__(self) -> SpikeMonitor:
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Spikes and neuron-steps per layer so far, as integer tensors in model order."""
        return (torch.tensor([int(self._spikes.get(n, 0)) for n in self.layers], dtype=torch.long),
                torch.tensor([self._elements.get(n, 0) for n in self.layers], dtype=torch.long))

    def add(self, spikes: torch.Tensor, neuron_steps: torch.Tensor) -> None:
        """Add earlier totals (from :meth:`totals`), e.g. those of a resumed run."""
        for name, s, k in zip(self.layers, spikes.tolist(), neuron_steps.tolist()):
            self._spikes[name] = self._spikes.get(name, 0) + s
            self._elements[name] = self._elements.get(name, 0) + k

    def results(self) -> list[LayerSpikes]:
        """Per-layer totals, in model order."""
        return layer_spikes(list(self.layers), *self.totals())


def layer_spikes(names: list[str], spikes: torch.Tensor, neuron_steps: torch.Tensor) -> list[LayerSpikes]:
    """:class:`LayerSpikes` from per-layer totals (as :meth:`SpikeMonitor.totals` gives them)."""
    return [LayerSpikes(n, int(s), int(k)) for n, s, k in zip(names, spikes, neuron_steps)]
