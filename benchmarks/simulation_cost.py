"""Cost of one SNN time step relative to one forward pass of the QCFS ANN, per attention mode.

Run: python benchmarks/simulation_cost.py [--models swin_nano vit_nano] [--batch 128] [--steps 32]

Times are interleaved in one run (ANN, compensated, mst, repeated) and the ratios printed, since
absolute CPU times mean little on a shared machine. The compensated mode pays for keeping
cumulative sums and one product of them per step.
"""
from __future__ import annotations

import argparse
import time

import torch

from snnconvert.convert import convert
from snnconvert.data import load_dataset, make_loader
from snnconvert.model_zoo import get_recipe, load_model
from snnconvert.runtime import reset_states


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["swin_nano", "vit_nano"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32, help="SNN steps per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.steps} steps per run")
    print(f"{'model':<10} {'compensated step / ANN':>24} {'mst step / ANN':>16} {'compensated / mst':>18}")
    for name in args.models:
        loaded = load_model(get_recipe(name))
        model = loaded.model.eval()
        x, _ = next(iter(make_loader(load_dataset("embedded", "test", loaded.recipe.input_spec), args.batch)))
        snns = {mode: convert(model, mode) for mode in ("compensated", "mst")}

        def steps(net, x=x):
            reset_states(net)
            for _ in range(args.steps):
                net(x)

        ann = comp = mst = 0.0
        for _ in range(args.repeats):  # interleave so that load changes hit every variant alike
            ann += _time(lambda net=model: steps(net))
            comp += _time(lambda net=snns["compensated"]: steps(net))
            mst += _time(lambda net=snns["mst"]: steps(net))
        print(f"{name:<10} {comp / ann:>24.2f} {mst / ann:>16.2f} {comp / mst:>18.2f}")


if __name__ == "__main__":
    main()
