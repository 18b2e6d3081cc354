"""Energy ÷ ANN under every convention, accuracy and gap for the shipped transformers, each part
of the event-driven route on and off.

    python benchmarks/energy.py [--models swin_nano,vit_nano] [--timesteps 16] [--limit 500]
                                [--percentile 99.9] [--out runs/energy]

Each row is one run of the command line a user types (``snnconvert MODEL -T T --neuron signed-if
--coding count --limit N --threads 1`` and the variant's options; count coding, signed IF, k = 1),
read back from its ``report.json``. Variants: the dense accounting, the event-driven one, and the
event-driven one with spiking attention probabilities (``--spike-probabilities``, calibrated at
``--percentile`` on 256 training images, no fine-tuning). Prints one Markdown table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "dense accounting": ["--dense-energy"],
    "event-driven": ["--event-driven"],
    "event-driven + spiking probabilities": ["--event-driven", "--spike-probabilities"],
}


def run(model: str, timesteps: int, limit: int, options: list[str], out: Path) -> dict:
    command = [sys.executable, "-m", "snnconvert", model, "-T", str(timesteps), "--neuron", "signed-if",
               "--coding", "count", "--limit", str(limit), "--threads", "1", "--quiet", "--out", str(out), *options]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads((out / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="swin_nano,vit_nano")
    parser.add_argument("--timesteps", type=int, default=16)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--percentile", type=float, default=99.9)
    parser.add_argument("--out", default="runs/energy")
    args = parser.parse_args()
    print(f"T = {args.timesteps}, first {args.limit} test images, count coding, signed IF (k = 1); energy ÷ the "
          "ANN's under the same convention\n")
    print("| model | variant | QCFS ANN (%) | SNN (%) | gap (points) | every op (µJ) | every op | papers' | memory "
          "| every op + memory | vs quantized twin | spikes / synapse |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for name, options in VARIANTS.items():
            extra = ["--percentile", str(args.percentile)] if "--spike-probabilities" in options else []
            out = Path(args.out) / model / name.replace(" ", "_").replace("+", "and")
            report = run(model, args.timesteps, args.limit, options + extra, out)
            sim = next(iter(report["simulations"].values()))
            ann, snn = report["ann_accuracy"]["QCFS ANN"], sim["accuracy_per_step"][-1]
            conv = sim["energy_conventions"]
            ratios = " | ".join(f"{conv[k]['ratio']:.3f}" for k in ("every_op", "papers", "memory", "total",
                                                                     "quantized_twin"))
            print(f"| {model} | {name} | {ann:.2f} | {snn:.2f} | {ann - snn:+.2f} | {conv['every_op']['snn_uj']:.2f} | "
                  f"{ratios} | {conv['spikes_per_synapse']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
