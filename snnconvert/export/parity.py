"""How closely an exported step in onnxruntime follows the PyTorch model, step by step.

Both run the same batch for T steps, the exported step from the PyTorch model's own state after
``start`` steps (0: from the initial state), and are compared at every step: predictions, outputs
(relative to the largest PyTorch output of the step) and the spikes each layer sends. In float32
the two runtimes round differently (other kernels, other summation orders), so a membrane within
a rounding error of θ can fire in one and not the other; such a spike is counted, not hidden.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snnconvert.export.session import OnnxExecution, OnnxStep
from snnconvert.graph.edit import in_run_order
from snnconvert.runtime.energy import EventCounts
from snnconvert.runtime.neurons import IFNeuron
from snnconvert.runtime.state import reset_states


@dataclass
class Parity:
    """PyTorch against onnxruntime over ``steps`` steps of ``samples`` samples.

    Attributes:
        start: the steps PyTorch ran before the exported step took over its state.
        forced: whether the exported step was given PyTorch's state before every step (so each
            step's differences are that step's alone) rather than running on its own.
        differing_predictions: (step, sample) pairs whose argmax of the running output total differs.
        max_relative_output: max over steps of ``max|y_ort − y_torch| / max|y_torch|``.
        spikes: per layer, the spikes sent in those steps by PyTorch and by onnxruntime.
        flips: (forced runs) element-steps whose spikes differ.
        max_margin: (forced runs) over the first differing spike of each sample and step (where
            rounding decided; the later ones follow from it), the largest distance of the IF
            neuron's potential before firing from θ, in θ (NaN: such a spike was not an IF neuron's).
        max_relative_output_same_spikes: (forced runs) as ``max_relative_output``, over the samples
            and steps where every spike agreed.
    """

    start: int
    steps: int
    samples: int
    forced: bool = False
    differing_predictions: int = 0
    max_relative_output: float = 0.0
    spikes: dict[str, tuple[int, int]] = field(default_factory=dict)
    max_margin: float | None = None
    max_relative_output_same_spikes: float = 0.0
    flips: int = 0

    @property
    def differing_spikes(self) -> int:
        """Forced: the elements and steps whose spikes differ; else Σ over layers of
        |spikes(PyTorch) − spikes(onnxruntime)|."""
        return self.flips if self.forced else sum(abs(a - b) for a, b in self.spikes.values())

    @property
    def total_spikes(self) -> int:
        return sum(a for a, _ in self.spikes.values())


def _counts(events: EventCounts) -> dict[str, torch.Tensor]:
    """The spikes each source sent since the reset, per element (a copy)."""
    return {name: events.record(name).counts.clone() for name in events.modules}


def _torch_state(step: OnnxStep, modules: dict[str, nn.Module], events: EventCounts) -> dict[str, np.ndarray]:
    """The PyTorch model's state in the exported step's layout."""
    return {e.name: (events.record(e.module).counts if e.key == "spikes" else modules[e.module].state()[e.key])
            .cpu().numpy().copy() for e in step.entries}


@torch.no_grad()
def parity(snn: nn.Module, path: str | Path, images: torch.Tensor, timesteps: int, start: int = 0,
           forced: bool = False) -> Parity:
    """Compare the PyTorch model ``snn`` with its export at ``path`` on ``images`` over steps
    ``start + 1 … timesteps`` (see the module docstring); ``forced``: from PyTorch's state at every step."""
    step = OnnxStep(path)
    execution = OnnxExecution(step)
    modules = dict(snn.named_modules())
    snn.eval()
    reset_states(snn)
    sources = {n: m for n, m in in_run_order(snn) if n in execution.sources}  # in the order they run
    try:
        with EventCounts(sources) as events:
            for _ in range(start):
                snn(images)
            execution.reset()
            x = execution.inputs(images)
            result = Parity(start, timesteps - start, len(images), forced)
            first = _counts(events) if start else {}
            total_torch = total_onnx = None
            for t in range(start, timesteps):
                if t > 0 and (forced or t == start):
                    execution.load(_torch_state(step, modules, events), t)
                given = execution.state()
                y = snn(images)
                (y_onnx,) = execution.run(x, 1)
                scale = float(y.abs().max()) or 1.0
                difference = (y_onnx - y).abs().reshape(len(y), -1).max(1).values / scale
                result.max_relative_output = max(result.max_relative_output, float(difference.max()))
                if forced:
                    same = ~_compare_spikes(events, given, execution.state(), result, len(images))
                    if bool(same.any()):
                        result.max_relative_output_same_spikes = max(result.max_relative_output_same_spikes,
                                                                     float(difference[same].max()))
                total_torch = y.clone() if total_torch is None else total_torch + y
                total_onnx = y_onnx.clone() if total_onnx is None else total_onnx + y_onnx
                result.differing_predictions += int((total_torch.argmax(-1) != total_onnx.argmax(-1)).sum())
            last = _counts(events)
            for name, layer in execution.sources.items():
                sent = last[name] - first[name] if name in first else last[name]
                result.spikes[name] = (round(float(sent.double().sum())), round(float(layer.record.totals()[0])))
    finally:
        reset_states(snn)
    return result


def _compare_spikes(events: EventCounts, given: dict[str, np.ndarray], after: dict[str, np.ndarray],
                    result: Parity, samples: int) -> torch.Tensor:
    """Add the spikes of one step that differ between the runtimes, both started from ``given``;
    for each sample, the first source (in the order they run) where they differ is where rounding
    decided (later ones follow from it): how close to θ its IF neurons were goes into
    ``max_margin``. Returns which samples had a differing spike."""
    flipped = torch.zeros(samples, dtype=torch.bool)
    for name, source in events.modules.items():
        key = f"{name}.spikes"
        before = torch.from_numpy(given[key])
        sent = events.record(name).counts - before
        differing = sent != torch.from_numpy(after[key]) - before
        if not bool(differing.any()):
            continue
        result.flips += int(differing.sum())
        rows = len(differing) // samples
        first = differing & ~flipped.repeat_interleave(rows).view(-1, *[1] * (differing.dim() - 1))
        if bool(first.any()):
            if isinstance(source, IFNeuron) and source.single_spikes and source.mask is None:
                theta = source.threshold
                margin = ((source.v + theta * sent - theta).abs() / theta)[first]
                result.max_margin = max(result.max_margin or 0.0, float(margin.max()))
            else:
                result.max_margin = float("nan")  # not an IF neuron: the margin is not known
        flipped |= differing.reshape(samples, -1).any(1)
    return flipped
