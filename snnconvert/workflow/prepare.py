"""The prepare stage: an ANN prepared and calibrated, or a prepared model given the event-driven route's sites."""
from __future__ import annotations

import copy
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from torch import nn

from snnconvert import distributed
from snnconvert.calibrate import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds
from snnconvert.checkpoint import save_checkpoint
from snnconvert.errors import SnnConvertError
from snnconvert.prepare import (MaskConfig, PrepareConfig, add_spike_masks, change_effects, prepare_with_report,
                                qcfs_modules)
from snnconvert.prepare.rewrite import ROUTE_SITES, PrepareReport, RouteSites, route_choices
from snnconvert.model_zoo import Recipe
from snnconvert.model_zoo.build import LoadedModel
from snnconvert.runtime import evaluate
from snnconvert.spec import ModelSource
from snnconvert.workflow.load import calibration_loader, calibration_batch, load_source


def default_preparation(recipe: Recipe, event_driven: bool = False) -> PrepareConfig:
    """The preparation of ``recipe``'s ANN where none is given: its levels L, the rest at the
    defaults but for the event-driven route's sites, looked for where the model has them on
    that route (``event_driven``) and not asked for off it."""
    return PrepareConfig(recipe.levels, **route_choices(event_driven))


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
    config = config or default_preparation(loaded.recipe)
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


def save_prepared(path: str | Path, model: nn.Module, recipe: Recipe, config: PrepareConfig) -> None:
    if distributed.is_main():
        save_checkpoint(path, model.state_dict(), "prepared", recipe.to_dict(), asdict(config))


def prepare_masked(model: nn.Module, masks: MaskConfig) -> nn.Module:
    """A copy of a prepared ``model`` with Random Spike Masks added."""
    masked = copy.deepcopy(model)
    add_spike_masks(masked, masks)
    return masked


def prepare_checkpoint(source: ModelSource, config: PrepareConfig, out: str | Path) -> tuple[PrepareReport, int]:
    """Prepare the ANN ``source`` names with ``config`` and save it uncalibrated to ``out``
    (``snnconvert prepare``); returns what prepare changed and the number of QCFS sites."""
    loaded = load_source(source, shipped=False)
    if loaded.stage == "prepared":
        raise SnnConvertError(f"{source.checkpoint} is already prepared: calibrate, train or convert it instead")
    prepared, report = prepare_with_report(loaded.model, loaded.recipe.example_batch(), config)
    save_prepared(out, prepared, loaded.recipe, config)
    return report, len(qcfs_modules(prepared))
