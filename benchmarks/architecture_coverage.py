"""Which architectures convert, and how exactly: the coverage table of the graph converter.

For every architecture of ``snnconvert.model_zoo.coverage`` (20 timm, 5 torchvision, tiny widths,
random weights, 32 images replicated from the embedded Fashion-MNIST sample): prepare with L = 4,
calibrate, convert with signed burst neurons and check that at t = L the SNN is its QCFS ANN —
in float64 (max |difference| relative to the output's scale) and in float32 (output elements off
by more than 1e-4 of the scale, and predictions that differ: what quantization-boundary flips
leave); then simulate the IF SNN for 4 steps with every op accounted for. Prints a Markdown table.

    python benchmarks/architecture_coverage.py [--only NAME ...]
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from snnconvert.calibrate import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds
from snnconvert.convert import convert, float_operations
from snnconvert.prepare import PrepareConfig, prepare_with_report
from snnconvert.data import InputSpec, load_dataset, make_loader
from snnconvert.model_zoo.coverage import ARCHITECTURES
from snnconvert.runtime import reset_states, simulate
from snnconvert.runtime.energy import OpAccounting

LEVELS = 4


def _at_levels(model, x):
    snn = convert(model, neuron="signed-burst-if")
    with torch.no_grad():
        target = model(x)
        reset_states(snn)
        total = sum(snn(x) for _ in range(LEVELS))
    return total / LEVELS, target


def check(arch) -> dict:
    spec = InputSpec(arch.input_size, (0.3,) * 3, (0.35,) * 3)
    x, y = next(iter(make_loader(load_dataset("embedded", "test", spec), 32)))
    row = {"architecture": arch.name}
    start = time.perf_counter()
    try:
        torch.manual_seed(0)
        model = arch.build().eval()
        row["parameters"] = sum(p.numel() for p in model.parameters())
        prepared, report = prepare_with_report(model, x[:2], PrepareConfig(levels=LEVELS))
        row["prepare"] = "yes"
        calibrate_batchnorm(prepared, [(x, None)], len(x), only=report.new_batchnorms())
        calibrate_thresholds(prepared, [(x, None)], CalibrationConfig("percentile", 99.9, "layer", len(x)))
        prepared.eval()
        row["changes"] = ", ".join(c.what for c in report.function_changes)
        out64, target64 = _at_levels(prepared.double(), x.double())
        scale = max(1.0, target64.abs().max().item())
        row["exact_float64"] = (out64 - target64).abs().max().item() / scale
        out32, target32 = _at_levels(prepared.float(), x)
        row["float32_off"] = int(((out32 - target32).abs() > 1e-4 * scale).sum())
        row["float32_predictions_differ"] = int((out32.argmax(-1) != target32.argmax(-1)).sum())
        snn = convert(prepared)
        row["convert"] = "yes"
        ops = float_operations(snn)
        row["float_ops"] = ", ".join(f"{k} ×{n}" for k, n in Counter(op.kind for op in ops).items()) or "none"
        result = simulate(snn, x, y, timesteps=4)
        row["simulate"] = "yes"
        row["unaccounted_ops"] = len(OpAccounting(snn).unaccounted)
        row["energy_uj"] = result.energy_per_sample_pj() / 1e6
    except Exception as e:  # noqa: BLE001 - the table says what failed
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="architecture names")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [check(a) for a in ARCHITECTURES if not args.only or a.name in args.only]
    print("| architecture | params | prepare | convert | simulate | exact at t=L, float64 (rel.) | float32: outputs off "
          "/ predictions differ | float ops after conversion | function changes | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['architecture']} | {r.get('parameters', '')} | {r.get('prepare', 'no')} | "
                  f"{r.get('convert', 'no')} | {r.get('simulate', 'no')} | {r['error']} | | | | {r['seconds']} |")
            continue
        print(f"| {r['architecture']} | {r['parameters']:,} | yes | yes | yes | {r['exact_float64']:.1e} | "
              f"{r['float32_off']} / {r['float32_predictions_differ']} | {r['float_ops']} | {r['changes']} | "
              f"{r['seconds']} |")
    ok = sum("error" not in r and r["exact_float64"] <= 1e-9 and r["unaccounted_ops"] == 0 for r in rows)
    print(f"\n{ok} of {len(rows)} prepare, convert, simulate with every op accounted for, and are exact at t = L "
          "in float64 (≤ 1e-9)")


if __name__ == "__main__":
    main()
