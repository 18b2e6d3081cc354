"""Spikes sent ÷ net spikes kept, per neuron layer of a count-coded SNN: the transients of count coding.

    python benchmarks/spike_excess.py [--model vit_nano] [--checkpoint runs/energy/vit_nano/.../prepared.pt]
                                      [--timesteps 16] [--limit 100]

Under count coding a neuron's total is QCFS of its total input once it has fired its count, but
while its inputs are still arriving it fires on partial sums and a signed IF neuron takes spikes
back later: every such pair costs two events for no net value. For each IF layer this prints the
spikes sent (``Σ_t |s_t|``) and the net spikes kept (``|Σ_t s_t|``), summed over the first
``--limit`` embedded test images, and their ratio; 1.0 is the least any exact coding can send.
The SNN is the prepared checkpoint converted with signed IF neurons (k = 1), count coding.
"""
from __future__ import annotations

import argparse

import torch

from snnconvert import workflow
from snnconvert.convert import NeuronConfig
from snnconvert.runtime import reset_states
from snnconvert.runtime.neurons import IFNeuron


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_nano")
    parser.add_argument("--checkpoint", default=None, help="a prepared checkpoint (default: the shipped one)")
    parser.add_argument("--timesteps", type=int, default=16)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    neuron = NeuronConfig(neuron="signed-if", coding="count")
    if args.checkpoint is None:
        loaded = workflow.load(args.model, None)
        snn, recipe = workflow.convert(loaded.model, "compensated", neuron), loaded.recipe
    else:
        loaded = workflow.load_snn(args.model, args.checkpoint, "compensated", neuron)
        snn, recipe = loaded.snn, loaded.recipe
    snn.eval()
    sent: dict[str, float] = {}
    net: dict[str, torch.Tensor] = {}

    def count(name: str):
        def hook(module, _inputs, out):
            spikes = (out / module.threshold).round()
            sent[name] = sent.get(name, 0.0) + float(spikes.abs().sum())
            net[name] = net[name] + spikes if name in net else spikes
        return hook

    for name, module in snn.named_modules():
        if isinstance(module, IFNeuron):
            module.register_forward_hook(count(name))
    kept: dict[str, float] = {}
    with torch.no_grad():
        for images, _ in workflow.eval_loader(recipe, "embedded", 100, args.limit):
            reset_states(snn)
            net.clear()
            for _ in range(args.timesteps):
                snn(images)
            for name, total in net.items():
                kept[name] = kept.get(name, 0.0) + float(total.abs().sum())
    print(f"{args.model}, T = {args.timesteps}, first {args.limit} test images, signed IF (k = 1), count coding\n")
    print("| layer | spikes sent | net spikes kept | sent ÷ kept |\n|---|---|---|---|")
    for name in sent:
        print(f"| {name} | {sent[name]:.0f} | {kept[name]:.0f} | {sent[name] / max(kept[name], 1.0):.2f} |")
    total_sent, total_kept = sum(sent.values()), sum(kept.values())
    print(f"| all | {total_sent:.0f} | {total_kept:.0f} | {total_sent / total_kept:.3f} |")


if __name__ == "__main__":
    main()
