"""Operations counted by snnconvert 0.1's energy counter against the graph accounting, op by op.

The 0.1 counter recognized spikes while the model ran (forward hooks on modules); the graph
accounting classifies every op of the graph before the run. Both count the same shipped model on
the same images (compensated, IF neurons); the 0.1 side runs from a checkout of that version:

    git worktree add /tmp/snnconvert-0.1 7e01c56
    python benchmarks/energy_before_after.py --old /tmp/snnconvert-0.1 [--models swin_nano vit_nano] [-T 64]

Prints the totals of both and every op where they differ (ops the 0.1 counter did not see are
marked new; a LayerNorm-replacing BatchNorm moved from ``norm1.norm`` to ``norm1``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from snnconvert.runtime.energy import EnergyCosts

COUNT = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from snnconvert.convert import convert
from snnconvert.data import load_dataset, make_loader
from snnconvert.model_zoo import get_recipe, load_model
from snnconvert.runtime import simulate
torch.set_num_threads(1)
loaded = load_model(get_recipe(sys.argv[2]))
x, y = next(iter(make_loader(load_dataset("embedded", "test", loaded.recipe.input_spec), int(sys.argv[4]))))
result = simulate(convert(loaded.model.eval()), x, y, timesteps=int(sys.argv[3]))
print(json.dumps({o.name: [o.kind, o.sops, o.macs, o.float_ops, getattr(o, "adds", 0)] for o in result.ops}))
"""


def _count(tree: str, model: str, timesteps: int, images: int) -> dict:
    out = subprocess.run([sys.executable, "-c", COUNT, tree, model, str(timesteps), str(images)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="a checkout of snnconvert 0.1 (commit 7e01c56)")
    parser.add_argument("--new", default=".", help="this checkout")
    parser.add_argument("--models", nargs="+", default=["swin_nano", "vit_nano"])
    parser.add_argument("-T", "--timesteps", type=int, default=64)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    fields = ("SOPs", "MACs", "float ops", "additions")
    for model in args.models:
        old, new = (_count(tree, model, args.timesteps, args.images) for tree in (args.old, args.new))
        print(f"\n{model}: {args.images} embedded test images, T = {args.timesteps}, per image")
        for label, ops in (("0.1 counter", old), ("graph accounting", new)):
            totals = [sum(v[i + 1] for v in ops.values()) / args.images for i in range(4)]
            energy = EnergyCosts().of(totals[0], totals[1], totals[2], totals[3]) / 1e6
            print(f"  {label:<17} " + ", ".join(f"{t:.4g} {f}" for t, f in zip(totals, fields))
                  + f" = {energy:.1f} µJ")
        renamed = {k.replace(".norm1.norm", ".norm1").replace(".norm2.norm", ".norm2")
                   .replace(".reduction.linear", ".reduction"): v for k, v in old.items()}
        for name in sorted(set(renamed) | set(new)):
            a, b = renamed.get(name), new.get(name)
            if a is None:
                print(f"  new   {name}: {b[0]}, " + ", ".join(f"{v / args.images:.4g} {f}" for v, f in
                                                          zip(b[1:], fields) if v))
            elif b is None:
                print(f"  gone  {name}")
            elif a[1:4] != b[1:4]:
                print(f"  diff  {name}: " + ", ".join(f"{f} {x / args.images:.4g} → {y / args.images:.4g}"
                                                     for x, y, f in zip(a[1:], b[1:], fields) if x != y))


if __name__ == "__main__":
    main()
