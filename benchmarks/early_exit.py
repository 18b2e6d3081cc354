"""Per-sample early exit on the shipped models: the offline curve, the best rule, and the time it saves.

    python benchmarks/early_exit.py [--models swin_nano,vit_nano] [--timesteps 128]
                                    [--data fashion-mnist] [--limit N] [--batch-size 256]

For each model: one pass of T_max steps over the test set records every image's confidence and
prediction at every step, which gives the accuracy and mean steps of every exit rule (confidence of
the softmax of the running mean, or the prediction unchanged for k steps) and the fixed-T curve.
The rules with the fewest mean steps at most 0.1 and 1 point below the T_max accuracy are then run
for real (images leave the batch when they stop): accuracy, mean steps, spikes, energy and wall
time against the full pass (both with basic metrics, the same threads, in this run).
"""
from __future__ import annotations

import argparse
import time

import torch

from snnconvert import workflow
from snnconvert.convert import NeuronConfig
from snnconvert.model_zoo import get_recipe, shipped_checkpoint
from snnconvert.report.early_exit import exit_rows
from snnconvert.runtime import SimulationOptions, Watch, simulate
from snnconvert.runtime.early_exit import ExitRule, ExitTrace, exit_curve

RULES = [ExitRule("confidence", c) for c in (0.5, 0.7, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999)] + \
        [ExitRule("stable", k) for k in (2, 4, 8, 16, 24, 32, 48, 64)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="swin_nano,vit_nano")
    parser.add_argument("--timesteps", type=int, default=128)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; T_max = {args.timesteps}, {args.data}")
    for name in args.models.split(","):
        recipe = get_recipe(name)
        snn = workflow.load_snn(name, str(shipped_checkpoint(recipe)), "compensated", NeuronConfig()).snn
        loader = workflow.eval_loader(recipe, args.data, args.batch_size, args.limit)
        trace = ExitTrace()
        start = time.perf_counter()
        full = simulate(snn, loader, timesteps=args.timesteps, options=SimulationOptions(metrics="basic"), watch=Watch(trace=trace))
        full_s = time.perf_counter() - start
        rows = exit_rows(exit_curve(trace, RULES), full.accuracy)
        print(f"\n{name}: {full.samples} images, accuracy at T_max {full.accuracy[-1]:.2f} % ({full_s:.0f} s)")
        print("rule                               accuracy  change  mean steps  T_max/mean  fixed T as accurate  T/mean")
        for row in rows:
            fixed = row["smallest_fixed_t_as_accurate"]
            print(f"{row['describe']:34s} {row['accuracy']:7.2f} {row['change_from_t_max']:+7.2f} "
                  f"{row['mean_steps']:10.2f} {row['fewer_steps_than_t_max']:10.2f} "
                  f"{fixed if fixed is not None else '> T_max':>20} "
                  f"{row['fewer_steps_than_that_t'] if fixed is not None else float('nan'):7.2f}")
        for within in (0.1, 1.0):
            eligible = [r for r in rows if r["change_from_t_max"] >= -within and r["mean_steps"] < args.timesteps]
            if not eligible:
                print(f"no rule saves steps within {within:g} points of the T_max accuracy")
                continue
            best = min(eligible, key=lambda r: r["mean_steps"])
            rule = ExitRule(best["rule"], best["value"])
            start = time.perf_counter()
            online = simulate(snn, loader, timesteps=args.timesteps, options=SimulationOptions(metrics="basic"), watch=Watch(exit_rule=rule))
            online_s = time.perf_counter() - start
            print(f"fewest steps within {within:g} points: {rule.describe()}; run with images leaving the batch: "
                  f"accuracy {online.accuracy[-1]:.2f} % (offline {best['accuracy']:.2f}), mean steps "
                  f"{online.mean_steps:.2f} (offline {best['mean_steps']:.2f}); wall time {online_s:.0f} s against "
                  f"{full_s:.0f} s (÷ {full_s / online_s:.2f}); spikes per image "
                  f"÷ {full.spikes_per_sample / online.spikes_per_sample:.2f}; energy per image "
                  f"÷ {full.energy_per_sample_pj() / online.energy_per_sample_pj():.2f}")

if __name__ == "__main__":
    main()
