"""Reports of a conversion run: JSON (everything), Markdown (for people) and a PNG of accuracy vs t."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from snnconvert.report.calibration import calibration_table
from snnconvert.report.output import saved_figure, write_files
from snnconvert.report.records import Simulation
from snnconvert.runtime.energy import FIELDS, EnergyCosts
from snnconvert.runtime.simulator import SimulationResult


OP_FIELDS = FIELDS


def checkpoints_of(timesteps: int) -> list[int]:
    """The steps shown in tables: powers of two up to T, and T itself."""
    ts, t = [], 1
    while t < timesteps:
        if t >= 4:
            ts.append(t)
        t *= 2
    return ts + [timesteps]


def _or_na(value: float | None, spec: str) -> str:
    """A metric that was not recorded (basic metrics) reads ``n/a``."""
    return "n/a" if value is None else format(value, spec)


def simulation_summary(result: SimulationResult, ann_accuracy: float | None,
                       costs: EnergyCosts = EnergyCosts(), reference: str | None = None) -> Simulation:
    """The record of one simulation, with the gap to the ANN at each step, the agreement with the
    ``reference`` ANN's predictions (when simulated with one) and the energy."""
    acc, agreement = result.accuracy, result.agreement
    steps = checkpoints_of(result.timesteps)
    return Simulation(
        timesteps=result.timesteps,
        samples=result.samples,
        seconds=round(result.seconds, 3),
        accuracy_per_step=[round(a, 4) for a in acc],
        accuracy_at={str(t): acc[t - 1] for t in steps},
        gap_to_ann_at=({str(t): round(ann_accuracy - acc[t - 1], 4) for t in steps}
                       if ann_accuracy is not None else None),
        agreement_with=reference if agreement is not None else None,
        agreement_per_step=[round(a, 4) for a in agreement] if agreement is not None else None,
        agreement_at={str(t): agreement[t - 1] for t in steps} if agreement is not None else None,
        resumed_from_batch=result.resumed_from_batch,
        exit_rule=result.exit_rule.describe() if result.exit_rule is not None else None,
        mean_steps=result.mean_steps,
        spikes_per_sample=result.spikes_per_sample,
        spike_rate=sum(lay.spikes for lay in result.layers) / max(1, sum(lay.neuron_steps for lay in result.layers)),
        layers=[{"name": layer.name, "spikes_per_sample": layer.spikes / max(1, result.samples),
                 "firing_rate": layer.rate, "spike_percent": layer.spike_percent,
                 "negative_potential_percent": layer.negative_percent,
                 "mean_residual_potential": layer.mean_residual} for layer in result.layers],
        **{f"{field}_per_sample": sum(getattr(o, field) for o in result.ops) / max(1, result.samples)
           for field in OP_FIELDS},
        energy_uj_per_sample=result.energy_per_sample_pj(costs) / 1e6,
        energy_accounting="event-driven" if result.event_driven else "dense",
        ops=[{"name": o.name, "kind": o.kind,
              **{f"{field}_per_sample": getattr(o, field) / max(1, result.samples) for field in OP_FIELDS}}
             for o in result.ops],
    )


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# snnconvert report: {report['model']}", ""]
    lines += [f"- {k}: {report[k]}" for k in ("timm_name", "weights", "data", "route", "levels", "timesteps", "neuron",
                                                "masks") if report.get(k) is not None]
    if report.get("training"):
        training = report["training"]
        resumed = training.get("resumed_from")
        lines.append(f"- training: {training['config']['epochs']} epochs, {training['seconds']} s"
                     + (f" (resumed from epoch {resumed['epoch']}, batch {resumed['batch']})" if resumed else "")
                     + (f", distilled from the {training.get('teacher') or 'original ANN'}" if training.get("distilled") else "")
                     + f", history {training['history']}")
    lines.append("")
    lines += _preparation(report.get("preparation"))
    lines += _dynamic_timesteps(report.get("dynamic_timesteps"))
    for mode, record in (report.get("snn_calibration") or {}).items():
        lines += [f"## SNN calibration ({mode})", ""] + calibration_table(record) + [""]
    anns = report["ann_accuracy"]
    lines += ["## Accuracy (%)", ""]
    for label, value in anns.items():
        lines.append(f"- {label}: {value:.2f}")
    modes = report["simulations"]
    if modes:
        steps = list(next(iter(modes.values()))["accuracy_at"])
        lines += ["", "| mode | " + " | ".join(f"T={t}" for t in steps) + " |",
                  "|---|" + "---|" * len(steps)]
        for mode, sim in modes.items():
            lines.append(f"| {mode} | " + " | ".join(f"{sim['accuracy_at'][t]:.2f}" for t in steps) + " |")
            if sim["gap_to_ann_at"] is not None:
                lines.append(f"| gap to QCFS ANN ({mode}) | "
                             + " | ".join(f"{sim['gap_to_ann_at'][t]:+.2f}" for t in steps) + " |")
            if sim.get("agreement_at"):
                lines.append(f"| agreement with the {sim['agreement_with']} ({mode}) | "
                             + " | ".join(f"{sim['agreement_at'][t]:.2f}" for t in steps) + " |")
        for mode, sim in modes.items():
            resumed = sim.get("resumed_from_batch")
            lines += ["", f"## Spikes per layer ({mode}, {sim['samples']} samples, T={sim['timesteps']}, "
                          f"{sim['seconds']:.1f} s" + (f"; resumed after {resumed} batches" if resumed else "") + ")",
                      "",
                      f"Total spikes per sample: {sim['spikes_per_sample']:.0f}; MST's power model "
                      f"(P = spikes / time × α, α the energy per spike): "
                      f"{sim['spikes_per_sample'] / sim['timesteps']:.4g} spikes per sample per time step · α", "",
                      "| layer | spikes / sample | firing rate | spike % | negative-potential % | residual (θ) |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {lay['name']} | {lay['spikes_per_sample']:.0f} | {lay['firing_rate']:.4f} | "
                      f"{_or_na(lay['spike_percent'], '.2f')} | {_or_na(lay['negative_potential_percent'], '.2f')} | "
                      f"{_or_na(lay['mean_residual_potential'], '.3f')} |" for lay in sim["layers"]]
            energy = f"{sim['energy_uj_per_sample']:.3f} µJ ({sim.get('energy_accounting', 'dense')} accounting)"
            if report.get("ann_energy_uj_per_sample"):
                energy += f" ({sim['energy_uj_per_sample'] / report['ann_energy_uj_per_sample']:.3f} × the ANN's " \
                          f"{report['ann_energy_uj_per_sample']:.3f} µJ)"
            costs = report.get("energy_costs_pj") or {"ac_pj": 0.9, "mac_pj": 4.6}
            lines += ["", f"Energy per sample: {energy} = {sim['sops_per_sample']:.4g} SOPs (spike-driven accumulates, "
                          f"{costs['ac_pj']} pJ) + {sim.get('adds_per_sample', 0):.4g} additions of real values "
                          f"({costs['ac_pj']} pJ) + {sim['macs_per_sample']:.4g} MACs (real-valued operands) + "
                          f"{sim['float_ops_per_sample']:.4g} floating-point ops (softmax, norms, compensated products' "
                          f"outputs, …; {costs['mac_pj']} pJ each)", "",
                      "| op | kind | SOPs / sample | MACs / sample | float ops / sample | additions / sample |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {op['name']} | {op['kind']} | {op['sops_per_sample']:.4g} | {op['macs_per_sample']:.4g} | "
                      f"{op['float_ops_per_sample']:.4g} | {op.get('adds_per_sample', 0):.4g} |" for op in sim["ops"]]
            if sim.get("energy_conventions"):
                lines += ["", "Energy under each convention, beside the ANN's under the same one "
                              "(snnconvert.runtime.energy.conventions):", "", *convention_table(sim["energy_conventions"])]
            lines += ["", f"Operations that run in floating point ({mode}):", ""]
            lines += [f"- {op['name']} ({op['kind']}): {op['why']}" for op in sim["float_operations"]] or ["- none"]
    return "\n".join(lines) + "\n"


_CONVENTION_NAMES = {
    "every_op": "every op (ours)", "papers": "papers' (E_AC × SOPs + E_MAC × encoding MACs)",
    "memory": "memory (a 32-bit access per weight read and per potential read or write)",
    "total": "every op + memory", "quantized_twin": "every op, against the QCFS ANN run quantized",
}


def convention_table(conventions: dict[str, Any]) -> list[str]:
    """A Markdown table of :func:`~snnconvert.runtime.energy.conventions.energy_conventions`, and the
    spikes per synapse."""
    lines = ["| convention | SNN (µJ) | ANN (µJ) | SNN ÷ ANN |", "|---|---|---|---|"]
    for key, name in _CONVENTION_NAMES.items():
        row = conventions.get(key)
        if row is not None:
            bits = conventions.get("quantized_twin_activation_bits")
            name = f"{name} ({bits}-bit activations)" if key == "quantized_twin" else name
            lines.append(f"| {name} | {row['snn_uj']:.3f} | {row['ann_uj']:.3f} | {_or_na(row['ratio'], '.3f')} |")
    spikes = conventions.get("spikes_per_synapse")
    lines += ["", f"Spikes per synapse per inference: {_or_na(spikes, '.3f')} (IF SNNs compete with efficient ANN "
                  "hardware between 0.15 and 1.38: Dampfhoffer et al., IEEE TETCI 2023)"]
    return lines


def _dynamic_timesteps(steps: dict[str, Any] | None) -> list[str]:
    """The time steps each layer learned (DTSS), and the steps it is computed for."""
    if not steps:
        return []
    loss = "+".join(steps["mask_loss"]) or "none"
    groups = ", ".join(f"{g} {v:.2f}" for g, v in steps["average_by_group"].items())
    return ["## Dynamic time steps", "",
            f"T_max = {steps['max']}, T_init = {steps['initial']}, mask loss {loss} (λ_m = {steps['lambda_m']:g}); "
            f"T_avg = Σ_l T_l / L = {steps['average']:.3f} ({groups})", "",
            "| layer | group | time steps T_l | steps computed |", "|---|---|---|---|",
            *(f"| {lay['name']} | {lay['group']} | {lay['steps']} | {lay['computed']} |" for lay in steps["layers"]),
            ""]


def _preparation(prepared: dict[str, Any] | None) -> list[str]:
    """What ``prepare`` changed, and the accuracy after each change on the calibration images."""
    if not prepared:
        return []
    lines = ["## Preparation", ""] + [f"- {line}" for line in prepared["changes"]]
    if "calibration" not in prepared:  # nothing was changed, so nothing was calibrated
        return lines + [""]
    calibration = prepared["calibration"]
    lines[2:2] = [f"Calibration: {calibration['num_samples']} training images, "
                  f"{calibration['method']} ({calibration['granularity']}-wise) thresholds.", ""]
    lines += ["", f"Accuracy on the {prepared['calibration_images']} calibration images as the changes are applied "
              "(after calibration, before training):", "", "| step | accuracy (%) |", "|---|---|"]
    lines += [f"| {label} | {acc:.2f} |" for label, acc in prepared["accuracy_on_calibration_images"].items()]
    return lines + [""]


def _plot(report: dict[str, Any], path: Path) -> None:
    with saved_figure(path, f"{report['model']}: accuracy vs time steps", "time step t", "accuracy (%)") as ax:
        for mode, sim in report["simulations"].items():
            acc = sim["accuracy_per_step"]
            ax.plot(range(1, len(acc) + 1), acc, label=f"SNN ({mode})")
        for label, value in report["ann_accuracy"].items():
            ax.axhline(value, linestyle="--" if label == "QCFS ANN" else ":", linewidth=1, label=label)
        ax.set_xscale("log", base=2)


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``accuracy_vs_t.png`` into ``out_dir``."""
    return write_files(report, out_dir, ("report.json", "report.md", "accuracy_vs_t.png"), _markdown,
                       _plot if report["simulations"] else None)
