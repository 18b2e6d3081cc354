"""Which BatchNorms sit next to a layer they can fold into (what conversion folds, and what
the stream-site rule of preparation counts as folded)."""
from __future__ import annotations

from torch import fx, nn

from snnconvert.graph import ops

_BN = nn.modules.batchnorm._BatchNorm
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOLING = {"mean", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d"}


def _chain(start: fx.Node, step, allowed) -> tuple[fx.Node, list[fx.Node]] | None:
    """Follow single-use links from ``start`` with ``step`` while ``allowed``; the node reached
    and the nodes passed."""
    passed, node = [], start
    while True:
        nxt = step(node)
        if nxt is None:
            return None
        if not allowed(nxt):
            return nxt, passed
        passed.append(nxt)
        node = nxt


def folds_into_linear(gm: fx.GraphModule) -> set[fx.Node]:
    """The BatchNorms (in training mode or not) whose next layer is a Linear they can fold into:
    the only ones of a layer's inputs that conversion removes (one before a convolution stays: its
    shift would not be zero in the convolution's zero padding)."""
    return {bn for direction, _, bn in batchnorm_neighbours(gm, frozen_only=False) if direction == "before"}


def batchnorm_neighbours(gm: fx.GraphModule, frozen_only: bool = True) -> list[tuple[str, fx.Node, fx.Node]]:
    """``(direction, layer, bn)`` for every (eval-mode) BatchNorm next to a layer: ``after`` a
    Linear / Conv (only rearrangements between, nothing else reading the layer), or ``before`` a
    Linear (rearrangements and means between)."""
    dynamic = ops.dynamic_nodes(gm.graph)
    kinds = {n: ops.kind(n, gm, dynamic.__contains__) for n in gm.graph.nodes}

    def module(node):
        return gm.get_submodule(node.target) if node.op == "call_module" else None

    def readers(node):  # users of its values (not of its shape alone)
        return [u for u in node.users if node in ops.data_inputs(u)]

    def single_input(node):
        inputs = [n for n in ops.data_inputs(node) if n in dynamic]
        return inputs[0] if len(inputs) == 1 and len(readers(inputs[0])) == 1 else None

    def single_user(node):
        found = readers(node)
        return found[0] if len(found) == 1 else None

    def rearranging(node):
        return kinds.get(node) in (ops.STRUCTURAL, ops.IDENTITY)

    def pooling(node):
        return rearranging(node) or ops.describe(node, gm).strip(".()") in _POOLING

    found = []
    for node in gm.graph.nodes:
        bn = module(node)
        if not isinstance(bn, _BN) or (bn.training and frozen_only):
            continue
        before = _chain(node, single_input, rearranging)
        if before is not None and isinstance(module(before[0]), _LAYERS) and len(readers(before[0])) == 1:
            found.append(("after", before[0], node))
            continue
        after = _chain(node, single_user, pooling)
        if after is not None and isinstance(module(after[0]), nn.Linear) and single_input(after[0]) is not None:
            found.append(("before", after[0], node))
    return found
