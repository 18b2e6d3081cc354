"""Neuron × surrogate × encoding variants of a directly trained spiking model on a short budget,
one factor changed at a time from a baseline (the direct-training survey's protocol; its baseline
is PLIF τ = 2.5, arctan surrogate, Poisson encoding).

Run: python benchmarks/direct_variants.py [--model spiking_vit_nano] [--train-samples 10000]
     [--epochs 1] [--limit 2000] [--out runs/direct_variants]

Each variant is `snnconvert direct-train` (same recipe, seed and data; its own folder under --out,
so an interrupted run resumes) and is simulated on the same first --limit test images. Prints a
Markdown table: accuracy at T, spikes and spike percent per image, energy, training time.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from snnconvert import workflow
from snnconvert.spec import DataSpec, DirectSpec
from snnconvert.direct import ENCODERS, NODES, SURROGATES
from snnconvert.model_zoo import direct_config, get_recipe
from snnconvert.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="spiking_vit_nano")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--train-samples", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=2000, help="test images")
    parser.add_argument("--timesteps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/direct_variants")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = get_recipe(args.model)
    base = direct_config(recipe, timesteps=args.timesteps)
    train = TrainConfig(**{**recipe.direct.get("train", {}), "epochs": args.epochs,
                           "train_samples": args.train_samples})
    variants = [("baseline", base)]
    variants += [(f"neuron {n}", replace(base, neuron=n)) for n in NODES if n != base.neuron]
    variants += [(f"surrogate {s}", replace(base, surrogate=s)) for s in SURROGATES if s != base.surrogate]
    variants += [(f"encoding {e}", replace(base, encoding=e)) for e in ENCODERS if e != base.encoding]
    rows = []
    for label, config in variants:
        folder = Path(args.out) / label.replace(" ", "_")
        report = workflow.direct_train(DirectSpec(args.model, config, train, DataSpec(args.data, args.limit)), str(folder), "cpu",
                                       progress=False)
        sim = report.simulations["direct"]
        spike_percent = sum(l["spike_percent"] for l in sim.layers) / max(1, len(sim.layers))
        rows.append(f"| {label} | {config.neuron} | {config.surrogate} | {config.encoding} | "
                    f"{sim.accuracy_per_step[-1]:.2f} | {sim.spikes_per_sample:.4g} | {spike_percent:.2f} | "
                    f"{sim.energy_uj_per_sample:.3f} | {report.training.seconds:.0f} |")
        print(rows[-1], flush=True)
    print(f"\n{args.model}, T = {base.timesteps}, {args.epochs} epoch(s) on {args.train_samples} training images, "
          f"{args.limit} test images ({args.data}), {torch.get_num_threads()} thread(s)\n")
    print("| variant | neuron | surrogate | encoding | accuracy at T (%) | spikes / image | mean spike % "
          "| energy / image (µJ) | training (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
