"""Fold frozen BatchNorm into the neighbouring Linear / Conv, wherever the graph allows.

With ``BN(x) = s·x + t`` per channel (``s = γ/√(σ²+ε)``, ``t = β − μ·s``):
after a layer ``Wx + b``: ``W' = diag(s)·W``, ``b' = s·b + t``;
before a Linear: ``W' = W·diag(s)``, ``b' = b + W·t``.

A pair folds when the only ops between the two are rearrangements (and, before a Linear, means
over tokens or positions), nothing else reads the values in between, and the layer's channels
are the BatchNorm's channels: checked by pushing each channel's index through the ops between.
A BatchNorm that cannot fold stays (a per-channel multiply-add each step, listed as a float op).
"""
from __future__ import annotations

import torch
from torch import fx, nn

from snnconvert.prepare.norm import ChannelBatchNorm, batchnorm_affine
from snnconvert.graph import ops
from snnconvert.graph.edit import bypass, finish
from snnconvert.graph.shapes import example_input

_BN = nn.modules.batchnorm._BatchNorm
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOLING = {"mean", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d"}


def _fold_after(layer: nn.Module, bn: _BN) -> None:
    s, t = batchnorm_affine(bn)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(s)
    layer.weight.data.mul_(s.reshape(shape))
    layer.bias = nn.Parameter(s * bias + t)


def _fold_before(bn: _BN, layer: nn.Linear) -> None:
    s, t = batchnorm_affine(bn)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features)
    shift = layer.weight.detach() @ t
    layer.weight.data.mul_(s.reshape(1, -1))
    layer.bias = nn.Parameter(bias + shift)


def _channel_axis(module: nn.Module) -> int:
    return -1 if isinstance(module, (nn.Linear, ChannelBatchNorm)) else 1


class _Probe(fx.Interpreter):
    """Runs the graph with channel-index tensors put in at chosen nodes and records chosen values."""

    def __init__(self, gm: fx.GraphModule, inject: dict[fx.Node, int], record: set[fx.Node]):
        super().__init__(gm)
        self.inject, self.record, self.seen = inject, record, {}

    def run_node(self, node: fx.Node):
        value = super().run_node(node)
        if node in self.inject:
            axis = self.inject[node]
            index = torch.arange(value.shape[axis], dtype=value.dtype, device=value.device)
            shape = [1] * value.dim()
            shape[axis] = -1
            value = index.reshape(shape).expand_as(value).clone()
        if node in self.record:
            self.seen[node] = value
        return value


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


def _candidates(gm: fx.GraphModule) -> list[tuple[str, fx.Node, fx.Node, int, int]]:
    """``(direction, layer, bn, layer axis, bn axis)`` for every BatchNorm next to a layer."""
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
        if not isinstance(bn, _BN) or bn.training:
            continue
        before = _chain(node, single_input, rearranging)
        if before is not None and isinstance(module(before[0]), _LAYERS) and len(readers(before[0])) == 1:
            found.append(("after", before[0], node, _channel_axis(module(before[0])), _channel_axis(bn)))
            continue
        after = _chain(node, single_user, pooling)
        if after is not None and isinstance(module(after[0]), nn.Linear) and single_input(after[0]) is not None:
            found.append(("before", after[0], node, -1, _channel_axis(bn)))
    return found


@torch.no_grad()
def fold_batchnorms(gm: fx.GraphModule) -> list[str]:
    """Fold every foldable eval-mode BatchNorm of a prepared graph in place (the BatchNorm
    leaves the graph); returns the folded BatchNorms' names."""
    candidates = _candidates(gm)
    if not candidates:
        return []
    example = example_input(gm)
    # pushed forward: a layer's channel index must arrive as the BatchNorm's channel index, and back
    inject = {(layer if d == "after" else bn): (la if d == "after" else ba) for d, layer, bn, la, ba in candidates}
    record = {(bn.args[0] if d == "after" else layer.args[0]) for d, layer, bn, _, _ in candidates}
    probe = _Probe(gm, inject, record)
    probe.run(example)
    folded = []
    for direction, layer, bn, layer_axis, bn_axis in candidates:
        arrived = probe.seen[bn.args[0] if direction == "after" else layer.args[0]]
        axis = bn_axis if direction == "after" else layer_axis
        index = torch.arange(arrived.shape[axis], dtype=arrived.dtype, device=arrived.device)
        shape = [1] * arrived.dim()
        shape[axis] = -1
        if not torch.equal(arrived, index.reshape(shape).expand_as(arrived)):
            continue
        bn_module, layer_module = gm.get_submodule(bn.target), gm.get_submodule(layer.target)
        if direction == "after":
            _fold_after(layer_module, bn_module)
        else:
            _fold_before(bn_module, layer_module)
        folded.append(bn.target)
        bypass(gm, bn)
    finish(gm)
    return folded
