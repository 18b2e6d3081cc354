"""Simulate a converted model for T steps: accuracy at every t from one pass, spikes per layer.

Input is direct-coded (the image is presented at every step; the first layer sees real values).
The prediction at step t is the argmax of the running mean of the outputs ``Σ_{τ≤t} y_τ / t``.
Memory does not grow with T: only the running sum of outputs and the neurons' state are kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from snnconvert.runtime.monitors import LayerSpikes, SpikeMonitor
from snnconvert.runtime.state import reset_states


@dataclass
class SimulationResult:
    """What one simulation measured.

    Attributes:
        timesteps: T.
        samples: number of samples simulated.
        correct: correct predictions after each step t = 1..T (length T).
        layers: spikes per IF layer.
        seconds: wall time of the simulation.
    """

    timesteps: int
    samples: int
    correct: list[int]
    layers: list[LayerSpikes] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accuracy(self) -> list[float]:
        """Accuracy (%) after each step t = 1..T."""
        return [100.0 * c / max(1, self.samples) for c in self.correct]

    def accuracy_at(self, t: int) -> float:
        """Accuracy (%) after ``t`` steps."""
        if not 1 <= t <= self.timesteps:
            raise ValueError(f"t must be in 1..{self.timesteps}, got {t}")
        return self.accuracy[t - 1]

    @property
    def spikes_per_sample(self) -> float:
        """Total spikes over T steps, per sample."""
        return sum(layer.spikes for layer in self.layers) / max(1, self.samples)


def _batches(data, labels) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, torch.Tensor):
        if labels is None:
            raise ValueError("labels are required when data is a tensor")
        yield data, labels
    else:
        if labels is not None:
            raise ValueError("labels must be None when data is a DataLoader (it yields them)")
        yield from data


@torch.no_grad()
def simulate(snn: nn.Module, data, labels: torch.Tensor | None = None, timesteps: int = 32,
             device: str | torch.device = "cpu", progress: bool = False,
             input_shape: tuple[int, ...] | None = None) -> SimulationResult:
    """Run a converted model for ``timesteps`` steps on a batch or a DataLoader.

    Args:
        snn: output of :func:`snnconvert.convert.convert`.
        data: an image batch ``[N, C, H, W]`` (with ``labels``), or an iterable of
            ``(images, labels)`` batches.
        labels: ``[N]`` class indices when ``data`` is a tensor.
        timesteps: T, the number of steps.
        device: where to run.
        progress: show a progress bar over batches.
        input_shape: the ``(C, H, W)`` the model expects; checked on every batch.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    snn.eval().to(device)
    correct = torch.zeros(timesteps, dtype=torch.long)
    samples = 0
    start = time.perf_counter()
    batches = _batches(data, labels)
    if progress:
        total = len(data) if hasattr(data, "__len__") and not isinstance(data, torch.Tensor) else None
        batches = tqdm(batches, total=total, desc=f"simulate T={timesteps}", unit="batch")
    with SpikeMonitor(snn) as monitor:
        for images, targets in batches:
            if input_shape is not None and tuple(images.shape[1:]) != tuple(input_shape):
                raise ValueError(f"input batch has shape {tuple(images.shape)}, the model expects "
                                 f"[N, {', '.join(map(str, input_shape))}]: resize the data or pick "
                                 f"the matching model")
            images, targets = images.to(device), targets.to(device)
            reset_states(snn)
            total_out = None
            for t in range(timesteps):
                out = snn(images)
                total_out = out if total_out is None else total_out + out
                correct[t] += (total_out.argmax(-1) == targets).sum().cpu()
            samples += targets.numel()
        reset_states(snn)
    return SimulationResult(timesteps, samples, correct.tolist(), monitor.results(),
                            time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: nn.Module, data, labels: torch.Tensor | None = None,
             device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy (%) of an ANN (e.g. the QCFS model) on the same inputs as :func:`simulate`."""
    model.eval().to(device)
    correct = total = 0
    for images, targets in _batches(data, labels):
        pred = model(images.to(device)).argmax(-1).cpu()
        correct += int((pred == targets).sum())
        total += targets.numel()
    return 100.0 * correct / max(1, total)
