"""Simulate a converted model for T steps: accuracy at every t from one pass, spikes per layer.

Input is direct-coded (the image is presented at every step; the first layer sees real values).
The prediction at step t is the argmax of the running mean of the outputs ``Σ_{τ≤t} y_τ / t``.
Memory does not grow with T: only the running sum of outputs and the neurons' state are kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from snnconvert import distributed
from snnconvert.checkpoint import atomic_save
from snnconvert.errors import CheckpointError
from snnconvert.graph.shapes import annotate
from snnconvert.graph.trace import trace
from snnconvert.runtime.energy import FIELDS, EnergyCosts, EventCounts, LayerOps, OpAccounting
from snnconvert.runtime.monitors import LayerSpikes, SpikeMonitor, layer_spikes
from snnconvert.runtime.masking import RandomSpikeMask, reseed_masks
from snnconvert.runtime.state import reset_states


@dataclass
class SimulationResult:
    """What one simulation measured.

    Attributes:
        timesteps: T.
        samples: number of samples simulated.
        correct: correct predictions after each step t = 1..T (length T).
        layers: spikes per IF layer.
        seconds: wall time of the simulation (this run).
        resumed_from_batch: batches taken from a progress file instead of simulated (None: a fresh run).
        ops: SOPs, MACs and floating-point ops per op (see :mod:`snnconvert.runtime.energy`).
    """

    timesteps: int
    samples: int
    correct: list[int]
    layers: list[LayerSpikes] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_batch: int | None = None
    ops: list[LayerOps] = field(default_factory=list)

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

    def energy_per_sample_pj(self, costs: EnergyCosts = EnergyCosts()) -> float:
        """Energy over T steps, per sample (pJ): ``E_AC·(SOP + additions) + E_MAC·(MAC + float ops)``."""
        return costs.of(*(sum(getattr(o, f) for o in self.ops) for f in FIELDS)) / max(1, self.samples)


def _batches(data, labels) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, torch.Tensor):
        if labels is None:
            raise ValueError("labels are required when data is a tensor")
        yield data, labels
    else:
        if labels is not None:
            raise ValueError("labels must be None when data is a DataLoader (it yields them)")
        yield from data


def _progress_file(checkpoint: str | Path) -> Path:
    """This process's progress file (one per rank under torchrun)."""
    path = Path(checkpoint)
    return path if distributed.world_size() == 1 else path.with_name(f"{path.name}.rank{distributed.rank()}")


def _signature(snn: nn.Module, monitor: SpikeMonitor, timesteps: int, data) -> dict:
    """What a progress file must match to be resumed: T, the neurons, the masks, the weights and the data size."""
    weights = sum(float(v.double().sum()) for v in snn.state_dict().values() if v.is_floating_point())
    return {"format": 3, "timesteps": timesteps,
            "neurons": [f"{n}:{type(m).__name__}" for n, m in monitor.layers.items()],
            "masks": [f"{n}:{m.ratio}:{m.seed}" for n, m in snn.named_modules() if isinstance(m, RandomSpikeMask)],
            "weights": weights, "batches": len(data) if hasattr(data, "__len__") else None}


def _load_progress(path: Path, signature: dict) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"simulation progress file {path} cannot be read ({e}); delete it to start afresh") from e
    if state.get("signature") != signature:
        raise CheckpointError(f"{path} holds the progress of another simulation (other T, model, neurons or data); "
                              "delete it or write to another output folder")
    return state


def _as_graph(snn: nn.Module, data, labels, device) -> fx.GraphModule:
    """``snn`` as an annotated graph (what the energy accounting reads): a converted model already
    is one; any other spiking module is traced on one sample of the data (sharing its modules)."""
    if isinstance(snn, fx.GraphModule) and "input_shape" in snn.meta:
        return snn
    images, _ = next(iter(_batches(data, labels)))
    example = images[:1].to(device)
    reset_states(snn)
    graph, failures = trace(snn, example)
    if failures:
        raise ValueError(f"cannot trace {', '.join(failures)} of the model to simulate: "
                         f"{next(iter(failures.values())).describe()}")
    graph.meta["input_shape"] = tuple(example.shape[1:])
    annotate(graph, example)
    reset_states(graph)
    return graph


@torch.no_grad()
def simulate(snn: nn.Module, data, labels: torch.Tensor | None = None, timesteps: int = 32,
             device: str | torch.device = "cpu", progress: bool = False,
             input_shape: tuple[int, ...] | None = None, checkpoint: str | Path | None = None) -> SimulationResult:
    """Run a converted model for ``timesteps`` steps on a batch or a DataLoader.

    Under torchrun each process simulates its shard of the data and the counts are summed, so
    every process returns the result of the whole set.

    Args:
        snn: output of :func:`snnconvert.convert.convert` (any other single-step spiking module
            is traced on the first sample).
        data: an image batch ``[N, C, H, W]`` (with ``labels``), or an iterable of
            ``(images, labels)`` batches.
        labels: ``[N]`` class indices when ``data`` is a tensor.
        timesteps: T, the number of steps.
        device: where to run.
        progress: show a progress bar over batches.
        input_shape: the ``(C, H, W)`` the model expects; checked on every batch.
        checkpoint: progress file, written atomically after every batch; a run that finds it
            skips the batches already simulated (``resumed_from_batch`` says how many).
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    snn = _as_graph(snn.eval().to(device), data, labels, device)
    reset_states(snn)
    correct = torch.zeros(timesteps, dtype=torch.long)
    samples = done = 0
    start = time.perf_counter()
    batches = _batches(data, labels)
    if progress:
        total = len(data) if hasattr(data, "__len__") and not isinstance(data, torch.Tensor) else None
        batches = tqdm(batches, total=total, desc=f"simulate T={timesteps}", unit="batch")
    accounting = OpAccounting(snn)
    with SpikeMonitor(snn) as monitor, EventCounts(snn, accounting.sources) as events:
        path = _progress_file(checkpoint) if checkpoint is not None else None
        signature = _signature(snn, monitor, timesteps, data)
        saved = _load_progress(path, signature) if path is not None else None
        if saved is not None:
            correct, samples, done = saved["correct"], int(saved["samples"]), int(saved["batches"])
            monitor.add(saved["spiking"])
            events.load(saved["events"])
        for index, (images, targets) in enumerate(batches):
            if index < done:
                continue
            if input_shape is not None and tuple(images.shape[1:]) != tuple(input_shape):
                raise ValueError(f"input batch has shape {tuple(images.shape)}, the model expects "
                                 f"[N, {', '.join(map(str, input_shape))}]: resize the data or pick "
                                 f"the matching model")
            images, targets = images.to(device), targets.to(device)
            reset_states(snn)
            reseed_masks(snn, index)
            total_out = None
            for t in range(timesteps):
                out = snn(images)
                total_out = out if total_out is None else total_out + out
                correct[t] += (total_out.argmax(-1) == targets).sum().cpu()
            events.end_batch(len(images))
            samples += targets.numel()
            if path is not None:
                atomic_save({"signature": signature, "batches": index + 1, "samples": samples, "correct": correct,
                             "spiking": monitor.totals(), "events": events.state()}, path)
        reset_states(snn)
    counts = distributed.all_reduce(torch.cat([correct, torch.tensor([samples])]))
    correct, samples = counts[:timesteps], int(counts[timesteps])
    names = sorted(events.totals)
    events.unflat(names, distributed.all_reduce(events.flat(names)))
    layer_ops = accounting.results(events.totals, events.first, samples, timesteps)
    spiking = distributed.all_reduce(monitor.totals())
    return SimulationResult(timesteps, samples, correct.tolist(), layer_spikes(list(monitor.layers), spiking),
                            time.perf_counter() - start, resumed_from_batch=saved["batches"] if saved is not None else None,
                            ops=layer_ops)


@torch.no_grad()
def evaluate(model: nn.Module, data, labels: torch.Tensor | None = None,
             device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy (%) of an ANN (e.g. the QCFS model) on the same inputs as :func:`simulate`
    (under torchrun: over every process's shard)."""
    model.eval().to(device)
    counts = torch.zeros(2, dtype=torch.long)
    for index, (images, targets) in enumerate(_batches(data, labels)):
        reseed_masks(model, index)
        pred = model(images.to(device)).argmax(-1).cpu()
        counts += torch.tensor([int((pred == targets).sum()), targets.numel()])
    correct, total = distributed.all_reduce(counts).tolist()
    return 100.0 * correct / max(1, total)
