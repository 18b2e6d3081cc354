"""Side-by-side comparison of simulation reports (converted and directly trained SNNs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from snnconvert.errors import SnnConvertError, first_line
from snnconvert.report.output import saved_figure, write_files


def _training_seconds(report: dict[str, Any]) -> float | None:
    """Training time on record: the report's own training, else the JSON record beside its weights."""
    if report.get("training"):
        return report["training"].get("seconds")
    record = Path(str(report.get("weights", ""))).with_suffix(".json")
    if record.is_file():
        return json.loads(record.read_text()).get("seconds")
    return None


def comparison(paths: list[str | Path]) -> dict[str, Any]:
    """One row per simulation of every report (``report.json`` of ``run``, ``simulate --out`` or
    ``direct-train``); refuses reports measured on different test sets."""
    reports = []
    for path in paths:
        path = Path(path)
        file = path / "report.json" if path.is_dir() else path
        if not file.is_file():
            raise SnnConvertError(f"no report at {path}: pass a report.json (or its folder) written by "
                                  "`snnconvert MODEL`, `simulate --out` or `direct-train`")
        try:
            report = json.loads(file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SnnConvertError(f"{file} is not a JSON report ({first_line(e, 80)}): pass a report.json written by "
                                  "`snnconvert MODEL`, `simulate --out` or `direct-train`") from e
        if not (isinstance(report, dict) and isinstance(report.get("simulations"), dict) and report["simulations"]
                and all(k in report for k in ("model", "data"))):
            raise SnnConvertError(f"{file} is not an snnconvert report (it has no model, data and simulations): pass "
                                  "a report.json written by `snnconvert MODEL`, `simulate --out` or `direct-train`")
        reports.append((file, report))
    rows = []
    for file, report in reports:
        for mode, sim in report["simulations"].items():
            method = report.get("method", "conversion")
            rows.append({
                "report": str(file), "model": report["model"], "method": method,
                "setting": _describe_direct(report["direct"]) if method == "direct"
                else f"{report.get('neuron', 'if')} neuron, {mode}",
                "data": report["data"], "samples": sim["samples"], "timesteps": sim["timesteps"],
                "accuracy": sim["accuracy_per_step"][-1], "accuracy_per_step": sim["accuracy_per_step"],
                "spikes_per_sample": sim["spikes_per_sample"], "sops_per_sample": sim["sops_per_sample"],
                "macs_per_sample": sim["macs_per_sample"], "float_ops_per_sample": sim.get("float_ops_per_sample", 0.0),
                "adds_per_sample": sim.get("adds_per_sample", 0.0),
                "energy_uj_per_sample": sim["energy_uj_per_sample"], "training_seconds": _training_seconds(report),
                "simulation_seconds": sim["seconds"]})
    test_sets = {(r["data"], r["samples"]) for r in rows}
    if len(test_sets) > 1:
        raise SnnConvertError(f"the reports were measured on different test sets {sorted(test_sets)}: simulate "
                              "them on the same --data and --limit")
    return {"rows": rows}


def _describe_direct(direct: dict[str, Any]) -> str:
    return f"{direct['neuron']}, {direct['surrogate']}, {direct['encoding']} encoding"


def _markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    lines = ["# snnconvert comparison", "", f"Test set: {rows[0]['data']}, {rows[0]['samples']} images.", "",
             "| model | method | setting | T | accuracy (%) | spikes / image | SOPs / image | MACs / image | "
             "float ops / image | additions / image | energy / image (µJ) | training (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        train = f"{r['training_seconds']:.0f}" if r["training_seconds"] is not None else "not on record"
        lines.append(f"| {r['model']} | {r['method']} | {r['setting']} | {r['timesteps']} | {r['accuracy']:.2f} | "
                     f"{r['spikes_per_sample']:.4g} | {r['sops_per_sample']:.4g} | {r['macs_per_sample']:.4g} | "
                     f"{r['float_ops_per_sample']:.4g} | {r['adds_per_sample']:.4g} | {r['energy_uj_per_sample']:.3f} | "
                     f"{train} |")
    lines += ["", "Training time is what the run recorded (the fine-tuning only, for a converted model fine-tuned "
              "from a trained ANN)."]
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    with saved_figure(path, "accuracy vs time steps", "time step t", "accuracy (%)") as ax:
        for r in report["rows"]:
            acc = r["accuracy_per_step"]
            ax.plot(range(1, len(acc) + 1), acc, marker="o" if len(acc) <= 8 else None,
                    label=f"{r['model']} ({r['method']})")
        ax.set_xscale("log", base=2)


def write_comparison(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``comparison.json``, ``comparison.md`` and ``comparison.png`` into ``out_dir``."""
    return write_files(report, out_dir, ("comparison.json", "comparison.md", "comparison.png"), _markdown, _plot)
