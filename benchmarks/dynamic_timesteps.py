"""Dynamic time steps (DTSS) at Fashion-MNIST scale: the shape of the paper's Tables III and IV.

    python benchmarks/dynamic_timesteps.py [--train-samples 6000] [--epochs 2] [--limit 2000]
                                           [--lambdas 1e-6,1e-4] [--mask-lr 0.01] [--out runs/dtss]
                                           [--tables iii,iv,fixed]

Trains spikformer_nano directly (LIF, direct encoding, T_max = 4) with dynamic time steps:

* Table III: the mask loss over the groups sps+qkv+attn+mlp, qkv+attn+mlp, qkv+mlp, none
  (T_init = 2, the larger λ_m);
* Table IV: T_init 1, 2, 3 and 4 (= T_max) with the larger λ_m, and 2 with the smaller (mask loss qkv+mlp);
* fixed-T Spikformers at T = 1, 2, 4: the same images, epochs, seed and schedule.

Each is then simulated on the first ``--limit`` test images (also its validation set): accuracy at
T_max, T_avg (Σ_l T_l / L over the 19 spiking layers), the spike rate (spikes per neuron-step
computed, the paper's SA), spikes, SOPs and energy per image, and the wall time of training and of
the simulation (all in this run, on this machine). Every run is resumable in its own folder under
``--out``, and a finished one is read back from its report.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from snnconvert import workflow
from snnconvert.spec import DataSpec, DirectSpec
from snnconvert.model_zoo import direct_config, get_recipe
from snnconvert.train import TrainConfig

MODEL = "spikformer_nano"
GROUPS_III = [("sps", "qkv", "attn", "mlp"), ("qkv", "attn", "mlp"), ("qkv", "mlp"), ()]


def _run(name: str, config, train: TrainConfig, args) -> dict:
    out = Path(args.out) / name
    if (out / "report.json").exists():
        report = json.loads((out / "report.json").read_text())
    else:
        report = workflow.direct_train(DirectSpec(MODEL, config, train, DataSpec(args.data, args.limit)), str(out), "cpu",
                                       progress=False)
    sim = report.simulations["direct"]
    steps = report.dynamic_timesteps
    return {"name": name, "accuracy": sim.accuracy_per_step[-1], "steps": steps["average"] if steps else None,
            "by_group": steps["average_by_group"] if steps else None, "spike_rate": 100 * sim.spike_rate,
            "spikes": sim.spikes_per_sample, "sops": sim.sops_per_sample,
            "energy": sim.energy_uj_per_sample, "train_s": report.training.seconds,
            "sim_s": sim.seconds, "timesteps": report.timesteps}


def _row(label: str, r: dict) -> str:
    steps = f"{r['steps']:.2f}" if r["steps"] is not None else f"{r['timesteps']} (fixed)"
    groups = " ".join(f"{g}:{v:.2f}" for g, v in r["by_group"].items()) if r["by_group"] else ""
    return (f"| {label} | {r['accuracy']:.2f} | {steps} | {r['spike_rate']:.2f} | {r['spikes']:.0f} | "
            f"{r['sops'] / 1e6:.3f} | {r['energy']:.3f} | {r['train_s']:.0f} | {r['sim_s']:.1f} | {groups} |")


HEADER = ("| acc. (%) | T_avg | SA (% of neuron-steps) | spikes / image | SOPs (M) / image | energy (µJ) / image | "
          "train (s) | simulate (s) | T_avg per group |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--train-samples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--lambdas", default="1e-6,1e-4", help="the smaller and the larger λ_m")
    parser.add_argument("--mask-lr", type=float, default=0.01)
    parser.add_argument("--out", default="runs/dtss")
    parser.add_argument("--tables", default="iii,iv,fixed")
    args = parser.parse_args()
    low, high = (float(v) for v in args.lambdas.split(","))
    recipe = get_recipe(MODEL)
    train = replace(TrainConfig(**recipe.direct["train"]), epochs=args.epochs, train_samples=args.train_samples,
                    batch_size=args.batch_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {MODEL}, {args.train_samples} training "
          f"images × {args.epochs} epochs (batch {args.batch_size}, lr {train.lr}, masks' lr {args.mask_lr}), "
          f"{args.limit} test images")

    def dynamic(init: int, lam: float, groups=("qkv", "mlp"), max_steps: int = 4):
        return direct_config(recipe, timesteps=max_steps, dynamic_timesteps=True, initial_timesteps=init,
                             mask_loss=groups, lambda_m=lam, mask_lr=args.mask_lr)

    tables = args.tables.split(",")
    if "iii" in tables:
        print(f"\nTable III: mask-loss groups (T_init 2, T_max 4, λ_m {high:g})\n")
        print("| mask loss " + HEADER + "\n" + "|---" * 10 + "|")
        for groups in GROUPS_III:
            label = "+".join(groups) or "none"
            print(_row(label, _run(f"dtss_{label}_2_{high:g}", dynamic(2, high, groups), train, args)), flush=True)
    if "iv" in tables:
        print("\nTable IV: initial time steps and λ_m (mask loss qkv+mlp, T_max 4)\n")
        print("| T_init, λ_m " + HEADER + "\n" + "|---" * 10 + "|")
        for init, lam in [(1, high), (2, high), (2, low), (3, high), (4, high)]:
            run = _run(f"dtss_qkv+mlp_{init}_{lam:g}", dynamic(init, lam), train, args)  # (2, λ high): Table III's
            print(_row(f"{init}, {lam:g}", run), flush=True)
    if "fixed" in tables:
        print("\nFixed-T Spikformers, the same budget\n")
        print("| T " + HEADER + "\n" + "|---" * 10 + "|")
        for T in (1, 2, 4):
            print(_row(str(T), _run(f"fixed_{T}", direct_config(recipe, timesteps=T), train, args)), flush=True)


if __name__ == "__main__":
    main()
