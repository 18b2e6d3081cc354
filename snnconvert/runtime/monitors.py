"""Monitors: forward hooks that record spiking statistics without touching the neurons."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from snnconvert.runtime.neurons import SpikingNeuron


@dataclass
class LayerSpikes:
    """Spikes of one IF layer, summed over every step and sample it saw.

    Attributes:
        name: qualified module name.
        spikes: number of spikes sent (negative spikes and every spike of a burst included; spikes
            a random spike mask removes are not).
        neuron_steps: neurons × steps × samples (every chance to spike).
        firing: neuron-steps with at least one spike.
        negative: neuron-steps that ended with a negative membrane potential.
        residual: Σ of the potential over threshold left by firing, in θ, over the firing
            neuron-steps (kept by reset by subtraction, discarded by a hard reset).
    """

    name: str
    spikes: int
    neuron_steps: int
    firing: int = 0
    negative: int = 0
    residual: float = 0.0

    @property
    def rate(self) -> float:
        """Firing rate: spikes per neuron per step."""
        return self.spikes / max(1, self.neuron_steps)

    @property
    def spike_percent(self) -> float:
        """Percent of neuron-steps that fired (the survey's spike percent)."""
        return 100.0 * self.firing / max(1, self.neuron_steps)

    @property
    def negative_percent(self) -> float:
        """Percent of neuron-steps ending with a negative potential (negative-potential percent)."""
        return 100.0 * self.negative / max(1, self.neuron_steps)

    @property
    def mean_residual(self) -> float:
        """Mean potential left after firing, in units of θ (residual potential)."""
        return self.residual / max(1, self.firing)


#: the per-layer totals a monitor keeps, in :class:`LayerSpikes` field order
STATS = ("spikes", "neuron_steps", "firing", "negative", "residual")


class SpikeMonitor:
    """Records the spiking statistics of every :class:`SpikingNeuron` of ``model`` while attached (a
    context manager): spikes, neuron-steps, firing, negative-potential and residual-potential totals."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, SpikingNeuron)}
        self._totals = torch.zeros(len(self.layers), len(STATS), dtype=torch.float64)
        self._handles: list = []

    def _hook(self, index: int):
        @torch.no_grad()
        def record(module: SpikingNeuron, _inputs, out: torch.Tensor) -> None:
            # every spike counts (negative ones and each of a burst); the per-step count is rounded
            # to an integer so that totals over many steps stay exact
            spikes = module.spike_count(out).abs().sum()
            fired = out != 0
            v = module.v / module.threshold
            step = torch.stack([spikes.round().double(), torch.tensor(out.numel(), dtype=torch.float64),
                                fired.sum().double(), (v < 0).sum().double(),
                                (module.residual() * fired).sum().double()])
            self._totals[index] += step.cpu()
        return record

    def __enter__(self) -> SpikeMonitor:
        self._handles = [neuron.register_forward_hook(self._hook(i)) for i, neuron in enumerate(self.layers.values())]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def totals(self) -> torch.Tensor:
        """``[layers, len(STATS)]`` totals so far (float64, exact for counts below 2⁵³)."""
        return self._totals.clone()

    def add(self, totals: torch.Tensor) -> None:
        """Add earlier totals (from :meth:`totals`), e.g. those of a resumed run."""
        self._totals += totals

    def results(self) -> list[LayerSpikes]:
        """Per-layer totals, in model order."""
        return layer_spikes(list(self.layers), self._totals)


def layer_spikes(names: list[str], totals: torch.Tensor) -> list[LayerSpikes]:
    """:class:`LayerSpikes` from ``[layers, len(STATS)]`` totals (as :meth:`SpikeMonitor.totals` gives them)."""
    return [LayerSpikes(n, int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4]))
            for n, row in zip(names, totals.tolist())]
