"""Reports of a masking sweep: JSON, a Markdown table and a PNG of accuracy against energy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from snnconvert.report.output import saved_figure, write_files


def _markdown(report: dict[str, Any]) -> str:
    t = report["timesteps"]
    lines = [f"# snnconvert mask sweep: {report['model']}", "",
             f"- weights: {report['weights']}", f"- data: {report['data']}, {report['samples']} test images, "
             f"T = {t}, neuron: {report['neuron']}",
             "- power: MST's model, total spikes per time (relative to the unmasked SNN); energy: "
             f"E_AC = {report['energy_costs_pj']['ac_pj']} pJ per SOP, E_MAC = {report['energy_costs_pj']['mac_pj']} pJ "
             "per MAC and floating-point op (relative to the unmasked SNN)"]
    if report.get("finetune"):
        ft = report["finetune"]
        lines.append(f"- fine-tuned: each masked model for {ft['epochs']} epochs (lr {ft['lr']:g}), distilled from the "
                     f"unmasked model (α {ft['distill_alpha']:g}, τ {ft['temperature']:g})")
    lines += ["", f"| target | ratio | blocks | fine-tuned | QCFS ANN | SNN at T={t} | change | spikes / image | power "
              "| energy / image (µJ) | energy |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['target']} | {row['ratio']:.2f} | {row['blocks']} | {'yes' if row['fine_tuned'] else 'no'} "
                     f"| {row['qcfs_accuracy']:.2f} | {row['accuracy']:.2f} | {row['accuracy_change']:+.2f} | "
                     f"{row['spikes_per_sample']:.4g} | {row['power_ratio']:.3f} | {row['energy_uj_per_sample']:.3f} | "
                     f"{row['energy_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    series: dict[str, list[dict]] = {}
    for row in report["rows"]:
        label = f"{row['target']} ({row['sweep']}{', fine-tuned' if row['fine_tuned'] else ''})"
        series.setdefault(label, []).append(row)
    with saved_figure(path, f"{report['model']}: random spike masking",
                      "power relative to the unmasked SNN (total spikes)",
                      f"accuracy at T={report['timesteps']} (%)") as ax:
        for label, rows in series.items():
            ax.plot([r["power_ratio"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=label)


def write_sweep_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``out_dir``."""
    return write_files(report, out_dir, ("sweep.json", "sweep.md", "sweep.png"), _markdown, _plot)
