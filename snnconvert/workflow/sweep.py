"""Random Spike Masking sweeps."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from snnconvert import distributed
from snnconvert.calibrate import CalibrationConfig
from snnconvert.convert import NeuronConfig, convert
from snnconvert.prepare import MaskConfig, mask_sites
from snnconvert.errors import SnnConvertError
from snnconvert.report import write_sweep_report
from snnconvert.runtime import SimulationOptions, evaluate
from snnconvert.runtime.energy import EnergyCosts
from snnconvert.train import TrainConfig
from snnconvert.workflow.load import load, eval_loader
from snnconvert.workflow.prepare import prepare_masked
from snnconvert.workflow.finetune import finetune
from snnconvert.workflow.simulate import simulate_and_summarize, report_header, finish_report


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
