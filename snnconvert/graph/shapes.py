"""Shapes of a graph's values, recorded on its nodes by running it once on an example input.

Every tensor-valued node gets ``node.meta["shape"]`` (a tuple, batch included) and
``node.meta["dtype"]``; every other node gets ``node.meta["value"]`` (ints, sizes, dtypes …).
Passes read them to build modules (a head dimension, a channel count) and to check layouts;
the energy accounting reads the shapes of every op's operands.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import fx



class _Recorder(fx.Interpreter):
    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        node.meta.pop("shape", None)
        node.meta.pop("value", None)
        if isinstance(value, torch.Tensor):
            node.meta["shape"], node.meta["dtype"] = tuple(value.shape), value.dtype
        elif not isinstance(value, (list, tuple)) or not any(isinstance(v, torch.Tensor) for v in value):
            node.meta["value"] = value
        return value


@torch.no_grad()
def annotate(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Record every node's shape (or value) on an ``example`` batch, in evaluation mode (the
    training flag is restored). Stateful modules take one step: reset them afterwards."""
    training = gm.training
    gm.eval()
    try:
        _Recorder(gm).run(example)
    finally:
        gm.train(training)


def example_input(gm: fx.GraphModule) -> torch.Tensor:
    """A zero batch of one input of the size the graph was prepared for, on its parameters'
    device and in their dtype (``gm.meta["input_shape"]``, set by ``prepare``)."""
    tensor = next((t for t in gm.parameters() if t.is_floating_point()), None)
    return torch.zeros(1, *gm.meta["input_shape"], dtype=tensor.dtype if tensor is not None else None,
                       device=tensor.device if tensor is not None else None)


def shape(node: fx.Node) -> tuple[int, ...]:
    """The recorded shape of a tensor-valued node."""
    if "shape" not in node.meta:
        raise KeyError(f"no shape recorded for {node.name}: annotate the graph first")
    return node.meta["shape"]


def per_sample(node: fx.Node) -> float:
    """Elements of a tensor-valued node per sample of the example batch (Swin's windows fold the
    batch into their leading dimension, so the count is divided by the input's batch size)."""
    total = 1
    for d in shape(node):
        total *= d
    placeholder = next(n for n in node.graph.nodes if n.op == "placeholder")
    return total / shape(placeholder)[0]
