"""The per-layer calibration table: thresholds, caps, corrections and conversion errors."""
from __future__ import annotations

from typing import Any


def _values(values: list[float] | None) -> str:
    """One value, or ``min … max (mean m)`` over channels."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    low, mean, high = values
    return f"{low:.3g} … {high:.3g} (mean {mean:.3g})"


def _error(errors: dict, t: int) -> str:
    found = errors.get(t, errors.get(str(t))) if errors else None
    return "—" if found is None else f"{found['mean']:+.3g} / {found['rms']:.3f}"


def calibration_table(record: dict[str, Any]) -> list[str]:
    """Markdown lines for a record of :func:`snnconvert.workflow.calibrate_snn`: per site λ, cap,
    correction μ and the error ``ŷ_t − y`` (mean / RMS relative to y's) at each step asked for,
    before → after the correction."""
    correction = record.get("correction")
    what = (f"{correction['method']} correction for T = {record['timesteps']} "
            f"({correction['iterations']} pass{'es' if correction['iterations'] > 1 else ''} per site)"
            if correction else "no correction")
    lines = [f"Per-layer calibration: {what}; errors against the {record['reference']} reference on "
             f"{record['images']} calibration images, as mean / relative RMS of ŷ_t − y.", ""]
    steps = record["error_at"]
    head = "| site | role | λ | cap | correction μ |" + "".join(f" error at t={t} |" for t in steps)
    lines += [head, "|" + "---|" * (5 + len(steps))]
    for site in record["sites"]:
        cells = [site["name"], site["role"], _values(site["threshold"]),
                 "—" if site["cap"] is None else f"{site['cap']:g}", _values(site["correction"])]
        for t in steps:
            before, after = _error(site["errors_before"], t), _error(site["errors_after"], t)
            cells.append(before if not site["errors_after"] else f"{before} → {after}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines
