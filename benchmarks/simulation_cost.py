"""Cost of one SNN time step relative to one forward pass of the QCFS ANN.

Run: python benchmarks/simulation_cost.py [--models swin_nano vit_nano resnet_nano] [--batch 128] [--steps 32]

Columns: the bare converted model stepped in each attention mode, and ``simulate()`` as users run
it (compensated, IF neurons, with every metric: accuracy at every t, spiking statistics, spike
counts for the energy accounting), per step, each divided by one ANN forward on the same batch;
and the one-time setup of the energy accounting (fan-out maps), in seconds, which ``simulate()``
pays once per call and the per-step figure leaves out. Times are interleaved in one run (ANN,
compensated, mst, simulate, repeated) and the ratios printed, since absolute CPU times mean
little on a shared machine.
"""
from __future__ import annotations

import argparse
import time

import torch

from snnconvert.convert import convert
from snnconvert.data import load_dataset, make_loader
from snnconvert.model_zoo import get_recipe, load_model
from snnconvert.runtime import reset_states, simulate
from snnconvert.runtime.energy import OpAccounting


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["swin_nano", "vit_nano", "resnet_nano"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32, help="SNN steps per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.steps} steps per run")
    print(f"{'model':<12} {'compensated step / ANN':>24} {'mst step / ANN':>16} {'simulate() step / ANN':>22} "
          f"{'accounting setup (s)':>21}")
    for name in args.models:
        loaded = load_model(get_recipe(name))
        model = loaded.model.eval()
        x, y = next(iter(make_loader(load_dataset("embedded", "test", loaded.recipe.input_spec), args.batch)))
        snns = {mode: convert(model, mode) for mode in ("compensated", "mst")}

        def steps(net, x=x):
            reset_states(net)
            for _ in range(args.steps):
                net(x)

        ann = comp = mst = sim = setup = 0.0
        for _ in range(args.repeats):  # interleave so that load changes hit every variant alike
            ann += _time(lambda net=model: steps(net))
            comp += _time(lambda net=snns["compensated"]: steps(net))
            mst += _time(lambda net=snns["mst"]: steps(net))
            setup_once = _time(lambda: OpAccounting(snns["compensated"]))
            sim += _time(lambda: simulate(snns["compensated"], x, y, timesteps=args.steps)) - setup_once
            setup += setup_once
        print(f"{name:<12} {comp / ann:>24.2f} {mst / ann:>16.2f} {sim / ann:>22.2f} {setup / args.repeats:>21.2f}")


if __name__ == "__main__":
    main()
