"""The pipeline stages as the CLI runs them, shared by the one-shot command and the subcommands."""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from snnconvert import distributed
from snnconvert.calibrate import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds
from snnconvert.calibrate.corrections import CorrectionConfig, conversion_errors, correct, site_calibrations
from snnconvert.checkpoint import load_checkpoint, save_checkpoint
from snnconvert.convert import NeuronConfig, convert, float_operations
from snnconvert.prepare import MaskConfig, PrepareConfig, add_spike_masks, change_effects, mask_sites, prepare, prepare_with_report
from snnconvert.prepare.rewrite import ROUTE_SITES, PrepareReport, RouteSites
from snnconvert.prepare.qcfs import rate_limit_model
from snnconvert.data import load_dataset, make_loader
from snnconvert.data.fit import check_fit
from snnconvert.direct import DirectConfig
from snnconvert.direct.dynamic_timesteps import average_steps, layer_steps, mask_loss
from snnconvert.errors import CheckpointError, SnnConvertError, first_line
from snnconvert.export import OPSET, export_ann, export_snn
from snnconvert.export.nir import nir_blockers
from snnconvert.model_zoo import (Recipe, build_ann, build_spiking_classifier, get_recipe, list_recipes, load_direct,
                                  load_model, shipped_checkpoint)
from snnconvert.model_zoo.build import LoadedModel
from snnconvert.report import simulation_summary, write_report, write_sweep_report
from snnconvert.report.early_exit import exit_rows
from snnconvert.runtime import SimulationOptions, evaluate, simulate
from snnconvert.runtime.early_exit import ExitRule, ExitTrace, exit_curve, quiet_problems
from snnconvert.runtime.energy.conventions import energy_conventions
from snnconvert.runtime.energy import EnergyCosts, OpAccounting
from snnconvert.spec import RunSpec
from snnconvert.runtime.execution import run_steps
from snnconvert.train import TrainConfig, fit


def load(model_name: str, checkpoint: str | None, pretrained: bool = True, shipped: bool = True,
         adapt: dict[str, Any] | None = None, remap: str | None = None) -> LoadedModel:
    """The named model with its weights (see :func:`load_model`: ``adapt`` builds it for other
    data, ``remap`` reads weights saved under other names); a checkpoint for another model is refused."""
    recipe = get_recipe(model_name)
    loaded = load_model(recipe, checkpoint, pretrained=pretrained, shipped=shipped, adapt=adapt, remap=remap)
    if loaded.recipe.name != recipe.name:
        raise CheckpointError(f"{checkpoint} was made for {loaded.recipe.name!r}, not {model_name!r}: "
                              f"run `snnconvert ... {loaded.recipe.name} --checkpoint {checkpoint}`")
    return loaded


def dataset(recipe: Recipe, data: str, split: str, augment: bool = False):
    """A split of ``data`` fitted to ``recipe``'s model; refused when it does not fit (see :func:`check_fit`)."""
    found = load_dataset(data, split, recipe.input_spec, augment)
    check_fit(found, recipe.input_spec, data, recipe.name)
    return found


def calibration_loader(recipe: Recipe, data: str, batch_size: int = 64):
    """The training split in a seeded shuffle; calibration reads only the samples it needs."""
    return make_loader(dataset(recipe, data, "train"), batch_size, shuffle=True, seed=0)


def ensure_prepared(loaded: LoadedModel, data: str, calibration: CalibrationConfig, device: str, progress: bool,
                    config: PrepareConfig | None = None) -> tuple[nn.Module, PrepareConfig, dict[str, Any] | None]:
    """A prepared model: an ANN is prepared (a copy) with ``config`` (default: the recipe's levels),
    the BatchNorms prepare added get statistics and every QCFS its λ from the training split (the
    ANN's own BatchNorms keep theirs), and each change's cost is measured on the calibration images.

    A prepared model is kept as it is, but for the event-driven route's sites (attention
    probabilities, real-valued streams: :data:`~snnconvert.prepare.rewrite.ROUTE_SITES`) that
    ``config`` asks for (True, or None: where the model has them) and it lacks: they are added
    and calibrated.

    Returns the model, its config and a record of the preparation (None for a prepared model kept as is).
    """
    if loaded.stage == "prepared":
        if not missing_route_sites(loaded, config):
            return loaded.model, loaded.prepare_config, None
        return add_route_sites(loaded, config, data, calibration, device, progress)
    config = config or PrepareConfig(levels=loaded.recipe.levels)
    model, report = prepare_with_report(loaded.model.to(device), loaded.recipe.example_batch().to(device), config)
    loader = calibration_loader(loaded.recipe, data)
    calibrate_batchnorm(model, loader, calibration.num_samples, device, progress, only=report.new_batchnorms(),
                        identity=report.new_batchnorms(identity=True))
    calibrate_thresholds(model, loader, calibration, device, progress)
    images, labels = calibration_batch(loader, calibration.num_samples)
    effects = change_effects(report, loaded.model, model, images.to(device), labels.to(device))
    record = {"calibration": asdict(calibration), "changes": report.lines(),
              "accuracy_on_calibration_images": {label: round(acc, 2) for label, acc in effects},
              "calibration_images": len(labels)}
    return model, config, record


def missing_route_sites(loaded: LoadedModel, config: PrepareConfig | None) -> list[RouteSites]:
    """The event-driven route's sites that ``config`` asks for and the prepared model ``loaded``
    lacks (:func:`ensure_prepared` adds them). A model that was asked for them where it has them
    (None) and had none is not asked again, unless they are required (True: it is refused)."""
    if loaded.stage != "prepared":
        return []
    return [kind for kind in ROUTE_SITES
            if (asked := kind.asked(config)) is not False and kind.asked(loaded.prepare_config) in (False, None)
            and not (asked is None and kind.asked(loaded.prepare_config) is None)]


def add_route_sites(loaded: LoadedModel, config: PrepareConfig, data: str, calibration: CalibrationConfig,
                    device: str, progress: bool) -> tuple[nn.Module, PrepareConfig, dict[str, Any]]:
    """A prepared model with the event-driven route's sites that ``config`` asks for and it lacks
    (:func:`missing_route_sites`), each calibrated like every other site; the record gives what
    they cost the QCFS ANN on the calibration images. A model with none of a kind is refused where
    it is required (True), else the record says why."""
    missing = missing_route_sites(loaded, config)
    levels = {"stream_levels": config.stream_levels} if any(k.option == "spike_streams" for k in missing) else {}
    asked = replace(loaded.prepare_config, **levels, **{kind.option: kind.asked(config) for kind in missing})
    model, report = copy.deepcopy(loaded.model).to(device), PrepareReport()
    added = {kind.option: kind.add(model, asked, report) for kind in missing}
    sites = [site for paths in added.values() for site in paths]
    if not sites:  # the config records that they were looked for
        return loaded.model, asked, {"changes": report.lines()}
    model.recompile()
    config = replace(asked, **{option: True for option, paths in added.items() if paths})
    loader = calibration_loader(loaded.recipe, data)
    images, labels = calibration_batch(loader, calibration.num_samples)
    before = evaluate(loaded.model.to(device), images.to(device), labels.to(device), device=device)
    calibrate_thresholds(model, loader, calibration, device, progress, only=sites)
    after = evaluate(model, images.to(device), labels.to(device), device=device)
    record = {"calibration": asdict(calibration), "changes": report.lines(),
              "accuracy_on_calibration_images": {"QCFS ANN as loaded": round(before, 2),
                                                 "with QCFS on " + " and ".join(
                                                     k.what for k in ROUTE_SITES if added.get(k.option)): round(after, 2)},
              "calibration_images": len(labels)}
    return model, config, record


def calibration_batch(loader, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_samples`` calibration images and labels (this process's share under torchrun)."""
    images, labels, seen = [], [], 0
    for x, y in loader:
        images.append(x[: num_samples - seen])
        labels.append(y[: num_samples - seen])
        seen += len(images[-1])
        if seen >= num_samples:
            break
    return torch.cat(images), torch.cat(labels)


def save_prepared(path: str | Path, model: nn.Module, recipe: Recipe, config: PrepareConfig) -> None:
    if distributed.is_main():
        save_checkpoint(path, model.state_dict(), "prepared", recipe.to_dict(), asdict(config))


def save_converted(path: str | Path, snn: nn.Module, recipe: Recipe, config: PrepareConfig, mode: str,
                   neuron: NeuronConfig, calibration: dict[str, Any] | None = None) -> None:
    """A converted checkpoint: the SNN's state, how it was converted, and the record of its
    calibration (corrections) if it was calibrated as an SNN."""
    if distributed.is_main():
        save_checkpoint(path, snn.state_dict(), "converted", recipe.to_dict(), asdict(config), mode=mode,
                        neuron=asdict(neuron), snn_calibration=json.dumps(calibration) if calibration else None)


def command_line() -> str:
    """How this process was started, for records (``snnconvert …``)."""
    return " ".join(["snnconvert", *sys.argv[1:]])


def train(model: nn.Module, recipe: Recipe, config: PrepareConfig | DirectConfig | None, data: str,
          train_config: TrainConfig, checkpoint: str | Path, device: str, progress: bool, resume: bool = True,
          val_samples: int | None = None, teacher: nn.Module | None = None) -> dict[str, Any]:
    """Train a prepared model (``config`` a PrepareConfig), a directly trained SNN (a DirectConfig)
    or, with ``config`` None, the original ANN on the training split, distilling from ``teacher``
    when given; the checkpoint doubles as the resume file.

    Returns the training record (also written as JSON next to the checkpoint).
    """
    train_set = dataset(recipe, data, "train", augment=True)
    val_loader = eval_loader(recipe, data, 256, val_samples)
    stage = "ann" if config is None else "direct" if isinstance(config, DirectConfig) else "prepared"
    extra = {"command": command_line(), **({"direct": asdict(config)} if stage == "direct" else {})}
    penalty = lr_of = None
    if stage == "direct" and config.dynamic_timesteps:
        if config.mask_loss and config.lambda_m > 0:
            def penalty(m: nn.Module) -> torch.Tensor:
                return config.lambda_m * mask_loss(m, config.mask_loss)
        if config.mask_lr is not None:
            def lr_of(name: str) -> float | None:
                return config.mask_lr if name.endswith("timestep_mask.tp") else None
    result = fit(model, train_set, train_config, val_loader, checkpoint,
                 {"stage": stage, "recipe": recipe.to_dict(),
                  "prepare": asdict(config) if stage == "prepared" else None, "extra": extra},
                 resume=resume, device=device, progress=progress, teacher=teacher, penalty=penalty, lr_of=lr_of)
    record = {"checkpoint": Path(checkpoint).name, "stage": stage, "command": command_line(), "data": data,
              "train_samples": min(len(train_set), train_config.train_samples or len(train_set)),
              "val_samples": len(val_loader.dataset) * distributed.world_size(),
              "processes": distributed.world_size(), "torch_threads": torch.get_num_threads(),
              "config": asdict(train_config), "distilled": teacher is not None, "history": result.history,
              "resumed_from": result.resumed_from, "seconds": round(result.seconds, 1)}
    write_record(Path(checkpoint).with_suffix(".json"), record)
    return record


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a JSON record atomically (rank 0 only)."""
    if distributed.is_main():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)


def finetune(loaded: LoadedModel, data: str, train_config: TrainConfig, calibration: CalibrationConfig,
             checkpoint: str | Path, device: str, progress: bool, prepare_config: PrepareConfig | None = None,
             resume: bool = True, val_samples: int | None = None,
             masks: MaskConfig | None = None) -> tuple[nn.Module, PrepareConfig, dict[str, Any]]:
    """The MST recipe's training steps: prepare (with ``prepare_config``) and calibrate ``loaded`` (if it is an ANN), add
    Random Spike Masks (if ``masks``), then train, distilling from ``loaded``'s model as it came
    when ``train_config.distill_alpha`` > 0: the original ANN, or — for masks or spiking attention
    probabilities or streams added to a prepared model — the prepared model as it came (MST §4.3).

    The student starts from the teacher's weights; its accuracy before training is recorded next
    to the teacher's.
    """
    distill = train_config.distill_alpha > 0
    added = missing_route_sites(loaded, prepare_config)
    if distill and loaded.stage != "ann" and masks is None and not added:
        raise SnnConvertError(f"distillation needs a teacher, but {loaded.source} is already prepared: pass the ANN "
                              "checkpoint, add spike masks, spiking attention probabilities or spiking streams (the "
                              "model as it came then teaches the changed one), or --alpha 0 to train without a teacher")
    masked_already = loaded.prepare_config.masks if loaded.prepare_config is not None else None
    if masks is not None and masked_already is not None:
        raise SnnConvertError(f"{loaded.source} is masked already ({masked_already.describe()}): start from the "
                              "unmasked model")
    test = eval_loader(loaded.recipe, data, 256, val_samples)
    teacher_acc = evaluate(loaded.model.to(device), test, device=device) if distill else None
    model, config, prepared = ensure_prepared(loaded, data, calibration, device, progress, prepare_config)
    if masks is not None:
        model = prepare_masked(model, masks)
        config = replace(config, masks=masks)
    before = evaluate(model, test, device=device)
    record = train(model, loaded.recipe, config, data, train_config, checkpoint, device, progress, resume,
                   val_samples, teacher=loaded.model if distill else None)
    teacher = ("original ANN" if loaded.stage == "ann" else "unmasked prepared model" if masks is not None
               else "prepared model without QCFS on " + " and ".join(kind.what for kind in added))
    record.update(started_from=loaded.source, teacher=teacher if distill else None,
                  teacher_accuracy=teacher_acc, accuracy_before_training=before,
                  preparation=prepared, prepare=asdict(config))
    write_record(Path(checkpoint).with_suffix(".json"), record)
    return model, config, record


def build(name: str, out_dir: str | Path, data: str | None, device: str, progress: bool) -> dict[str, Any]:
    """Make a recipe's shipped checkpoint as its :class:`BuildPlan` says (each stage resumable):
    train the ANN from random weights if the plan has an ANN stage, then prepare, calibrate and
    train the QCFS model (distilling from that ANN when the plan asks)."""
    recipe = get_recipe(name)
    plan = recipe.build
    if plan is None or recipe.checkpoint is None:
        raise SnnConvertError(f"{name} has no build plan (only the small models trained here do: "
                              f"{', '.join(n for n in list_recipes() if get_recipe(n).build)}); "
                              f"fine-tune it on your data with `snnconvert finetune {name} --data DIR`")
    data = data or plan.data
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    qcfs_config = TrainConfig(**plan.qcfs)
    torch.manual_seed(qcfs_config.seed)
    loaded = LoadedModel(build_ann(recipe), recipe, "ann", None, "random initialization", {})
    stages: dict[str, Any] = {}
    if plan.ann is not None:
        ann_path = out / Path(recipe.checkpoint).with_suffix("").name
        ann_path = ann_path.with_name(ann_path.name + "_ann.pt")
        stages["ann"] = train(loaded.model, recipe, None, data, TrainConfig(**plan.ann), ann_path, device, progress)
        loaded.source = str(ann_path)
    elif qcfs_config.distill_alpha > 0:
        raise SnnConvertError(f"the build plan of {name} distills without an ANN stage to distill from")
    _, _, stages["qcfs"] = finetune(loaded, data, qcfs_config, CalibrationConfig(), out / recipe.checkpoint,
                                    device, progress, PrepareConfig(levels=recipe.levels, **plan.prepare))
    record = {**stages["qcfs"], "command": command_line(), "build_plan": asdict(plan), "stages": stages}
    write_record((out / recipe.checkpoint).with_suffix(".json"), record)
    return record


@dataclass
class LoadedSNN:
    """A single-step SNN ready to simulate or export, with its recipe, a description of its
    neurons and its attention mode (``direct`` for a directly trained SNN)."""

    snn: nn.Module
    recipe: Recipe
    neuron: str
    mode: str


def load_snn(model_name: str, checkpoint: str, mode: str, neuron: NeuronConfig) -> LoadedSNN:
    """The SNN of a converted checkpoint (its own mode, neurons and corrections), a prepared one
    (converted now with ``mode`` and ``neuron``) or a directly trained one (its encoder and network)."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt["stage"] not in ("converted", "direct"):
        loaded = load(model_name, checkpoint)
        if loaded.stage != "prepared":
            raise SnnConvertError(f"{checkpoint} holds an unprepared ANN: run `snnconvert prepare` and "
                                  "`snnconvert calibrate` (or `train`) first, or the one-shot `snnconvert MODEL`")
        return LoadedSNN(convert(loaded.model, mode, neuron), loaded.recipe, neuron.describe(), mode)
    recipe = Recipe.from_dict(ckpt["recipe"])
    if recipe.name != model_name:
        raise CheckpointError(f"{checkpoint} was made for {recipe.name!r}, not {model_name!r}")
    if ckpt["stage"] == "direct":
        return LoadedSNN(load_direct(ckpt, checkpoint).for_inference(recipe.example_batch()), recipe,
                         DirectConfig(**ckpt["direct"]).describe(), "direct")
    skeleton = prepare(build_ann(recipe), recipe.example_batch(), PrepareConfig(**ckpt["prepare"]))
    stored = NeuronConfig.of(ckpt["neuron"])
    snn = convert(skeleton, ckpt["mode"], stored)
    try:  # neurons adopt the stored shapes of thresholds, potentials and biases (calibrated ones)
        snn.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint} does not fit the converted {model_name} ({first_line(e, 150)}); "
                              "convert its prepared checkpoint again") from e
    return LoadedSNN(snn, recipe, stored.describe(), ckpt["mode"])


def model_metadata(recipe: Recipe, timesteps: int | None) -> dict[str, Any]:
    """What an exported model says about itself: the recipe, its input, its classes and T."""
    classes = recipe.classes
    if classes is None and recipe.num_classes == 1000:
        from timm.data import ImageNetInfo
        classes = tuple(ImageNetInfo().label_names())
    spec = recipe.input_spec
    return {"model": recipe.to_dict(), "timesteps": timesteps or recipe.timesteps,
            "input": {"shape": list(spec.size), "layout": "NCHW", "normalization": "(pixel in [0, 1] - mean) / std", "mean": list(spec.mean), "std": list(spec.std),
                      "interpolation": spec.interpolation, "crop_pct": spec.crop_pct},
            "classes": {"count": recipe.num_classes, "names": list(classes) if classes else None}}


def export(model_name: str, checkpoint: str | None, what: str, out: str | Path, fmt: str = "onnx",
           mode: str = "compensated", neuron: NeuronConfig = NeuronConfig(), timesteps: int | None = None,
           pretrained: bool = True) -> dict[str, Any]:
    """Write ``model_name`` as ``fmt``: ``what="snn"`` one time step of its SNN (from a converted,
    prepared or directly trained checkpoint; default: the shipped one), ``"ann"`` the ANN the
    checkpoint holds (the QCFS model of a prepared one, else the original). Returns what was written."""
    if fmt == "nir" and what != "snn":
        raise SnnConvertError("NIR describes spiking networks: export --what snn to NIR, or the ANN to ONNX")
    if what == "snn":
        path = checkpoint or shipped_checkpoint(get_recipe(model_name))
        if path is None:
            raise SnnConvertError(f"{model_name} has no shipped checkpoint: pass --checkpoint FILE (converted, "
                                  "prepared or directly trained)")
        loaded_snn = load_snn(model_name, str(path), mode, neuron)
        if fmt == "nir":
            reasons = nir_blockers(loaded_snn.snn) or ["it has no spiking neurons"]
            raise SnnConvertError(f"cannot export {model_name} to NIR exactly: {reasons[0]}"
                                  + (f" ({len(reasons) - 1} more ops do not map either)" if len(reasons) > 1 else "")
                                  + "; export it to ONNX (--format onnx), which keeps every op")
        recipe = loaded_snn.recipe
        kind = "direct-trained SNN" if loaded_snn.mode == "direct" else "converted SNN"
        metadata = {"what": f"one time step of a {kind}", "neuron": loaded_snn.neuron, "attention": loaded_snn.mode,
                    "weights": str(path), **model_metadata(recipe, timesteps)}
        proto = export_snn(loaded_snn.snn, out, recipe.example_batch(), metadata)
    else:
        loaded = load(model_name, checkpoint, pretrained=pretrained)
        recipe = loaded.recipe
        kind = "QCFS ANN (prepared)" if loaded.stage == "prepared" else "original ANN"
        proto = export_ann(loaded.model, out, recipe.example_batch(),
                           {"what": kind, "weights": loaded.source, **model_metadata(recipe, timesteps)})
    return {"out": str(out), "what": kind, "opset": OPSET, "inputs": len(proto.graph.input),
            "outputs": len(proto.graph.output), "bytes": Path(out).stat().st_size}


def eval_loader(recipe: Recipe, data: str, batch_size: int, limit: int | None):
    """The test split fitted to ``recipe``'s input, first ``limit`` images."""
    return make_loader(dataset(recipe, data, "test"), batch_size, limit=limit)


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


def calibrate_snn(snn: nn.Module, prepared: nn.Module, images: torch.Tensor, timesteps: int,
                  correction: CorrectionConfig | None, error_at: list[int], reference: str,
                  progress: bool = False) -> dict[str, Any]:
    """Calibrate a converted model as an SNN (``correction``: bias or potential for T =
    ``timesteps``, in place) and measure every site's conversion error against ``reference``
    (``ann`` or ``qcfs``) after each step of ``error_at``, before and after the correction.
    Returns the per-site record (λ, cap, correction, errors)."""
    before = conversion_errors(snn, prepared, images, error_at, reference) if error_at else None
    applied = after = None
    if correction is not None:
        applied = correct(snn, prepared, images, timesteps, correction.method, reference, correction.iterations,
                          progress=progress)
        after = conversion_errors(snn, prepared, images, error_at, reference) if error_at else None
    return {"correction": asdict(correction) if correction else None, "timesteps": timesteps, "reference": reference,
            "images": len(images), "error_at": error_at,
            "sites": [asdict(row) for row in site_calibrations(prepared, applied, before, after)]}


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


def mask_sweep(model_name: str, checkpoint: str | None, data: str, timesteps: int | None, targets: list[str],
               ratios: list[float], block_ratio: float | None, neuron: NeuronConfig, limit: int | None, batch_size: int,
               out: str, device: str, progress: bool, seed: int = 0, costs: EnergyCosts = EnergyCosts(),
               finetune_config: TrainConfig | None = None,
               simulation: SimulationOptions = SimulationOptions()) -> dict[str, Any]:
    """Random Spike Masking sweep of a prepared model: for each target, each ratio on every block,
    and (with ``block_ratio``) that ratio on the first k blocks for every k; each simulated for T
    steps against the unmasked SNN (accuracy at T, spikes, MST power ratio, energy).

    With ``finetune_config`` every masked model is also fine-tuned with distillation from the
    unmasked one (:func:`finetune`; checkpoints ``finetuned_*.pt`` in ``out``) and simulated again.
    Everything resumes from the files in ``out``.
    """
    loaded = load(model_name, checkpoint)
    if loaded.stage != "prepared":
        raise SnnConvertError(f"mask-sweep needs a prepared model, but {loaded.source} is an ANN: run "
                              f"`snnconvert finetune {model_name}` (or `calibrate`) first")
    if loaded.prepare_config.masks is not None:
        raise SnnConvertError(f"{loaded.source} is masked already ({loaded.prepare_config.masks.describe()}): "
                              "sweep the unmasked model")
    recipe, model = loaded.recipe, loaded.model
    timesteps = timesteps or recipe.timesteps
    test = eval_loader(recipe, data, batch_size, limit)
    out_dir = Path(out)
    plans: list[tuple[str, MaskConfig | None]] = [("unmasked", None)]
    for target in targets:
        plans += [("ratio", MaskConfig({target: ratio}, seed=seed)) for ratio in ratios if ratio > 0]
        if block_ratio:
            plans += [("blocks", MaskConfig({target: block_ratio}, blocks=k, seed=seed))
                      for k in range(1, len(mask_sites(model, target)) + 1)]
    rows, progress_files = [], []
    for sweep, masks in plans:
        target, ratio = next(iter(masks.ratios.items())) if masks else ("none", 0.0)
        key = f"{target}_{ratio:g}_{masks.blocks if masks and masks.blocks is not None else 'all'}"
        variants = [(False, model if masks is None else prepare_masked(model, masks))]
        if finetune_config is not None and masks is not None:
            torch.manual_seed(finetune_config.seed)
            student, _, _ = finetune(loaded, data, finetune_config, CalibrationConfig(), out_dir / f"finetuned_{key}.pt",
                                     device, progress, val_samples=limit, masks=masks)
            variants.append((True, student))
        for fine_tuned, variant in variants:
            path = out_dir / f"sweep_{key}{'_finetuned' if fine_tuned else ''}.progress.pt"
            progress_files.append(path)
            qcfs_acc = evaluate(variant, test, device=device)
            sim = simulate_and_summarize(convert(variant, "compensated", neuron), recipe, test, timesteps, qcfs_acc,
                                         device, progress, path, costs, options=simulation)
            rows.append({"sweep": sweep, "target": target, "ratio": ratio,
                         "blocks": "all" if masks is None or masks.blocks is None else masks.blocks,
                         "fine_tuned": fine_tuned, "qcfs_accuracy": qcfs_acc, "accuracy": sim["accuracy_per_step"][-1],
                         "spikes_per_sample": sim["spikes_per_sample"], "sops_per_sample": sim["sops_per_sample"],
                         "energy_uj_per_sample": sim["energy_uj_per_sample"],
                         "resumed_from_batch": sim["resumed_from_batch"]})
    base = rows[0]
    for row in rows:
        row["accuracy_change"] = row["accuracy"] - base["accuracy"]
        row["power_ratio"] = row["spikes_per_sample"] / max(1e-12, base["spikes_per_sample"])
        row["energy_ratio"] = row["energy_uj_per_sample"] / max(1e-12, base["energy_uj_per_sample"])
    report = {**report_header(recipe, loaded.source, data, loaded.prepare_config.levels, timesteps, neuron),
              "samples": len(test.dataset) * distributed.world_size(), "energy_costs_pj": asdict(costs),
              "seed": seed, "finetune": asdict(finetune_config) if finetune_config else None, "rows": rows}
    finish_report(report, out_dir, progress_files, write_sweep_report)
    return report


def timestep_summary(snn: fx.GraphModule, config: DirectConfig) -> dict[str, Any]:
    """The time steps a model with dynamic time steps learned: ``T_l`` per layer (and the steps it
    is computed for: fewer where every layer it feeds stopped sooner), ``T_avg`` in all and per group."""
    layers = layer_steps(snn)
    computed = {n.target: k for n, k in run_steps(snn).items() if n.op == "call_module"}
    groups: dict[str, list[int]] = {}
    for layer in layers:
        groups.setdefault(layer.group, []).append(layer.steps)
    return {"max": config.timesteps, "initial": config.initial_timesteps, "mask_loss": list(config.mask_loss),
            "lambda_m": config.lambda_m, "average": average_steps(layers),
            "average_by_group": {g: sum(v) / len(v) for g, v in groups.items()},
            "layers": [{"name": layer.name, "group": layer.group, "steps": layer.steps,
                        "computed": computed.get(layer.name, config.timesteps)} for layer in layers]}


def prepare_masked(model: nn.Module, masks: MaskConfig) -> nn.Module:
    """A copy of a prepared ``model`` with Random Spike Masks added."""
    masked = copy.deepcopy(model)
    add_spike_masks(masked, masks)
    return masked


def direct_train(model_name: str, data: str, config: DirectConfig, train_config: TrainConfig, out: str,
                 limit: int | None, batch_size: int, device: str, progress: bool,
                 costs: EnergyCosts = EnergyCosts()) -> dict[str, Any]:
    """Train a spiking model directly (surrogate gradients, BPTT over T steps; the loss on the mean
    of the T outputs), then simulate it on the test split with the conversion path's simulator and
    report it the same way (accuracy per step, spikes, spiking metrics, energy). Resumable."""
    start = time.perf_counter()
    recipe = get_recipe(model_name)
    out_dir = Path(out)
    torch.manual_seed(train_config.seed)
    model = build_spiking_classifier(recipe, config)
    record = train(model, recipe, config, data, train_config, out_dir / "direct.pt", device, progress,
                   val_samples=limit)
    test = eval_loader(recipe, data, batch_size, limit)
    progress_file = out_dir / "simulation_direct.progress.pt"
    snn = model.for_inference(recipe.example_batch().to(device))
    sim = simulate_and_summarize(snn, recipe, test, config.timesteps, None, device, progress, progress_file, costs)
    report = {**report_header(recipe, str(out_dir / "direct.pt"), data, None, config.timesteps, config.neuron),
              "method": "direct", "direct": asdict(config), "training": record, "ann_accuracy": {},
              "energy_costs_pj": asdict(costs), "simulations": {"direct": sim},
              "dynamic_timesteps": timestep_summary(snn, config) if config.dynamic_timesteps else None,
              "parameters": sum(p.numel() for p in model.parameters()),
              "seconds": round(time.perf_counter() - start, 1)}
    finish_report(report, out_dir, [progress_file])
    return report
