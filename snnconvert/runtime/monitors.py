"""The spike monitor: turns on the neurons' own recording and collects it once per batch."""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.runtime.neurons import SpikingNeuron
from snnconvert.runtime.statistics import STATS, LayerSpikes, Recorder, layer_spikes


class SpikeMonitor:
    """The spiking statistics of every :class:`SpikingNeuron` of ``model`` while attached (a
    context manager): spikes and neuron-steps, and with ``metrics="full"`` firing,
    negative-potential and residual-potential totals (``basic``: :meth:`results` gives None for
    those). Neurons keep them in their step (:class:`~snnconvert.runtime.statistics.NeuronRecord`);
    :meth:`collect` adds what they recorded since the last collect to the totals, and must run
    before the neurons are reset (the simulator calls it after each batch; :meth:`totals`,
    :meth:`results` and leaving the context collect too).

    ``model`` may also be the layers themselves, by name (any
    :class:`~snnconvert.runtime.statistics.Recorder`: the stand-ins of an exported model's neurons).
    """

    def __init__(self, model: nn.Module | dict[str, Recorder], metrics: str = "full"):
        self.metrics = metrics
        self.layers = dict(model) if isinstance(model, dict) else \
            {n: m for n, m in model.named_modules() if isinstance(m, SpikingNeuron)}
        self._totals = torch.zeros(len(self.layers), len(STATS), dtype=torch.float64)
        self._attached = False
        self._seen: dict[int, tuple[object, torch.Tensor]] = {}  # layer → (record, what was collected of it)

    def __enter__(self) -> SpikeMonitor:
        for neuron in self.layers.values():
            neuron.start_recording(self.metrics)
        self._attached = True
        return self

    def __exit__(self, *exc) -> None:
        self.collect()
        for neuron in self.layers.values():
            neuron.stop_recording()
        self._attached = False

    def collect(self) -> None:
        """Add what the neurons recorded since their last reset (or the last collect) to the totals."""
        for i, neuron in enumerate(self.layers.values()):
            record = neuron.record
            if record is None:
                continue
            now = record.totals().cpu()
            seen, before = self._seen.get(i, (None, None))
            self._totals[i] += now if seen is not record else now - before
            self._seen[i] = (record, now)

    def totals(self) -> torch.Tensor:
        """``[layers, len(STATS)]`` totals so far (float64, exact for counts below 2⁵³)."""
        if self._attached:
            self.collect()
        return self._totals.clone()

    def add(self, totals: torch.Tensor) -> None:
        """Add earlier totals (from :meth:`totals`), e.g. those of a resumed run."""
        self._totals += totals

    def results(self) -> list[LayerSpikes]:
        """Per-layer totals, in model order."""
        return layer_spikes(list(self.layers), self.totals(), self.metrics == "full")
