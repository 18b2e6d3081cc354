"""Energy ÷ ANN under every convention, accuracy and gap for the shipped models, each part of the
event-driven route on and off, for rate and count coding and for single and burst spikes.

    python benchmarks/energy.py [--models swin_nano,vit_nano,resnet_nano] [--timesteps 16]
                                [--limit 500] [--percentile 99.9] [--out runs/energy]
                                [--extra NAME=CHECKPOINT ...] [--extra-options "..."]

Each row is one run of the command line a user types (``snnconvert MODEL -T T --limit N --threads 1``
and the variant's options), read back from its ``report.json``. Variants: rate coding with IF
neurons (dense accounting: every value changes at every step); count coding with signed IF, k = 1,
under the dense accounting, then the event-driven route without and with its sites (spiking
attention probabilities and signed sites on the real-valued streams into weight layers, where the
model has them: ``--event-driven`` alone; no fine-tuning); and count coding with burst signed IF (k unbounded: a neuron sends its whole count
in one step, every spike of a burst one event), event-driven, without and with the route's sites.
The "sites" column says which the run added (p: probabilities, s: streams). The event-driven route
stops each image by the exact quiet exit: its mean steps are the time to the answer. ``--extra
NAME=CHECKPOINT`` adds a model of one's own (e.g. a MobileNetV2 trained with ``snnconvert train NAME
--ann``, or a prepared checkpoint fine-tuned with its stream sites), run with ``--extra-options``
(e.g. ``--no-finetune --input-size 1,32,32 --num-classes 10 --stream-levels 16``). Prints one
Markdown table. Every threshold a run calibrates (the new sites of a prepared checkpoint, every
site of an ANN) is set at the ``--percentile`` of 256 training images.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RATE, COUNT, BURST = (["--coding", "rate", "--neuron", "if"], ["--coding", "count", "--neuron", "signed-if"],
                      ["--coding", "count", "--neuron", "signed-burst-if"])
WITHOUT_SITES = ["--event-driven", "--no-spike-probabilities", "--no-spike-streams"]
VARIANTS = {
    "rate, IF, dense accounting": RATE,
    "count, signed IF, dense accounting": COUNT + ["--dense-energy"],
    "count, signed IF, event-driven": COUNT + WITHOUT_SITES,
    "count, signed IF, event-driven + the route's sites": COUNT + ["--event-driven"],
    "count, burst signed IF, event-driven": BURST + WITHOUT_SITES,
    "count, burst signed IF, event-driven + the route's sites": BURST + ["--event-driven"],
}
#: the route's sites by the words of the preparation record, as the "sites" column abbreviates them
SITES = {"p": "QCFS on attention probabilities", "s": "QCFS on real-valued streams"}


def run(model: str, timesteps: int, limit: int, options: list[str], out: Path) -> dict:
    command = [sys.executable, "-m", "snnconvert", model, "-T", str(timesteps), "--limit", str(limit),
               "--threads", "1", "--quiet", "--out", str(out), *options]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads((out / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="swin_nano,vit_nano,resnet_nano")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="a model of one's own: its name and ANN checkpoint")
    parser.add_argument("--extra-options", default="", help="options for the --extra models' runs")
    parser.add_argument("--timesteps", type=int, default=16)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--percentile", type=float, default=99.9)
    parser.add_argument("--out", default="runs/energy")
    args = parser.parse_args()
    print(f"T = {args.timesteps}, first {args.limit} test images; energy ÷ the ANN's under the same convention\n")
    print("| model | variant | QCFS ANN (%) | SNN (%) | gap (points) | every op (µJ) | every op | papers' | memory "
          "| every op + memory | vs quantized twin | spikes / synapse | mean steps | sites | agreement (%) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    models = [(model, model, []) for model in args.models.split(",") if model]
    models += [(name, f"{name} ({Path(checkpoint).stem})", ["--checkpoint", checkpoint, *args.extra_options.split()])
               for name, _, checkpoint in (extra.partition("=") for extra in args.extra)]
    for model, label, model_options in models:
        for name, options in VARIANTS.items():
            out = Path(args.out) / label.replace(" (", "-").rstrip(")") / name.replace(", ", "_").replace(" ", "_").replace("+", "and")
            try:
                report = run(model, args.timesteps, args.limit,
                             model_options + options + ["--percentile", str(args.percentile)], out)
            except RuntimeError as e:  # an option that does not apply to the model says why
                print(f"| {label} | {name} | {e} |" + " |" * 12, flush=True)
                continue
            sim = next(iter(report["simulations"].values()))
            ann, snn = report["ann_accuracy"]["QCFS ANN"], sim["accuracy_per_step"][-1]
            conv = sim["energy_conventions"]
            ratios = " | ".join(f"{conv[k]['ratio']:.3f}" for k in ("every_op", "papers", "memory", "total",
                                                                     "quantized_twin"))
            changes = " ".join((report.get("preparation") or {}).get("changes", []))
            sites = "".join(k for k, words in SITES.items() if f"changes {words}" in changes) or "–"
            agreement = f"{sim['agreement_per_step'][-1]:.2f} with the {sim['agreement_with']}" \
                if sim.get("agreement_per_step") else "–"
            print(f"| {label} | {name} | {ann:.2f} | {snn:.2f} | {ann - snn:+.2f} | {conv['every_op']['snn_uj']:.2f} | "
                  f"{ratios} | {conv['spikes_per_synapse']:.2f} | {sim['mean_steps']:.2f} | {sites} | {agreement} |", flush=True)


if __name__ == "__main__":
    main()
