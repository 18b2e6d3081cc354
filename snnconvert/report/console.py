"""What the commands print: each stage's record (:mod:`snnconvert.report.records`) rendered as lines
of text (the files a report writes are in :mod:`snnconvert.report.report` and its siblings)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from snnconvert.convert.convert import FloatOp
from snnconvert.model_zoo import Recipe, shipped_checkpoint
from snnconvert.prepare.rewrite import PrepareReport
from snnconvert.report.calibration import calibration_table
from snnconvert.report.early_exit import early_exit_table
from snnconvert.report.records import (CalibrationRecord, DirectReport, Exported, FinetuneRecord, RunReport,
                                       SimulateReport, Simulation, SweepReport, TrainingRecord)
from snnconvert.report.report import convention_table


def loading_lines(loading: dict[str, Any]) -> list[str]:
    """What loading the weights did beyond a plain load (remapped names, layers started afresh)."""
    lines = []
    if loading.get("remapped"):
        names = loading["remapped"]
        lines.append(f"weights remapped by order: {len(names)} tensors renamed "
                     f"({'; '.join(names[:3])}{' …' if len(names) > 3 else ''}), shapes checked")
    if loading.get("reinitialized"):
        lines.append(f"started afresh (they do not fit the adapted model): {', '.join(loading['reinitialized'])}")
    return lines


def preparation_lines(record: dict[str, Any] | None) -> list[str]:
    """What prepare changed and the accuracy on the calibration images after each change."""
    if record is None:
        return []
    lines = [f"  {line}" for line in record["changes"]]
    if "calibration_images" in record:  # something was changed
        effects = ", ".join(f"{label} {acc:.2f}" for label, acc in record["accuracy_on_calibration_images"].items())
        lines.append(f"accuracy on {record['calibration_images']} calibration images (%): {effects}")
    return lines


def correction_line(mode: str, record: dict[str, Any]) -> str:
    """One line on an SNN correction: the mean |error| over the sites before and after it."""
    t = record["timesteps"]
    mean = {when: sum(abs(site[when][t]["mean"]) for site in record["sites"]) / max(1, len(record["sites"]))
            for when in ("errors_before", "errors_after")}
    return (f"{record['correction']['method']} correction ({mode}) for T={t} on {record['images']} images: mean "
            f"|error| of the {len(record['sites'])} layers {mean['errors_before']:.4g} → {mean['errors_after']:.4g} "
            f"(against the {record['reference']} reference; per layer in the report)")


def exit_lines(sim: Simulation, indent: str = "") -> list[str]:
    """The early exit a simulation ran with (its mean steps), and the route's notes."""
    lines = [f"{indent}early exit ({sim.exit_rule}): {sim.mean_steps:.2f} steps per image on average of "
             f"T={sim.timesteps}"] if sim.exit_rule else []
    return lines + [f"{indent}not applied: {note}" for note in sim.notes or ()]


def run_lines(report: RunReport, out: str) -> list[str]:
    """The summary of a whole run (``snnconvert MODEL``)."""
    lines = preparation_lines(report.preparation)
    lines += [correction_line(mode, r) for mode, r in (report.snn_calibration or {}).items()]
    lines.append(f"\n{report.model} ({report.timm_name}), weights: {report.weights}"
                 + (f", {report.route}" if report.route else ""))
    samples = next(iter(report.simulations.values())).samples
    lines.append(f"data: {report.data}, {samples} test images, L = {report.levels}, neuron: {report.neuron}")
    lines += [f"  {label:<24} {acc:6.2f} %" for label, acc in report.ann_accuracy.items()]
    for mode, sim in report.simulations.items():
        lines.append(f"  SNN {mode:<20} " + ", ".join(f"T={t}: {a:.2f}" for t, a in sim.accuracy_at.items()))
        if sim.agreement_at:
            lines.append(f"  agreement with the {sim.agreement_with} (%): "
                         + ", ".join(f"T={t}: {a:.2f}" for t, a in sim.agreement_at.items()))
        lines += exit_lines(sim, "  ")
    for mode, sim in report.simulations.items():
        lines.append(f"energy ({mode}, {sim.energy_accounting}, per image over T={sim.timesteps}): "
                     f"{sim.energy_uj_per_sample:.3f} µJ = {sim.sops_per_sample:.4g} SOPs + "
                     f"{sim.adds_per_sample:.4g} additions + {sim.macs_per_sample:.4g} MACs + "
                     f"{sim.float_ops_per_sample:.4g} float ops; ANN {report.ann_energy_uj_per_sample:.3f} µJ")
        lines += [f"  {line}" for line in _conventions(sim)]
    for mode, sim in report.simulations.items():
        kinds = ", ".join(sorted({op["kind"] for op in sim.float_operations})) or "none"
        lines.append(f"floating-point ops ({mode}): {len(sim.float_operations)} ({kinds})")
    return lines + [f"report: {Path(out) / 'report.md'}  ({report.seconds} s)"]


def simulation_lines(report: SimulateReport) -> list[str]:
    """The summary of ``snnconvert simulate``: accuracy at each reported t, exits, spikes, energy."""
    sim = next(iter(report.simulations.values()))
    lines = [f"resumed after {sim.resumed_from_batch} batches"] if sim.resumed_from_batch else []
    lines += [f"T={t:<5} accuracy {acc:6.2f} %" for t, acc in sim.accuracy_at.items()]
    lines += exit_lines(sim)
    lines.append(f"spikes per sample: {sim.spikes_per_sample:.0f} ({sim.samples} samples, {sim.seconds:.1f} s, "
                 f"{report.backend}); energy per sample: {sim.energy_uj_per_sample:.3f} µJ "
                 f"({sim.energy_accounting})")
    lines += _conventions(sim)
    return lines + (early_exit_table(sim.early_exit) if sim.early_exit else [])


def training_lines(record: TrainingRecord, verb: str, model: str, out: str) -> list[str]:
    """The end of a training run: where it resumed, the last epoch, where it went."""
    lines = []
    if isinstance(record, FinetuneRecord) and record.teacher_accuracy is not None:
        lines.append(f"teacher ({record.teacher}) {record.teacher_accuracy:.2f} %, student before "
                     f"fine-tuning {record.accuracy_before_training:.2f} %")
    if record.resumed_from:
        lines.append(f"resumed from epoch {record.resumed_from['epoch']}, batch {record.resumed_from['batch']}")
    lines.append(json.dumps(record.history[-1] if record.history else {}))
    return lines + [f"{verb} {model} for {record.config.epochs} epochs ({record.seconds} s of training, "
                    f"{record.processes} process(es)) → {out} (record: {Path(out).with_suffix('.json')})"]


def calibration_lines(record: CalibrationRecord, model: str, out: str, what: str, neuron: str) -> list[str]:
    """What ``snnconvert calibrate`` did: the preparation, the SNN's per-layer report, the file."""
    lines = preparation_lines(record.preparation)
    snn = record.snn
    if snn is not None and snn["error_at"]:
        lines += [f"{neuron}, compensated mode", *calibration_table(snn)]
    if record.converted:
        return lines + [f"calibrated ({what}), converted ({neuron}) and {snn['correction']['method']}-corrected for "
                        f"T={record.timesteps} → {out} (a converted checkpoint: `snnconvert simulate {model} "
                        f"--checkpoint {out}`)"]
    return lines + [f"calibrated {model} ({what}) → {out}"]


def sweep_lines(report: SweepReport, out: str) -> list[str]:
    """One line per variant of a mask sweep."""
    return [f"{row.target:<6} p={row.ratio:.2f} blocks={row.blocks!s:<4} "
            f"{'fine-tuned' if row.fine_tuned else 'as masked':<10} accuracy {row.accuracy:6.2f} % "
            f"({row.accuracy_change:+.2f})  power {row.power_ratio:.3f}  energy {row.energy_ratio:.3f}"
            for row in report.rows] + [f"report: {Path(out) / 'sweep.md'}"]


def direct_lines(report: DirectReport, model: str, out: str, describe: str) -> list[str]:
    """The training and the simulation of a directly trained model."""
    sim = report.simulations["direct"]
    lines = training_lines(report.training, "trained", model, str(Path(out) / "direct.pt"))
    lines.append(f"{describe}: " + ", ".join(f"T={t}: {a:.2f}" for t, a in sim.accuracy_at.items())
                 + f" % ({sim.samples} test images)")
    steps = report.dynamic_timesteps
    if steps:
        lines.append(f"time steps per layer (of {steps['max']}): T_avg = {steps['average']:.2f}; "
                     + ", ".join(f"{g} {s:.2f}" for g, s in steps["average_by_group"].items()))
    return lines + [f"spikes per image {sim.spikes_per_sample:.4g}, energy {sim.energy_uj_per_sample:.3f} µJ; "
                    f"report: {Path(out) / 'report.md'}"]


def exported_line(written: Exported, model: str) -> str:
    """What ``snnconvert export`` wrote."""
    return (f"exported the {written.what} of {model} → {written.out} (ONNX opset {written.opset}, {written.inputs} "
            f"inputs, {written.outputs} outputs, {written.bytes / 1e6:.2f} MB)")


def prepared_lines(report: PrepareReport, sites: int, model: str, levels: int, out: str) -> list[str]:
    """What ``snnconvert prepare`` changed and wrote."""
    return [f"  {line}" for line in report.lines()] + [
        f"prepared {model}: {sites} QCFS sites, L = {levels} → {out} (calibrate or train it next)"]


def converted_lines(ops: list[FloatOp], model: str, mode: str, neuron: str, out: str) -> list[str]:
    """What ``snnconvert convert`` wrote, and the operations that still run in floating point."""
    return [f"converted {model} ({mode}, {neuron}) → {out}", f"{len(ops)} operations run in floating point:"] + [
        f"  {op.name} ({op.kind}): {op.why}" for op in ops]


def comparison_lines(result: dict[str, Any], out: str) -> list[str]:
    """One line per report ``snnconvert compare`` put side by side."""
    return [f"{r['model']:<16} {r['method']:<10} T={r['timesteps']:<4} accuracy {r['accuracy']:6.2f} %  "
            f"spikes {r['spikes_per_sample']:.4g}  energy {r['energy_uj_per_sample']:.3f} µJ" for r in result["rows"]
            ] + [f"report: {Path(out) / 'comparison.md'}"]


def built_lines(record: dict[str, Any], name: str, checkpoint: Path) -> list[str]:
    """What ``snnconvert zoo build`` made."""
    return [json.dumps(record["history"][-1]), f"built {name} → {checkpoint} (record: "
            f"{checkpoint.with_suffix('.json')}); to ship it, copy both into snnconvert/model_zoo/checkpoints/"]


def recipe_lines(recipes: list[Recipe]) -> list[str]:
    """One line per recipe: name, architecture, input size, description, whether a checkpoint ships."""
    return [f"{r.name:<12} {r.timm_name:<32} {'×'.join(map(str, r.input_size)):<10} {r.description}"
            + ("  [checkpoint shipped]" if shipped_checkpoint(r) else "") for r in recipes]


def recipe_json(recipe: Recipe) -> str:
    """One recipe in full, with its fine-tune settings and the record of its shipped checkpoint."""
    path = shipped_checkpoint(recipe)
    record = path.with_suffix(".json") if path is not None else None
    return json.dumps({**recipe.to_dict(), "finetune_settings": recipe.finetune_settings,
                       "shipped_checkpoint": str(path or ""),
                       "shipped_record": json.loads(record.read_text()) if record and record.exists() else None},
                      indent=2)


def _conventions(sim: Simulation) -> list[str]:
    return convention_table(sim.energy_conventions) if sim.energy_conventions else []
