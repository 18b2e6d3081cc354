"""How often a prepared checkpoint's SNN agrees with a float ANN it was made from (e.g. after
fine-tuning, where the report can only hold the SNN against its own QCFS ANN).

    python benchmarks/agreement.py MODEL --ann ANN.pt --prepared PREPARED.pt [--input-size C,H,W]
        [--num-classes N] [--neuron signed-burst-if] [--coding count] [-T 4] [--limit 500]

On the first ``--limit`` shipped (embedded) test images: the accuracy of the float ANN, of the QCFS
ANN and of the SNN at the last step, and the agreement of the QCFS ANN and of the SNN with the
float ANN.
"""
from __future__ import annotations

import argparse

import torch

from snnconvert import workflow
from snnconvert.convert import NeuronConfig, convert
from snnconvert.data import load_dataset, make_loader
from snnconvert.runtime import Watch, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--ann", required=True)
    parser.add_argument("--prepared", required=True)
    parser.add_argument("--input-size", type=lambda s: tuple(int(v) for v in s.split(",")), default=None)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--neuron", default="signed-burst-if")
    parser.add_argument("--coding", default="count")
    parser.add_argument("-T", "--timesteps", type=int, default=4)
    parser.add_argument("--limit", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    adapt = {"adapt": {"num_classes": args.num_classes, "input_size": args.input_size, "classes": None}}
    ann = workflow.load(args.model, args.ann, **adapt).model.eval()
    prepared = workflow.load(args.model, args.prepared, **adapt)
    x, y = next(iter(make_loader(load_dataset("embedded", "test", prepared.recipe.input_spec), args.limit)))
    snn = convert(prepared.model, neuron=NeuronConfig(args.neuron, coding=args.coding))
    result = simulate(snn, x, y, timesteps=args.timesteps, watch=Watch(reference=ann))
    with torch.no_grad():
        expected, qcfs = ann(x).argmax(1), prepared.model.eval()(x).argmax(1)
    n = len(y)
    print(f"{args.model}, first {n} test images, {args.neuron}, {args.coding} coding, T = {args.timesteps}")
    print(f"  accuracy (%): float ANN {100 * float((expected == y).float().mean()):.2f}, QCFS ANN "
          f"{100 * float((qcfs == y).float().mean()):.2f}, SNN {100 * result.correct[-1] / n:.2f}")
    print(f"  agreement with the float ANN (%): QCFS ANN {100 * float((qcfs == expected).float().mean()):.2f}, "
          f"SNN {100 * result.agreeing[-1] / n:.2f}")


if __name__ == "__main__":
    main()
