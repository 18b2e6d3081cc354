"""The simulate stage, and the whole pipeline a run spec describes (:func:`run`)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snnconvert import distributed
from snnconvert.convert import NeuronConfig, convert, float_operations
from snnconvert.prepare.qcfs import rate_limit_model
from snnconvert.errors import SnnConvertError
from snnconvert.model_zoo import (Recipe, get_recipe)
from snnconvert.report import simulation_summary, write_report
from snnconvert.report.early_exit import exit_rows
from snnconvert.runtime import SimulationOptions, evaluate, simulate
from snnconvert.runtime.early_exit import ExitRule, ExitTrace, exit_curve, quiet_problems
from snnconvert.runtime.energy.conventions import energy_conventions
from snnconvert.runtime.energy import EnergyCosts, OpAccounting
from snnconvert.spec import RunSpec
from snnconvert.train import TrainConfig
from snnconvert.workflow.load import load, calibration_loader, eval_loader, calibration_batch
from snnconvert.workflow.prepare import ensure_prepared, save_prepared, prepare_masked
from snnconvert.workflow.finetune import finetune
from snnconvert.workflow.convert import calibrate_snn


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


def simulate_and_summarize(snn: nn.Module, recipe: Recipe, loader, timesteps: int, ann_accuracy: float | None,
                           device: str, progress: bool, progress_file: Path | None = None,
                           costs: EnergyCosts = EnergyCosts(),
                           reference: tuple[str, nn.Module] | None = None,
                           options: SimulationOptions = SimulationOptions(), exits: Exits = Exits()) -> dict[str, Any]:
    """Simulate a converted model and summarize it (accuracy per t, agreement with the
    ``reference`` ANN's predictions (a label and the model), spikes, floating-point ops; with
    ``exits``, samples stopping early, or every rule's exits from one pass).

    With ``progress_file`` the simulation resumes from it after an interruption (see :func:`simulate`).
    """
    label, model = reference if reference is not None else (None, None)
    exits, notes = exits.on_route(snn, options)
    trace = ExitTrace() if exits.curve else None
    result = simulate(snn, loader, timesteps=timesteps, device=device, progress=progress and distributed.is_main(),
                      input_shape=recipe.input_size, checkpoint=progress_file, reference=model, **asdict(options),
                      exit_rule=exits.rule, trace=trace)
    summary = simulation_summary(result, ann_accuracy, costs, label)
    if notes:
        summary["notes"] = notes
    neuron_steps = sum(layer.neuron_steps for layer in result.layers)
    summary["energy_conventions"] = energy_conventions(
        result.ops, OpAccounting(snn, dense=True).per_sample(), result.samples, neuron_steps / max(1, result.samples),
        neuron_steps / max(1, result.sample_steps), getattr(snn, "meta", {}).get("levels"), costs)
    summary["float_operations"] = [asdict(op) for op in float_operations(snn)]
    if trace is not None:
        summary["early_exit"] = exit_rows(exit_curve(trace, exits.curve), result.accuracy)
    return summary


def simulate_exported(path: str | Path, data: str, timesteps: int | None, batch_size: int, limit: int | None,
                      progress: bool, progress_file: Path | None = None, costs: EnergyCosts = EnergyCosts(),
                      metrics: str = "full", exits: Exits = Exits()) -> tuple[dict[str, Any], Recipe]:
    """Simulate an exported SNN step in onnxruntime on ``data``'s test split, fitted to the recipe
    in its metadata, and summarize it as :func:`simulate_and_summarize` does; with the recipe."""
    from snnconvert.export.session import read_metadata, simulate_onnx

    metadata = read_metadata(path)
    if "model" not in metadata or metadata.get("format") != "snn-step/1":
        raise SnnConvertError(f"{path} is not an SNN step exported by snnconvert: export one with "
                              "`snnconvert export MODEL --what snn --out FILE`")
    recipe = Recipe.from_dict(metadata["model"])
    loader = eval_loader(recipe, data, batch_size, limit)
    trace = ExitTrace() if exits.curve else None
    result = simulate_onnx(path, loader, timesteps=timesteps, progress=progress, checkpoint=progress_file,
                           metrics=metrics, exit_rule=exits.rule, trace=trace)
    summary = simulation_summary(result, None, costs)
    summary["float_operations"] = metadata["float_operations"]
    if trace is not None:
        summary["early_exit"] = exit_rows(exit_curve(trace, exits.curve), result.accuracy)
    return summary, recipe


def ann_energy_uj_per_sample(snn: nn.Module, costs: EnergyCosts = EnergyCosts()) -> float:
    """The ANN's energy per sample: the same ops as the converted model ``snn``, every value real,
    one forward (E_MAC × (MACs + float ops) + E_AC × additions)."""
    ops = OpAccounting(snn, dense=True).per_sample()
    return costs.of(0, *(sum(getattr(o, f) for o in ops) for f in ("macs", "float_ops", "adds"))) / 1e6


def report_header(recipe: Recipe, weights: str, data: str, levels: int | None, timesteps: int,
                  neuron: NeuronConfig | str) -> dict[str, Any]:
    """The fields every report starts with."""
    return {"model": recipe.name, "timm_name": recipe.timm_name, "weights": weights, "data": data,
            "levels": levels, "timesteps": timesteps,
            "neuron": neuron.describe() if isinstance(neuron, NeuronConfig) else neuron,
            "processes": distributed.world_size(), "torch_threads": torch.get_num_threads()}


def finish_report(report: dict[str, Any], out_dir: Path, progress_files: list[Path], write=write_report) -> None:
    """Write the report with ``write`` (rank 0), then drop the simulations' progress files (each process its own)."""
    if distributed.is_main():
        write(report, out_dir)
    distributed.barrier()
    for path in progress_files:
        path.unlink(missing_ok=True)
        path.with_name(f"{path.name}.rank{distributed.rank()}").unlink(missing_ok=True)


def run(spec: RunSpec, out: str, device: str, progress: bool = True) -> dict[str, Any]:
    """The whole pipeline as ``spec`` says: load → prepare + calibrate (+ masks) (+ fine-tune) →
    convert (+ correct) → simulate → report, written to ``out``.

    With ``epochs`` > 0 the prepared model is trained first: an ANN with real weights is fine-tuned
    with the recipe's settings, distilling from itself; random weights are trained from scratch.
    ``epochs`` None: the recipe's fine-tune epochs for an ANN with real weights, else 0. An ANN that
    is not trained is converted by calibration alone: its agreement with the SNN is reported, and
    the ``correction`` (bias or potential, for T steps) calibrates the SNN against the ANN itself
    (against the QCFS ANN for a trained model). ``masks`` adds Random Spike Masks to the prepared
    model (before training, if it is trained). Every long step resumes from the files in ``out``
    after an interruption. The report stores ``spec`` with T and the epochs resolved.
    """
    start = time.perf_counter()
    source = spec.model
    loaded = load(source.name, source.checkpoint, source.pretrained, shipped=source.pretrained, **source.loading())
    recipe = loaded.recipe
    real_weights = loaded.stage == "ann" and loaded.source != "random initialization"
    finetune_settings = get_recipe(source.name).finetune_settings if real_weights else {}
    spec = replace(spec, timesteps=spec.timesteps or recipe.timesteps,
                   epochs=finetune_settings.get("epochs", 0) if spec.epochs is None else spec.epochs)
    data, limit, timesteps, epochs = spec.data.name, spec.data.limit, spec.timesteps, spec.epochs
    calibration, neuron, masks, modes = spec.calibration, spec.neuron, spec.masks, list(spec.modes)
    out_dir = Path(out)
    test = eval_loader(recipe, data, spec.data.batch_size, limit)
    original_acc = evaluate(loaded.model.to(device), test, device=device) if loaded.stage == "ann" else None
    training = None
    if epochs > 0:
        settings = {**finetune_settings, "epochs": epochs}
        model, config, training = finetune(loaded, data, TrainConfig(**settings), calibration,
                                           out_dir / "prepared.pt", device, progress, spec.prepare,
                                           val_samples=limit, masks=masks)
        prepared = training["preparation"]
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
    sims = {mode: simulate_and_summarize(snn, recipe, test, timesteps, ann_acc["QCFS ANN"], device, progress, path,
                                         spec.costs, agreement, spec.simulation)
            for (mode, snn), path in zip(snns.items(), progress_files)}
    report = {**report_header(recipe, loaded.source, data, config.levels, timesteps, neuron),
              "weights_loading": loaded.metadata.get("loading") or None, "preparation": prepared,
              "masks": config.masks.describe() if config.masks else None,
              "route": "calibration only (no training)" if untrained_ann else None,
              "training": training, "ann_accuracy": ann_acc, "snn_calibration": calibrations or None,
              "energy_costs_pj": asdict(spec.costs),
              "ann_energy_uj_per_sample": ann_energy_uj_per_sample(next(iter(snns.values())), spec.costs),
              "simulations": sims, "spec": spec.to_dict(),
              "seconds": round(time.perf_counter() - start, 1)}
    finish_report(report, out_dir, progress_files)
    return report
