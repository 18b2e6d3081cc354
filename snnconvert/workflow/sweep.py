"""Random Spike Masking sweeps."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from snnconvert import distributed
from snnconvert.calibrate import CalibrationConfig
from snnconvert.checkpoint import Job
from snnconvert.convert import convert
from snnconvert.prepare import MaskConfig, mask_sites
from snnconvert.errors import SnnConvertError
from snnconvert.report import write_sweep_report
from snnconvert.runtime import evaluate
from snnconvert.spec import DataSpec, SweepSpec
from snnconvert.workflow.load import load_source, eval_loader
from snnconvert.workflow.prepare import prepare_masked
from snnconvert.workflow.finetune import finetune
from snnconvert.workflow.simulate import Measures, simulate_and_summarize, report_header, finish_report


def mask_sweep(spec: SweepSpec, out: str, device: str, progress: bool) -> dict[str, Any]:
    """The Random Spike Masking sweep ``spec`` describes, written to ``out``: each variant simulated
    for T steps against the unmasked SNN (accuracy at T, spikes, MST power ratio, energy); fine-tuned
    variants (:func:`finetune`) have their checkpoints ``finetuned_*.pt`` in ``out``. Everything
    resumes from the files in ``out``.
    """
    source, data, neuron, seed, finetune_config = spec.model, spec.data, spec.neuron, spec.seed, spec.finetune
    loaded = load_source(source)
    if loaded.stage != "prepared":
        raise SnnConvertError(f"mask-sweep needs a prepared model, but {loaded.source} is an ANN: run "
                              f"`snnconvert finetune {source.name}` (or `calibrate`) first")
    if loaded.prepare_config.masks is not None:
        raise SnnConvertError(f"{loaded.source} is masked already ({loaded.prepare_config.masks.describe()}): "
                              "sweep the unmasked model")
    recipe, model = loaded.recipe, loaded.model
    timesteps = spec.timesteps or recipe.timesteps
    test = eval_loader(recipe, data.name, data.batch_size, data.limit)
    out_dir = Path(out)
    plans: list[tuple[str, MaskConfig | None]] = [("unmasked", None)]
    for target in spec.targets:
        plans += [("ratio", MaskConfig({target: ratio}, seed=seed)) for ratio in spec.ratios if ratio > 0]
        if spec.block_ratio:
            plans += [("blocks", MaskConfig({target: spec.block_ratio}, blocks=k, seed=seed))
                      for k in range(1, len(mask_sites(model, target)) + 1)]
    rows, progress_files = [], []
    for sweep, masks in plans:
        target, ratio = next(iter(masks.ratios.items())) if masks else ("none", 0.0)
        key = f"{target}_{ratio:g}_{masks.blocks if masks and masks.blocks is not None else 'all'}"
        variants = [(False, model if masks is None else prepare_masked(model, masks))]
        if finetune_config is not None and masks is not None:
            torch.manual_seed(finetune_config.seed)
            student, _, _ = finetune(loaded, DataSpec(data.name, data.limit), finetune_config, CalibrationConfig(),
                                     device, Job(progress, out_dir / f"finetuned_{key}.pt"), masks=masks)
            variants.append((True, student))
        for fine_tuned, variant in variants:
            path = out_dir / f"sweep_{key}{'_finetuned' if fine_tuned else ''}.progress.pt"
            progress_files.append(path)
            qcfs_acc = evaluate(variant, test, device=device)
            sim = simulate_and_summarize(convert(variant, "compensated", neuron), recipe, test, timesteps, device,
                                         Job(progress, path), Measures(spec.simulation, costs=spec.costs,
                                                                       ann_accuracy=qcfs_acc))
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
    report = {**report_header(recipe, loaded.source, data.name, loaded.prepare_config.levels, timesteps, neuron),
              "samples": len(test.dataset) * distributed.world_size(), "energy_costs_pj": asdict(spec.costs),
              "seed": seed, "finetune": asdict(finetune_config) if finetune_config else None, "rows": rows,
              "spec": replace(spec, timesteps=timesteps).to_dict()}
    finish_report(report, out_dir, progress_files, write_sweep_report)
    return report
