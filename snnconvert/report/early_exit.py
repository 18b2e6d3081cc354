"""Reports of early exit: each rule's accuracy against mean steps, beside the fixed-T curve (JSON,
Markdown, PNG)."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from snnconvert.report.output import saved_figure, write_files
from snnconvert.report.records import Header, SimulateReport
from snnconvert.runtime.early_exit import ExitPoint


def exit_rows(points: list[ExitPoint], accuracy_per_step: list[float]) -> list[dict[str, Any]]:
    """Per rule: accuracy, mean steps, steps saved against T, and against the smallest fixed T
    whose accuracy is at least as high (None when no T reaches it)."""
    timesteps = len(accuracy_per_step)
    rows = []
    for point in points:
        fixed = next((t for t, acc in enumerate(accuracy_per_step, 1) if acc >= point.accuracy), None)
        rows.append({"rule": point.rule.kind, "value": point.rule.value, "describe": point.rule.describe(),
                     "accuracy": point.accuracy, "mean_steps": point.mean_steps,
                     "change_from_t_max": round(point.accuracy - accuracy_per_step[-1], 9) + 0.0,
                     "fewer_steps_than_t_max": timesteps / point.mean_steps,
                     "smallest_fixed_t_as_accurate": fixed,
                     "fewer_steps_than_that_t": fixed / point.mean_steps if fixed is not None else None})
    return rows


def early_exit_report(report: SimulateReport) -> dict[str, Any]:
    """The early-exit report of a simulation report whose one simulation evaluated exit rules
    offline: its header, samples, accuracy per step and the rules' rows."""
    sim = next(iter(report.simulations.values()))
    return {**{f.name: getattr(report, f.name) for f in fields(Header)}, "samples": sim.samples,
            "accuracy_per_step": sim.accuracy_per_step, "rows": sim.early_exit}


def early_exit_table(rows: list[dict[str, Any]]) -> list[str]:
    """The rules' table (:func:`exit_rows`), as Markdown lines."""
    lines = ["| rule | accuracy (%) | change from T_max (points) | mean steps | T_max ÷ mean steps "
             "| smallest fixed T as accurate | that T ÷ mean steps |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        fixed = row["smallest_fixed_t_as_accurate"]
        than_fixed = "> T_max | –" if fixed is None else f"{fixed} | {row['fewer_steps_than_that_t']:.2f}"
        lines.append(f"| {row['describe']} | {row['accuracy']:.2f} | {row['change_from_t_max']:+.2f} | "
                     f"{row['mean_steps']:.2f} | {row['fewer_steps_than_t_max']:.2f} | {than_fixed} |")
    return lines


def _markdown(report: dict[str, Any]) -> str:
    t = report["timesteps"]
    lines = [f"# snnconvert early exit: {report['model']}", "", f"- weights: {report['weights']}",
             f"- data: {report['data']}, {report['samples']} test images, T_max = {t}, neuron: {report['neuron']}",
             f"- accuracy at T_max: {report['accuracy_per_step'][-1]:.2f} %; one pass gives every rule's exits", ""]
    return "\n".join(lines + early_exit_table(report["rows"])) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    with saved_figure(path, f"{report['model']}: early exit", "mean time steps per image", "accuracy (%)") as ax:
        accuracy = report["accuracy_per_step"]
        ax.plot(range(1, len(accuracy) + 1), accuracy, label="fixed T", color="gray")
        for kind in dict.fromkeys(row["rule"] for row in report["rows"]):
            rows = sorted((r for r in report["rows"] if r["rule"] == kind), key=lambda r: r["mean_steps"])
            ax.plot([r["mean_steps"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=f"exit: {kind}")
        ax.set_xscale("log", base=2)


def write_early_exit_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``early_exit.json``, ``early_exit.md`` and ``early_exit.png`` into ``out_dir``."""
    return write_files(report, out_dir, ("early_exit.json", "early_exit.md", "early_exit.png"), _markdown, _plot)
