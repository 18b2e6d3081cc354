"""Training: QCFS-aware fine-tuning with distillation, training from scratch, rebuilding a shipped checkpoint."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snnconvert import distributed
from snnconvert.checkpoint import Job
from snnconvert.calibrate import CalibrationConfig
from snnconvert.prepare import MaskConfig, PrepareConfig
from snnconvert.direct import DirectConfig
from snnconvert.direct.dynamic_timesteps import mask_loss
from snnconvert.errors import SnnConvertError
from snnconvert.model_zoo import (Recipe, build_ann, get_recipe, list_recipes)
from snnconvert.model_zoo.build import LoadedModel
from snnconvert.report.records import FinetuneRecord, TrainingRecord
from snnconvert.runtime import evaluate
from snnconvert.spec import DataSpec, TrainSpec
from snnconvert.train import Objective, TrainConfig, fit
from snnconvert.workflow.load import dataset, eval_loader, load_source
from snnconvert.workflow.prepare import ensure_prepared, missing_route_sites, prepare_masked


def command_line() -> str:
    """How this process was started, for records (``snnconvert …``)."""
    return " ".join(["snnconvert", *sys.argv[1:]])


def train(model: nn.Module, recipe: Recipe, config: PrepareConfig | DirectConfig | None, data: DataSpec,
          train_config: TrainConfig, device: str, job: Job, teacher: nn.Module | None = None) -> TrainingRecord:
    """Train a prepared model (``config`` a PrepareConfig), a directly trained SNN (a DirectConfig)
    or, with ``config`` None, the original ANN on ``data``'s training split (validated on its first
    ``data.limit`` test images), distilling from ``teacher`` when given; ``job.checkpoint`` doubles
    as the resume file.

    Returns the training record (also written as JSON next to the checkpoint).
    """
    checkpoint = job.checkpoint
    train_set = dataset(recipe, data.name, "train", augment=True)
    val_loader = eval_loader(recipe, data.name, data.batch_size, data.limit)
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
    result = fit(model, train_set, train_config, val_loader, device, job, Objective(teacher, penalty, lr_of),
                 {"stage": stage, "recipe": recipe.to_dict(),
                  "prepare": asdict(config) if stage == "prepared" else None, "extra": extra})
    record = TrainingRecord(Path(checkpoint).name, stage, command_line(), data.name,
                            min(len(train_set), train_config.train_samples or len(train_set)),
                            len(val_loader.dataset) * distributed.world_size(), distributed.world_size(),
                            torch.get_num_threads(), train_config, teacher is not None, result.history,
                            result.resumed_from, round(result.seconds, 1))
    write_record(Path(checkpoint).with_suffix(".json"), record.to_dict())
    return record


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a JSON record atomically (rank 0 only)."""
    if distributed.is_main():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)


def finetune(loaded: LoadedModel, data: DataSpec, train_config: TrainConfig, calibration: CalibrationConfig,
             device: str, job: Job, prepare_config: PrepareConfig | None = None,
             masks: MaskConfig | None = None) -> tuple[nn.Module, PrepareConfig, FinetuneRecord]:
    """The MST recipe's training steps (:func:`train` on ``data``, checkpoint and resume as
    ``job`` says): prepare (with ``prepare_config``) and calibrate ``loaded`` (if it is an ANN), add
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
    test = eval_loader(loaded.recipe, data.name, data.batch_size, data.limit)
    teacher_acc = evaluate(loaded.model.to(device), test, device=device) if distill else None
    model, config, prepared = ensure_prepared(loaded, data.name, calibration, device, job.progress, prepare_config)
    if masks is not None:
        model = prepare_masked(model, masks)
        config = replace(config, masks=masks)
    before = evaluate(model, test, device=device)
    trained = train(model, loaded.recipe, config, data, train_config, device, job,
                    teacher=loaded.model if distill else None)
    teacher = ("original ANN" if loaded.stage == "ann" else "unmasked prepared model" if masks is not None
               else "prepared model without QCFS on " + " and ".join(kind.what for kind in added))
    record = FinetuneRecord(**vars(trained), started_from=loaded.source, teacher=teacher if distill else None,
                            teacher_accuracy=teacher_acc, accuracy_before_training=before,
                            preparation=prepared, prepare=asdict(config))
    write_record(Path(job.checkpoint).with_suffix(".json"), record.to_dict())
    return model, config, record


def build(name: str, out_dir: str | Path, data: str | None, device: str, progress: bool) -> dict[str, Any]:
    """Make a recipe's shipped checkpoint as its :class:`BuildPlan` says (each stage resumable):
    train the ANN from random weights if the plan has an ANN stage, then prepare, calibrate and
    train the QCFS model (distilling from that ANN when the plan asks).

    Returns the shipped record (written beside the checkpoint): the QCFS stage's, with the
    command, the plan and every stage's record."""
    recipe = get_recipe(name)
    plan = recipe.build
    if plan is None or recipe.checkpoint is None:
        raise SnnConvertError(f"{name} has no build plan (only the small models trained here do: "
                              f"{', '.join(n for n in list_recipes() if get_recipe(n).build)}); "
                              f"fine-tune it on your data with `snnconvert finetune {name} --data DIR`")
    data = DataSpec(data or plan.data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    qcfs_config = TrainConfig(**plan.qcfs)
    torch.manual_seed(qcfs_config.seed)
    loaded = LoadedModel(build_ann(recipe), recipe, "ann", None, "random initialization", {})
    stages: dict[str, TrainingRecord] = {}
    if plan.ann is not None:
        ann_path = out / Path(recipe.checkpoint).with_suffix("").name
        ann_path = ann_path.with_name(ann_path.name + "_ann.pt")
        stages["ann"] = train(loaded.model, recipe, None, data, TrainConfig(**plan.ann), device, Job(progress, ann_path))
        loaded.source = str(ann_path)
    elif qcfs_config.distill_alpha > 0:
        raise SnnConvertError(f"the build plan of {name} distills without an ANN stage to distill from")
    _, _, stages["qcfs"] = finetune(loaded, data, qcfs_config, CalibrationConfig(), device,
                                    Job(progress, out / recipe.checkpoint), PrepareConfig(levels=recipe.levels, **plan.prepare))
    record = {**stages["qcfs"].to_dict(), "command": command_line(), "build_plan": asdict(plan),
              "stages": {stage: trained.to_dict() for stage, trained in stages.items()}}
    write_record((out / recipe.checkpoint).with_suffix(".json"), record)
    return record


def training(spec: TrainSpec, device: str, job: Job) -> TrainingRecord:
    """Train or fine-tune as ``spec`` says, the checkpoint (and resume file) at ``job.checkpoint``: the
    original ANN as it is (``spec.prepare`` None), or the prepared QCFS model (an ANN is prepared
    and calibrated first), distilling from the model as it came when the config says so.

    Returns the training record, with ``loading`` (what loading the weights did).
    """
    source = spec.model
    torch.manual_seed(spec.train.seed)  # before the model is built: its initialization is the run's
    loaded = load_source(source, shipped=False)
    if spec.prepare is None:
        if loaded.stage != "ann":
            raise SnnConvertError(f"--ann trains an unprepared ANN, but {source.checkpoint} is {loaded.stage}")
        record = train(loaded.model, loaded.recipe, None, spec.data, spec.train, device, job)
    else:
        if spec.finetune and loaded.stage != "ann" and spec.masks is None and not missing_route_sites(loaded,
                                                                                                       spec.prepare):
            raise SnnConvertError(f"finetune starts from a trained ANN, but {loaded.source} is {loaded.stage}: pass the "
                                  "ANN's checkpoint, add --mask, --spike-probabilities or --spike-streams to fine-tune "
                                  "a changed copy against it, or `snnconvert train MODEL --checkpoint FILE` to keep "
                                  "training it")
        _, _, record = finetune(loaded, spec.data, spec.train, spec.calibration, device, job, spec.prepare, spec.masks)
    return replace(record, loading=loaded.metadata.get("loading", {}))
