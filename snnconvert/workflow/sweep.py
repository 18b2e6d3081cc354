"""Random Spike Masking sweeps."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from snnconvert import distributed
from snnconvert.calibrate import CalibrationConfig
from snnconvert.checkpoint import Job
from snnconvert.convert import convert
from snnconvert.prepare import MaskConfig, mask_sites
from snnconvert.errors import SnnConvertError
from snnconvert.report import write_sweep_report
from snnconvert.report.records import SweepReport, SweepRow
from snnconvert.runtime import evaluate
from snnconvert.spec import DataSpec, SweepSpec
from snnconvert.workflow.load import load_source, eval_loader
from snnconvert.workflow.prepare import prepare_masked
from snnconvert.workflow.finetune import finetune
from snnconvert.workflow.simulate import Measures, simulate_and_summarize, report_header, finish_report


def mask_sweep(spec: SweepSpec, out: str, device: str, progress: bool) -> SweepReport:
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
    rows, progress_files, base = [], [], None
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
            base = base or sim  # the unmasked model's, the first
            rows.append(SweepRow(sweep, target, ratio, "all" if masks is None or masks.blocks is None else masks.blocks,
                                 fine_tuned, qcfs_acc, sim.accuracy_per_step[-1], sim.spikes_per_sample,
                                 sim.sops_per_sample, sim.energy_uj_per_sample, sim.resumed_from_batch,
                                 sim.accuracy_per_step[-1] - base.accuracy_per_step[-1],
                                 sim.spikes_per_sample / max(1e-12, base.spikes_per_sample),
                                 sim.energy_uj_per_sample / max(1e-12, base.energy_uj_per_sample)))
    report = SweepReport(**report_header(recipe, loaded.source, data.name, loaded.prepare_config.levels, timesteps,
                                         neuron),
                         samples=len(test.dataset) * distributed.world_size(), energy_costs_pj=spec.costs, seed=seed,
                         finetune=finetune_config, rows=rows, spec=replace(spec, timesteps=timesteps))
    finish_report(report, out_dir, progress_files, write_sweep_report)
    return report
