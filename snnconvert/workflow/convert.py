"""The convert stage: a converted model corrected and saved, or exported (ONNX, NIR)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snnconvert import distributed
from snnconvert.calibrate.corrections import CorrectionConfig, conversion_errors, correct, site_calibrations
from snnconvert.checkpoint import save_checkpoint
from snnconvert.convert import NeuronConfig, convert, float_operations
from snnconvert.convert.convert import FloatOp
from snnconvert.prepare import PrepareConfig
from snnconvert.errors import SnnConvertError
from snnconvert.export import OPSET, export_ann, export_snn
from snnconvert.export.nir import nir_blockers
from snnconvert.model_zoo import (Recipe, get_recipe, shipped_checkpoint)
from snnconvert.report.records import Exported
from snnconvert.spec import ModelSource
from snnconvert.workflow.load import load_snn, load_source, model_metadata


def save_converted(path: str | Path, snn: nn.Module, recipe: Recipe, config: PrepareConfig, mode: str,
                   neuron: NeuronConfig, calibration: dict[str, Any] | None = None) -> None:
    """A converted checkpoint: the SNN's state, how it was converted, and the record of its
    calibration (corrections) if it was calibrated as an SNN."""
    if distributed.is_main():
        save_checkpoint(path, snn.state_dict(), "converted", recipe.to_dict(), asdict(config), mode=mode,
                        neuron=asdict(neuron), snn_calibration=json.dumps(calibration) if calibration else None)


def export(source: ModelSource, what: str, out: str | Path, fmt: str = "onnx", mode: str = "compensated",
           neuron: NeuronConfig = NeuronConfig(), timesteps: int | None = None) -> Exported:
    """Write the ``source`` model as ``fmt``: ``what="snn"`` one time step of its SNN (from a
    converted, prepared or directly trained checkpoint; default: the shipped one), ``"ann"`` the
    ANN the checkpoint holds (the QCFS model of a prepared one, else the original). Returns what
    was written."""
    model_name, checkpoint = source.name, source.checkpoint
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
        loaded = load_source(source)
        recipe = loaded.recipe
        kind = "QCFS ANN (prepared)" if loaded.stage == "prepared" else "original ANN"
        proto = export_ann(loaded.model, out, recipe.example_batch(),
                           {"what": kind, "weights": loaded.source, **model_metadata(recipe, timesteps)})
    return Exported(str(out), kind, OPSET, len(proto.graph.input), len(proto.graph.output), Path(out).stat().st_size)


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
        applied = correct(snn, prepared, images, timesteps, correction, reference, progress=progress)
        after = conversion_errors(snn, prepared, images, error_at, reference) if error_at else None
    return {"correction": asdict(correction) if correction else None, "timesteps": timesteps, "reference": reference,
            "images": len(images), "error_at": error_at,
            "sites": [asdict(row) for row in site_calibrations(prepared, applied, before, after)]}


def convert_checkpoint(source: ModelSource, mode: str, neuron: NeuronConfig, out: str | Path) -> list[FloatOp]:
    """Convert the prepared checkpoint ``source`` names and save the SNN to ``out`` (``snnconvert
    convert``); returns the operations that still run in floating point."""
    loaded = load_source(source)
    if loaded.stage != "prepared":
        raise SnnConvertError("convert needs a prepared checkpoint: run `snnconvert calibrate` or `train` first")
    snn = convert(loaded.model, mode, neuron)
    save_converted(out, snn, loaded.recipe, loaded.prepare_config, mode, neuron)
    return float_operations(snn)
