"""Simulate a converted model for T steps: accuracy at every t from one pass, spikes per layer.

The image is given to the model at every step (a count-coded model takes it at the first step
only; see :mod:`snnconvert.runtime.coding`): what is computed from it alone is computed once per
batch, and the rest runs K steps per call (:mod:`snnconvert.runtime.execution`). The prediction
at step t is the argmax of the running total of the outputs ``Σ_{τ≤t} y_τ`` (under rate coding,
of their running mean: the same argmax). Every metric is kept by the neurons in their own step
(:mod:`snnconvert.runtime.statistics`). Memory does not grow with T: only the running sum of
outputs, the neurons' state and their per-element totals are kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from snnconvert import checks, distributed
from snnconvert.checkpoint import Job, atomic_save
from snnconvert.errors import ArgumentError, CheckpointError, first_line
from snnconvert.graph.shapes import annotate
from snnconvert.graph.trace import trace
from snnconvert.runtime.early_exit import ExitRule, ExitTrace, Quiescence, coding_of, confidence, output_silent, \
    quiet_problems, unchanged_steps
from snnconvert.runtime.energy import FIELDS, EnergyCosts, EventCounts, LayerOps, OpAccounting, OpTable
from snnconvert.runtime.execution import Execution, SimulationOptions
from snnconvert.runtime.monitors import SpikeMonitor
from snnconvert.runtime.masking import RandomSpikeMask, reseed_masks
from snnconvert.runtime.neurons import SpikingNeuron
from snnconvert.runtime.statistics import LayerSpikes, layer_spikes
from snnconvert.runtime.state import reset_states
from snnconvert.runtime.streams import watching


@dataclass
class SimulationResult:
    """What one simulation measured.

    Attributes:
        timesteps: T.
        samples: number of samples simulated.
        correct: correct predictions after each step t = 1..T (length T).
        agreeing: predictions equal to the reference model's after each step (None without one).
        layers: spikes per IF layer.
        seconds: wall time of the simulation (this run).
        resumed_from_batch: batches taken from a progress file instead of simulated (None: a fresh run).
        ops: SOPs, MACs and floating-point ops per op (see :mod:`snnconvert.runtime.energy`).
        sample_steps: steps run, summed over samples (``samples · T`` without early exit).
        exit_rule: the rule samples stopped by (None: every sample ran T steps).
        event_driven: ``ops`` count what the inputs sent at each step (else every op densely).
    """

    timesteps: int
    samples: int
    correct: list[int]
    layers: list[LayerSpikes] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_batch: int | None = None
    ops: list[LayerOps] = field(default_factory=list)
    agreeing: list[int] | None = None
    sample_steps: int = 0
    exit_rule: ExitRule | None = None
    event_driven: bool = False

    @property
    def mean_steps(self) -> float:
        """Steps run per sample."""
        return self.sample_steps / max(1, self.samples)

    @property
    def accuracy(self) -> list[float]:
        """Accuracy (%) after each step t = 1..T."""
        return [100.0 * c / max(1, self.samples) for c in self.correct]

    @property
    def agreement(self) -> list[float] | None:
        """Agreement (%) with the reference model's predictions after each step t = 1..T."""
        return None if self.agreeing is None else [100.0 * c / max(1, self.samples) for c in self.agreeing]

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


def check_data(data, labels, timesteps: int, input_shape: tuple[int, ...] | None) -> None:
    """Refuse data :func:`simulate` cannot run: a batch that is not ``[N, *input_shape]``, labels
    that are not one class index per sample, labels beside a loader (it yields them), T < 1."""
    checks.count(timesteps, "simulate", "timesteps")
    if not isinstance(data, torch.Tensor):
        checks.loader(data, "simulate", "data")
        checks.expect(labels is None, "simulate", "labels", "None when data is a loader (it yields the labels)",
                      labels)
        return
    checks.batch(data, "simulate", "data", input_shape, call="simulate(snn, images, labels, timesteps)")
    checks.expect(isinstance(labels, torch.Tensor) and labels.shape == (len(data),) and not labels.is_floating_point(),
                  "simulate", "labels", f"a tensor of {len(data)} class indices (one per image)", labels)


def _batches(data, labels) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, torch.Tensor):
        yield data, labels
    else:
        yield from data


def _progress_file(checkpoint: str | Path) -> Path:
    """This process's progress file (one per rank under torchrun)."""
    path = Path(checkpoint)
    return path if distributed.world_size() == 1 else path.with_name(f"{path.name}.rank{distributed.rank()}")


def _signature(model: dict, monitor: SpikeMonitor, timesteps: int, data, reference: nn.Module | None,
               exit_rule: ExitRule | None, traced: bool) -> dict:
    """What a progress file must match to be resumed: T, the metrics recorded, the model (its
    :func:`model_signature`), the data size, the reference model, the exit rule and whether exits
    are traced."""
    return {"format": 8, "timesteps": timesteps, "metrics": monitor.metrics, "traced": traced,
            "exit": None if exit_rule is None else [exit_rule.kind, exit_rule.value],
            "reference": None if reference is None else _weights(reference), "model": model,
            "batches": len(data) if hasattr(data, "__len__") else None}


def model_signature(snn: nn.Module) -> dict:
    """A PyTorch model's part of a progress file's signature: its neurons, masks and weights."""
    return {"neurons": [f"{n}:{type(m).__name__}({m.extra_repr()})" for n, m in snn.named_modules()
                        if isinstance(m, SpikingNeuron)],
            "masks": [f"{n}:{m.ratio}:{m.seed}" for n, m in snn.named_modules() if isinstance(m, RandomSpikeMask)],
            "weights": _weights(snn)}


def _weights(model: nn.Module) -> float:
    """A fingerprint of a model's weights: the sum of its floating-point state."""
    return sum(float(v.double().sum()) for v in model.state_dict().values() if v.is_floating_point())


def _load_progress(path: Path, signature: dict) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"simulation progress file {path} cannot be read ({first_line(e, 120)}): a damaged file; "
                              "delete it to simulate afresh") from e
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
    graph, failures = trace(snn, example, reset=reset_states)
    if failures:
        raise ValueError(f"cannot trace {', '.join(failures)} of the model to simulate: "
                         f"{next(iter(failures.values())).describe()}")
    graph.meta["input_shape"] = tuple(example.shape[1:])
    annotate(graph, example)
    reset_states(graph)
    return graph


@dataclass(frozen=True, eq=False)
class Watch:
    """What a simulation watches besides accuracy, spikes and energy.

    Attributes:
        reference: an ANN (the original or the QCFS model) whose predictions the SNN's are compared
            with at every step (``agreement``).
        exit_rule: stop each sample once it holds, and drop it from the batch (one step per call;
            see :mod:`snnconvert.runtime.early_exit`).
        trace: record every sample's confidence and prediction at every step (what every exit
            rule would give: :func:`~snnconvert.runtime.early_exit.exit_curve`).
    """

    reference: nn.Module | None = None
    exit_rule: ExitRule | None = None
    trace: ExitTrace | None = None

    def __post_init__(self) -> None:
        if self.exit_rule is not None and self.trace is not None:
            raise ArgumentError("a traced run (every rule's exits, offline) runs every sample T steps: drop exit_rule")


@dataclass
class Instruments:
    """What the simulation loop drives and reads, for any runtime: ``execution`` runs the steps of
    a batch (:class:`~snnconvert.runtime.execution.Execution`, or an exported model's runtime),
    ``monitor`` and ``events`` read the spikes its neurons recorded, ``table`` costs the ops,
    ``signature`` names the model in progress files, ``coding`` is the model's and ``quiescence``
    says which samples are quiet (None: not watched; the ``quiet`` exit needs it)."""

    execution: Execution
    monitor: SpikeMonitor
    events: EventCounts
    table: OpTable
    signature: dict
    coding: str = "rate"
    quiescence: Quiescence | None = None


@torch.no_grad()
def simulate(snn: nn.Module, data, labels: torch.Tensor | None = None, timesteps: int = 32,
             device: str | torch.device = "cpu", options: SimulationOptions = SimulationOptions(),
             watch: Watch = Watch(), job: Job = Job()) -> SimulationResult:
    """Run a converted model for ``timesteps`` steps on a batch or a DataLoader.

    Under torchrun each process simulates its shard of the data and the counts are summed, so
    every process returns the result of the whole set.

    Args:
        snn: output of :func:`snnconvert.convert.convert` (any other single-step spiking module
            is traced on the first sample).
        data: an image batch ``[N, C, H, W]`` (with ``labels``), or an iterable of
            ``(images, labels)`` batches; checked against the model's input shape on every batch.
        labels: ``[N]`` class indices when ``data`` is a tensor.
        timesteps: T, the number of steps.
        device: where to run.
        options: how it runs (steps per call, precision, compiling, folding, skipping) and what it
            measures (``metrics``, ``event_driven``): :class:`SimulationOptions`.
        watch: agreement with a reference ANN, an early exit, a trace of every step: :class:`Watch`.
        job: a progress bar over batches, and the progress file, written atomically after every
            batch; a run that finds it skips the batches already simulated (``resumed_from_batch``
            says how many) unless ``job.resume`` is False.

    Raises:
        ArgumentError: bad arguments, or a ``quiet`` exit on a model it is not exact on.
    """
    checks.module(snn, "simulate", "snn", call="simulate(snn, images, labels, timesteps)")
    check_data(data, labels, timesteps, getattr(snn, "meta", {}).get("input_shape"))
    snn = _as_graph(snn.eval().to(device), data, labels, device)
    coding = coding_of(snn)
    if options.event_driven and coding != "count":
        raise ArgumentError("event-driven execution needs a count-coded model: under rate coding the image and every "
                            "bias are presented at every step, so every value changes at every step; convert with "
                            "count coding (--coding count) or drop --event-driven")
    event_driven = coding == "count" if options.event_driven is None else options.event_driven
    accounting = OpAccounting(snn, event_driven=event_driven)
    quiescence = None
    if watch.exit_rule is not None and watch.exit_rule.kind == "quiet":
        quiescence = Quiescence(snn)
    elif watch.trace is not None:
        watch.trace.quiet_problems = quiet_problems(snn)
        quiescence = None if watch.trace.quiet_problems else Quiescence(snn)
    with watching(snn, accounting.streams), Execution(snn, options) as execution, \
            SpikeMonitor(snn, options.metrics) as monitor, \
            EventCounts({n: snn.get_submodule(n) for n in accounting.sources}, accounting.mapped,
                        accounting.marks) as events:
        instruments = Instruments(execution, monitor, events, accounting, model_signature(snn), coding, quiescence)
        result = run_simulation(instruments, data, labels, timesteps, device, snn.meta.get("input_shape"), watch, job)
    result.event_driven = accounting.event_driven
    return result


@torch.no_grad()
def run_simulation(instruments: Instruments, data, labels: torch.Tensor | None, timesteps: int,
                   device: str | torch.device = "cpu", input_shape: tuple[int, ...] | None = None,
                   watch: Watch = Watch(), job: Job = Job()) -> SimulationResult:
    """The simulation loop of :func:`simulate`, for any runtime's ``instruments`` (see
    :func:`simulate` for the rest; ``input_shape`` is checked on every batch)."""
    monitor, events, table = instruments.monitor, instruments.events, instruments.table
    reference, exit_rule, trace = watch.reference, watch.exit_rule, watch.trace
    if exit_rule is not None and exit_rule.kind == "quiet" and instruments.quiescence is None:
        raise ArgumentError("the quiet exit needs the model's neurons watched: run it with snnconvert.simulate "
                            "on the PyTorch model")
    check_data(data, labels, timesteps, input_shape)
    if reference is not None:
        reference.to(device)
    correct = torch.zeros(timesteps, dtype=torch.long)
    agreeing = torch.zeros(timesteps, dtype=torch.long)
    samples = done = 0
    sample_steps = {k: 0 for k in (None, *sorted(table.marks))}  # in all, and counted up to each mark
    start = time.perf_counter()
    batches = _batches(data, labels)
    if job.progress:
        total = len(data) if hasattr(data, "__len__") and not isinstance(data, torch.Tensor) else None
        batches = tqdm(batches, total=total, desc=f"simulate T={timesteps}", unit="batch")
    path = _progress_file(job.checkpoint) if job.checkpoint is not None else None
    signature = _signature(instruments.signature, monitor, timesteps, data, reference, exit_rule, trace is not None)
    saved = _load_progress(path, signature) if path is not None and job.resume else None
    if saved is not None:
        correct, agreeing = saved["correct"], saved["agreeing"]
        samples, done, sample_steps = int(saved["samples"]), int(saved["batches"]), dict(saved["sample_steps"])
        monitor.add(saved["spiking"])
        events.load(saved["events"])
        if trace is not None:
            trace.load(saved["trace"])
    for index, (images, targets) in enumerate(batches):
        if index < done:
            continue
        checks.batch(images, "simulate", "the input batch", input_shape)
        images, targets = images.to(device), targets.to(device)
        expected = _predictions(reference, images, index) if reference is not None else None
        instruments.execution.reset(index)
        batch_correct, batch_agreeing, batch_steps = _run_batch(instruments, images, targets, expected, timesteps,
                                                                watch)
        sample_steps = {k: n + batch_steps[k] for k, n in sample_steps.items()}
        correct += batch_correct.cpu()
        agreeing += batch_agreeing.cpu()
        monitor.collect()
        events.end_batch(len(images))
        samples += targets.numel()
        if path is not None:
            atomic_save({"signature": signature, "batches": index + 1, "samples": samples,
                         "sample_steps": sample_steps, "correct": correct,
                         "agreeing": agreeing, "spiking": monitor.totals(), "events": events.state(),
                         "trace": trace.state() if trace is not None else None}, path)
    instruments.execution.reset(0)
    counts = distributed.all_reduce(torch.cat([correct, agreeing, torch.tensor([samples, *sample_steps.values()])]))
    correct, agreeing = counts[:timesteps], counts[timesteps:2 * timesteps]
    samples = int(counts[2 * timesteps])
    if samples == 0:
        raise ArgumentError("simulate: the data yielded no samples; pass a batch or a loader of at least one")
    sample_steps = dict(zip(sample_steps, counts[2 * timesteps + 1:].tolist()))
    names = sorted(events.totals)
    events.unflat(names, distributed.all_reduce(events.flat(names)))
    layer_ops = table.results(events.totals, events.at, samples, sample_steps)
    spiking = distributed.all_reduce(monitor.totals())
    return SimulationResult(timesteps, samples, correct.tolist(), layer_spikes(list(monitor.layers), spiking,
                                                                              monitor.metrics == "full"),
                            time.perf_counter() - start, resumed_from_batch=saved["batches"] if saved is not None else None,
                            ops=layer_ops, agreeing=agreeing.tolist() if reference is not None else None,
                            sample_steps=sample_steps[None], exit_rule=exit_rule)


def _run_batch(instruments: Instruments, images: torch.Tensor, targets: torch.Tensor, expected: torch.Tensor | None,
               timesteps: int, watch: Watch) -> tuple[torch.Tensor, torch.Tensor, dict[int | None, int]]:
    """Correct and agreeing predictions after each of ``timesteps`` steps on one batch, and the
    steps run in all (key None) and up to each of the op table's marks (samples that stop, under
    the watch's exit rule, keep their prediction and leave)."""
    execution, events, coding, quiescence = (instruments.execution, instruments.events, instruments.coding,
                                             instruments.quiescence)
    exit_rule, trace = watch.exit_rule, watch.trace
    correct = torch.zeros(timesteps, dtype=torch.long, device=images.device)
    agreeing = torch.zeros_like(correct)
    inputs = execution.inputs(images)
    chunk = 1 if exit_rule is not None or quiescence is not None else execution.steps_per_call(images)
    predicted = None  # the prediction of every sample (one that stopped: its last)
    active = torch.arange(len(images), device=images.device)  # the samples still in the batch
    unchanged = torch.zeros_like(active)
    started = torch.zeros_like(active, dtype=torch.bool)  # the output's first event has come
    traced = [] if trace is not None else None
    total_out, previous, t = None, None, 0
    sample_steps = {k: 0 for k in (None, *instruments.table.marks)}
    while t < timesteps:
        events.steps = min(chunk, timesteps - t)
        for out in execution.run(inputs, events.steps):
            total_out = out.clone() if total_out is None else total_out + out
            now = total_out.argmax(-1)
            counted = started
            if predicted is None:
                if (exit_rule is not None or traced is not None) and now.dim() != 1:
                    raise ValueError(f"early exit needs outputs [N, classes], got {list(total_out.shape)}")
                predicted = now.clone()
            else:
                unchanged = unchanged_steps(unchanged, now == predicted[active], counted)
                predicted[active] = now
                started = started | ~output_silent(out, previous, coding)
            previous = out
            silent = quiescence.settled(len(active)).to(active.device) if quiescence is not None else None
            t += 1
            for k in sample_steps:
                if k is None or t <= k:
                    sample_steps[k] += len(active)
            if traced is not None:
                traced.append((confidence(total_out, t, coding), now, counted, silent))
            if exit_rule is not None and t < timesteps:
                stay = ~exit_rule.holds(total_out, t, unchanged, coding, silent)
                if not bool(stay.all()):
                    active, total_out, unchanged = active[stay], total_out[stay], unchanged[stay]
                    started, previous = started[stay], previous[stay]
                    inputs = execution.keep(inputs, stay)
                    events.keep(stay)
            correct[t - 1] += (predicted == targets).sum()
            if expected is not None:
                agreeing[t - 1] += (predicted == expected).sum()
        if not len(active):  # every sample stopped: their predictions stand for the remaining steps
            correct[t:] = correct[t - 1]
            agreeing[t:] = agreeing[t - 1]
            break
    if traced is not None:
        columns = list(zip(*traced))
        trace.add(*(torch.stack(c, 1) for c in columns[:3]),
                  torch.stack(columns[3], 1) if quiescence is not None else None, targets)
    return correct, agreeing, sample_steps


def _predictions(model: nn.Module, images: torch.Tensor, index: int) -> torch.Tensor:
    """An ANN's predictions on a batch (its spike masks seeded for the batch, as in :func:`evaluate`)."""
    model.eval()
    reseed_masks(model, index)
    return model(images).argmax(-1)


@torch.no_grad()
def evaluate(model: nn.Module, data, labels: torch.Tensor | None = None,
             device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy (%) of an ANN (e.g. the QCFS model) on the same inputs as :func:`simulate`
    (under torchrun: over every process's shard)."""
    model.to(device)
    counts = torch.zeros(2, dtype=torch.long)
    for index, (images, targets) in enumerate(_batches(data, labels)):
        pred = _predictions(model, images.to(device), index).cpu()
        counts += torch.tensor([int((pred == targets).sum()), targets.numel()])
    correct, total = distributed.all_reduce(counts).tolist()
    return 100.0 * correct / max(1, total)
