"""The pipeline stages as the CLI runs them, shared by the one-shot command and the subcommands."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snnconvert.calibrate import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds
from snnconvert.checkpoint import load_checkpoint, save_checkpoint
from snnconvert.convert import PrepareConfig, convert, float_operations, prepare
from snnconvert.convert.qcfs import rate_limit_model
from snnconvert.data import load_dataset, make_loader
from snnconvert.errors import CheckpointError, SnnConvertError
from snnconvert.model_zoo import Recipe, build_ann, get_recipe, load_model
from snnconvert.model_zoo.build import LoadedModel
from snnconvert.report import simulation_summary, write_report
from snnconvert.runtime import evaluate, simulate
from snnconvert.train import TrainConfig, fit


def load(model_name: str, checkpoint: str | None, pretrained: bool = True, shipped: bool = True) -> LoadedModel:
    """The named model with its weights (see :func:`load_model`); a checkpoint for another model is refused."""
    recipe = get_recipe(model_name)
    loaded = load_model(recipe, checkpoint, pretrained=pretrained, shipped=shipped)
    if loaded.recipe.name != recipe.name:
        raise CheckpointError(f"{checkpoint} was made for {loaded.recipe.name!r}, not {model_name!r}: "
                              f"run `snnconvert ... {loaded.recipe.name} --checkpoint {checkpoint}`")
    return loaded


def calibration_loader(recipe: Recipe, data: str, batch_size: int = 64):
    """The training split in a seeded shuffle; calibration reads only the samples it needs."""
    return make_loader(load_dataset(data, "train", recipe.input_spec), batch_size, shuffle=True, seed=0)


def ensure_prepared(loaded: LoadedModel, levels: int | None, data: str, calibration: CalibrationConfig,
                    device: str, progress: bool) -> tuple[nn.Module, PrepareConfig, dict[str, Any] | None]:
    """A prepared model: an ANN is prepared, then BatchNorm statistics and λ calibrated from data."""
    if loaded.stage == "prepared":
        return loaded.model, loaded.prepare_config, None
    config = PrepareConfig(levels=levels or loaded.recipe.levels)
    model = prepare(loaded.model, config).to(device)
    loader = calibration_loader(loaded.recipe, data)
    calibrate_batchnorm(model, loader, calibration.num_samples, device, progress)
    calibrate_thresholds(model, loader, calibration, device, progress)
    return model, config, asdict(calibration)


def save_prepared(path: str | Path, model: nn.Module, recipe: Recipe, config: PrepareConfig) -> None:
    save_checkpoint(path, model.state_dict(), "prepared", recipe.to_dict(), asdict(config))


def save_converted(path: str | Path, snn: nn.Module, recipe: Recipe, config: PrepareConfig, mode: str,
                   neuron: str) -> None:
    save_checkpoint(path, snn.state_dict(), "converted", recipe.to_dict(), asdict(config), mode=mode, neuron=neuron)


def train(model: nn.Module, recipe: Recipe, config: PrepareConfig, data: str, train_config: TrainConfig,
          checkpoint: str | Path, device: str, progress: bool, resume: bool = True,
          val_samples: int | None = None) -> dict[str, Any]:
    """Train a prepared model on the training split; the checkpoint doubles as the resume file."""
    train_set = load_dataset(data, "train", recipe.input_spec, augment=True)
    val_loader = make_loader(load_dataset(data, "test", recipe.input_spec), 256, limit=val_samples)
    result = fit(model, train_set, train_config, val_loader, checkpoint,
                 {"stage": "prepared", "recipe": recipe.to_dict(), "prepare": asdict(config),
                  "extra": {"command": " ".join(["snnconvert", *sys.argv[1:]])}},
                 resume=resume, device=device, progress=progress)
    return {"config": asdict(train_config), "history": result.history, "resumed_from": result.resumed_from,
            "seconds": round(result.seconds, 1), "train_samples": len(train_set)}


def load_snn(model_name: str, checkpoint: str, mode: str, neuron: str) -> tuple[nn.Module, Recipe]:
    """A converted model from a converted checkpoint (its own mode and neuron) or a prepared one
    (converted now with ``mode`` and ``neuron``)."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt["stage"] != "converted":
        loaded = load(model_name, checkpoint)
        if loaded.stage != "prepared":
            raise SnnConvertError(f"{checkpoint} holds an unprepared ANN: run `snnconvert prepare` and "
                                  "`snnconvert calibrate` (or `train`) first, or the one-shot `snnconvert MODEL`")
        return convert(loaded.model, mode, neuron), loaded.recipe
    recipe = Recipe.from_dict(ckpt["recipe"])
    if recipe.name != model_name:
        raise CheckpointError(f"{checkpoint} was made for {recipe.name!r}, not {model_name!r}")
    skeleton = prepare(build_ann(recipe), PrepareConfig(**ckpt["prepare"]))
    snn = convert(skeleton, ckpt["mode"], ckpt["neuron"])
    snn.load_state_dict(ckpt["model"])
    return snn, recipe


def eval_loader(recipe: Recipe, data: str, batch_size: int, limit: int | None):
    """The test split fitted to ``recipe``'s input, first ``limit`` images."""
    return make_loader(load_dataset(data, "test", recipe.input_spec), batch_size, limit=limit)


def simulate_and_summarize(snn: nn.Module, recipe: Recipe, loader, timesteps: int, ann_accuracy: float | None,
                           device: str, progress: bool) -> dict[str, Any]:
    """Simulate a converted model and summarize it (accuracy per t, spikes, floating-point ops)."""
    result = simulate(snn, loader, timesteps=timesteps, device=device, progress=progress,
                      input_shape=recipe.input_size)
    summary = simulation_summary(result, ann_accuracy)
    summary["float_operations"] = [asdict(op) for op in float_operations(snn)]
    return summary


def report_header(recipe: Recipe, weights: str, data: str, levels: int | None, timesteps: int,
                  neuron: str) -> dict[str, Any]:
    """The fields every report starts with."""
    return {"model": recipe.name, "timm_name": recipe.timm_name, "weights": weights, "data": data,
            "levels": levels, "timesteps": timesteps, "neuron": neuron, "torch_threads": torch.get_num_threads()}


def run(model_name: str, timesteps: int | None, data: str, checkpoint: str | None, calibration: CalibrationConfig,
        out: str, modes: list[str], neuron: str, levels: int | None, epochs: int, limit: int | None,
        batch_size: int, device: str, pretrained: bool, progress: bool = True) -> dict[str, Any]:
    """The whole pipeline: load → prepare + calibrate (+ train) → convert → simulate → report."""
    start = time.perf_counter()
    loaded = load(model_name, checkpoint, pretrained, shipped=pretrained)
    recipe = loaded.recipe
    timesteps = timesteps or recipe.timesteps
    out_dir = Path(out)
    original_acc = None
    if loaded.stage == "ann":
        original_acc = evaluate(loaded.model.to(device), eval_loader(recipe, data, batch_size, limit), device=device)
    model, config, calibrated = ensure_prepared(loaded, levels, data, calibration, device, progress)
    training = None
    if epochs > 0:
        training = train(model, recipe, config, data, TrainConfig(epochs=epochs), out_dir / "prepared.pt",
                         device, progress, val_samples=limit)
    elif loaded.stage == "ann":
        save_prepared(out_dir / "prepared.pt", model, recipe, config)
    test = eval_loader(recipe, data, batch_size, limit)
    ann_acc = {"QCFS ANN": evaluate(model, test, device=device),
               "QCFS ANN, L → ∞ (the SNN's T → ∞ limit)": evaluate(rate_limit_model(model), test, device=device)}
    if original_acc is not None:
        ann_acc = {"original ANN": original_acc, **ann_acc}
    sims = {mode: simulate_and_summarize(convert(model, mode, neuron), recipe, test, timesteps, ann_acc["QCFS ANN"],
                                         device, progress) for mode in modes}
    report = {**report_header(recipe, loaded.source, data, config.levels, timesteps, neuron),
              "calibration": calibrated, "training": training, "ann_accuracy": ann_acc, "simulations": sims,
              "seconds": round(time.perf_counter() - start, 1)}
    write_report(report, out_dir)
    return report
