"""The simulate stage, and the whole pipeline a run spec describes (:func:`run`)."""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snnconvert import distributed
from snnconvert.checkpoint import Job
from snnconvert.convert import NeuronConfig, convert, float_operations
from snnconvert.prepare.qcfs import rate_limit_model
from snnconvert.errors import SnnConvertError
from snnconvert.model_zoo import Recipe, get_recipe, shipped_checkpoint
from snnconvert.model_zoo.sources import is_own
from snnconvert.report import simulation_summary, write_report
from snnconvert.report.records import Header, RunReport, SimulateReport, Simulation
from snnconvert.report.early_exit import early_exit_report, exit_rows, write_early_exit_report
from snnconvert.runtime import SimulationOptions, Watch, evaluate, simulate
from snnconvert.runtime.early_exit import ExitRule, ExitTrace, exit_curve, quiet_problems
from snnconvert.runtime.energy.conventions import energy_conventions
from snnconvert.runtime.energy import EnergyCosts, OpAccounting
from snnconvert.spec import DataSpec, RunSpec, SimulateSpec
from snnconvert.train import TrainConfig
from snnconvert.workflow.load import load_source, load_snn, calibration_loader, eval_loader, calibration_batch
from snnconvert.workflow.prepare import default_preparation, ensure_prepared, save_prepared, prepare_masked
from snnconvert.workflow.finetune import finetune
from snnconvert.workflow.convert import calibrate_snn, export


@dataclass(frozen=True)
class Exits:
    """Early exit in a simulation: ``rule`` stops each sample once it holds (it leaves the batch);
    ``curve`` rules are evaluated offline on one pass of T steps (their accuracy and mean steps)."""

    rule: ExitRule | None = None
    curve: tuple[ExitRule, ...] = ()

    def on_route(self, snn: nn.Module, options: SimulationOptions) -> tuple[Exits, list[str]]:
        """These exits on the event-driven route (``options.event_driven`` True): with none chosen,
        the quiet exit where it is exact; the notes say why it is not applied elsewhere."""
        if not options.event_driven or self.rule is not None or self.curve:
            return self, []
        problems = quiet_problems(snn)
        if problems:
            return self, ["quiet exit: not exact on this model: " + "; ".join(problems)]
        return replace(self, rule=ExitRule("quiet")), []


@dataclass(frozen=True, eq=False)
class Measures:
    """What a simulation runs with and is measured against: ``options`` (how it runs), ``exits``,
    the energy ``costs``, the ANN accuracy the gaps are taken to, and the ``reference`` ANN (a
    label and the model) whose predictions the SNN's are compared with."""

    options: SimulationOptions = SimulationOptions()
    exits: Exits = Exits()
    costs: EnergyCosts = EnergyCosts()
    ann_accuracy: float | None = None
    reference: tuple[str, nn.Module] | None = None


def simulate_and_summarize(snn: nn.Module, recipe: Recipe, loader, timesteps: int, device: str, job: Job,
                           measures: Measures = Measures()) -> Simulation:
    """Simulate a converted model for ``timesteps`` steps and summarize it (accuracy per t,
    agreement with the reference ANN, spikes, energy, floating-point ops; with exits, samples
    stopping early, or every rule's exits from one pass). It resumes from ``job.checkpoint``
    after an interruption (see :func:`~snnconvert.runtime.simulate`)."""
    label, model = measures.reference if measures.reference is not None else (None, None)
    exits, notes = measures.exits.on_route(snn, measures.options)
    trace = ExitTrace() if exits.curve else None
    result = simulate(snn, loader, timesteps=timesteps, device=device, options=measures.options,
                      watch=Watch(model, exits.rule, trace), job=replace(job, progress=job.progress and distributed.is_main()))
    neuron_steps = sum(layer.neuron_steps for layer in result.layers)
    conventions = energy_conventions(
        result.ops, OpAccounting(snn, dense=True).per_sample(), result.samples, neuron_steps / max(1, result.samples),
        neuron_steps / max(1, result.sample_steps), getattr(snn, "meta", {}).get("levels"), measures.costs)
    return replace(simulation_summary(result, measures.ann_accuracy, measures.costs, label), notes=notes or None,
                   energy_conventions=conventions, float_operations=[asdict(op) for op in float_operations(snn)],
                   early_exit=exit_rows(exit_curve(trace, exits.curve), result.accuracy) if trace is not None else None)


def simulate_exported(path: str | Path, data: DataSpec, timesteps: int | None, job: Job,
                      measures: Measures = Measures()) -> tuple[Simulation, Recipe]:
    """Simulate an exported SNN step in onnxruntime on ``data``'s test split, fitted to the recipe
    in its metadata, and summarize it as :func:`simulate_and_summarize` does (of the options, only
    ``metrics`` applies); with the recipe."""
    from snnconvert.export.session import SNN_STEP, read_metadata, simulate_onnx

    metadata = read_metadata(path)
    if "model" not in metadata or metadata.get("format") != SNN_STEP:
        raise SnnConvertError(f"{path} is not an SNN step exported by snnconvert (its metadata says "
                              f"{metadata.get('format', 'nothing of snnconvert')}): an ANN converts with `snnconvert "
                              f"{path} --data …`; an SNN step is written by `snnconvert export MODEL --what snn`")
    recipe = Recipe.from_dict(metadata["model"])
    loader = eval_loader(recipe, data.name, data.batch_size, data.limit)
    exits = measures.exits
    trace = ExitTrace() if exits.curve else None
    result = simulate_onnx(path, loader, timesteps=timesteps, metrics=measures.options.metrics,
                           watch=Watch(exit_rule=exits.rule, trace=trace), job=job)
    early_exit = exit_rows(exit_curve(trace, exits.curve), result.accuracy) if trace is not None else None
    return replace(simulation_summary(result, None, measures.costs), float_operations=metadata["float_operations"],
                   early_exit=early_exit), recipe


def ann_energy_uj_per_sample(snn: nn.Module, costs: EnergyCosts = EnergyCosts()) -> float:
    """The ANN's energy per sample: the same ops as the converted model ``snn``, every value real,
    one forward (E_MAC × (MACs + float ops) + E_AC × additions)."""
    ops = OpAccounting(snn, dense=True).per_sample()
    return costs.of(0, *(sum(getattr(o, f) for o in ops) for f in ("macs", "float_ops", "adds"))) / 1e6


def report_header(recipe: Recipe, weights: str, data: str, levels: int | None, timesteps: int,
                  neuron: NeuronConfig | str) -> dict[str, Any]:
    """The fields every report starts with (:class:`~snnconvert.report.records.Header`'s), as keywords."""
    return {"model": recipe.name, "timm_name": recipe.timm_name, "weights": weights, "data": data,
            "levels": levels, "timesteps": timesteps,
            "neuron": neuron.describe() if isinstance(neuron, NeuronConfig) else neuron,
            "processes": distributed.world_size(), "torch_threads": torch.get_num_threads()}


def finish_report(report: Header, out_dir: Path, progress_files: list[Path], write=write_report) -> None:
    """Write the report with ``write`` (rank 0), then drop the simulations' progress files (each process its own)."""
    if distributed.is_main():
        write(report.to_dict(), out_dir)
    distributed.barrier()
    for path in progress_files:
        path.unlink(missing_ok=True)
        path.with_name(f"{path.name}.rank{distributed.rank()}").unlink(missing_ok=True)


def run(spec: RunSpec, out: str, device: str, progress: bool = True) -> RunReport:
    """The whole pipeline as ``spec`` says: load → prepare + calibrate (+ masks) (+ fine-tune) →
    convert (+ correct) → simulate → report, written to ``out``.

    With ``epochs`` > 0 the prepared model is trained first: an ANN with real weights is fine-tuned
    with the recipe's settings, distilling from itself; random weights are trained from scratch.
    ``epochs`` None: the recipe's fine-tune epochs for an ANN with real weights, else 0. An ANN that
    is not trained is converted by calibration alone: its agreement with the SNN is reported, and
    the ``correction`` (bias or potential, for T steps) calibrates the SNN against the ANN itself
    (against the QCFS ANN for a trained model). ``masks`` adds Random Spike Masks to the prepared
    model (before training, if it is trained). Every long step resumes from the files in ``out``
    after an interruption. The report stores ``spec`` with T, the epochs and the preparation resolved.
    """
    start = time.perf_counter()
    source = spec.model
    loaded = load_source(source, shipped=source.pretrained)
    recipe = loaded.recipe
    real_weights = loaded.stage == "ann" and loaded.source != "random initialization"
    finetune_settings = get_recipe(source.name).finetune_settings if real_weights else {}
    spec = replace(spec, timesteps=spec.timesteps or recipe.timesteps,
                   epochs=finetune_settings.get("epochs", 0) if spec.epochs is None else spec.epochs,
                   prepare=spec.prepare or default_preparation(recipe, spec.simulation.event_driven is True))
    data, limit, timesteps, epochs = spec.data.name, spec.data.limit, spec.timesteps, spec.epochs
    calibration, neuron, masks, modes = spec.calibration, spec.neuron, spec.masks, list(spec.modes)
    out_dir = Path(out)
    test = eval_loader(recipe, data, spec.data.batch_size, limit)
    original_acc = evaluate(loaded.model.to(device), test, device=device) if loaded.stage == "ann" else None
    training = None
    if epochs > 0:
        settings = {**finetune_settings, "epochs": epochs}
        model, config, training = finetune(loaded, DataSpec(data, limit), TrainConfig(**settings), calibration,
                                           device, Job(progress, out_dir / "prepared.pt"), spec.prepare, masks)
        prepared = training.preparation
    else:
        model, config, prepared = ensure_prepared(loaded, data, calibration, device, progress, spec.prepare)
        if masks is not None:
            model, config = prepare_masked(model, masks), replace(config, masks=masks)
        if prepared is not None or masks is not None:
            save_prepared(out_dir / "prepared.pt", model, recipe, config)
    ann_acc = {"QCFS ANN": evaluate(model, test, device=device)}
    if neuron.coding == "rate":
        ann_acc["QCFS ANN, L → ∞ (the SNN's T → ∞ limit)"] = evaluate(rate_limit_model(model), test, device=device)
    if original_acc is not None:
        ann_acc = {"original ANN": original_acc, **ann_acc}
    untrained_ann = loaded.stage == "ann" and training is None
    agreement = ("original ANN", loaded.model) if loaded.stage == "ann" else ("QCFS ANN", model)
    progress_files = [out_dir / f"simulation_{mode}.progress.pt" for mode in modes]
    snns = {mode: convert(model, mode, neuron) for mode in modes}
    calibrations = {}
    if spec.correction is not None:
        images, _ = calibration_batch(calibration_loader(recipe, data), calibration.num_samples)
        calibrations = {mode: calibrate_snn(snn, model, images.to(device), timesteps, spec.correction, [timesteps],
                                            "ann" if untrained_ann else "qcfs", progress)
                        for mode, snn in snns.items()}
    measures = Measures(spec.simulation, Exits(), spec.costs, ann_acc["QCFS ANN"], agreement)
    sims = {mode: simulate_and_summarize(snn, recipe, test, timesteps, device, Job(progress, path), measures)
            for (mode, snn), path in zip(snns.items(), progress_files)}
    report = RunReport(**report_header(recipe, loaded.source, data, config.levels, timesteps, neuron),
                       weights_loading=loaded.metadata.get("loading") or None, preparation=prepared,
                       masks=config.masks.describe() if config.masks else None,
                       route="calibration only (no training)" if untrained_ann else None,
                       training=training, ann_accuracy=ann_acc, snn_calibration=calibrations or None,
                       energy_costs_pj=spec.costs,
                       ann_energy_uj_per_sample=ann_energy_uj_per_sample(next(iter(snns.values())), spec.costs),
                       simulations=sims, spec=spec, seconds=round(time.perf_counter() - start, 1))
    finish_report(report, out_dir, progress_files)
    return report


#: why the onnxruntime backend refuses an option
TORCH_ONLY = ("set how PyTorch runs or what it watches; the onnxruntime backend runs the exported float32 step on "
              "the CPU, one step per call: drop them")


def simulate_model(spec: SimulateSpec, out: str | None, device: str, progress: bool) -> SimulateReport:
    """Simulate the converted model ``spec`` names (``snnconvert simulate``): a checkpoint in
    PyTorch, or an SNN step in onnxruntime (a checkpoint is exported first for that backend).
    With ``out``, the report (and an early-exit curve's report) is written there, and the
    simulation resumes from its progress file after an interruption.

    Returns the report: the header, ``backend``, ``simulations`` (one, by attention mode).
    """
    from snnconvert.export.session import read_metadata

    source, data, simulation = spec.model, spec.data, spec.simulation
    backend = spec.resolved_backend
    refused = spec.torch_only(device)
    if refused:
        raise SnnConvertError(f"{', '.join(refused)} {TORCH_ONLY}")
    job = Job(progress, Path(out) / "simulation.progress.pt" if out else None)
    measures = Measures(simulation, Exits(spec.exit_rule, spec.exit_curve), spec.costs)
    with tempfile.TemporaryDirectory() as scratch:
        if backend == "onnxruntime":
            path = source.name
            if not spec.exported:
                path = str(Path(scratch) / f"{source.name}.onnx")
                export(source, "snn", path, mode=spec.mode, neuron=spec.neuron, timesteps=spec.timesteps)
            sim, recipe = simulate_exported(path, data, spec.timesteps, job, measures)
            metadata = read_metadata(path)
            weights, neuron, mode, timesteps = path, metadata["neuron"], metadata["attention"], sim.timesteps
        else:
            weights = source.checkpoint or shipped_checkpoint(get_recipe(source.name))
            if weights is None and is_own(source.name):
                raise SnnConvertError(f"{source.name} is an ANN (not an SNN step, by its metadata): convert it with "
                                      f"`snnconvert {source.name} …` and simulate the prepared.pt it writes "
                                      "(--checkpoint)")
            if weights is None:
                raise SnnConvertError(f"{source.name} has no shipped checkpoint: pass --checkpoint FILE")
            loaded = load_snn(source.name, str(weights), spec.mode, spec.neuron)
            recipe, neuron, mode = loaded.recipe, loaded.neuron, loaded.mode
            timesteps = spec.timesteps or recipe.timesteps
            test = eval_loader(recipe, data.name, data.batch_size, data.limit)
            sim = simulate_and_summarize(loaded.snn, recipe, test, timesteps, device, job, measures)
    report = SimulateReport(**report_header(recipe, str(weights), data.name, None, timesteps, neuron),
                            backend=backend, ann_accuracy={}, energy_costs_pj=spec.costs, simulations={mode: sim},
                            spec=replace(spec, timesteps=timesteps))
    if out:
        finish_report(report, Path(out), [job.checkpoint])
        if spec.exit_curve and distributed.is_main():
            write_early_exit_report(early_exit_report(report), out)
    return report
