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
from snnconvert.graph.batchnorms import batchnorm_neighbours
from snnconvert.graph.edit import bypass, finish
from snnconvert.graph.shapes import example_input

_BN = nn.modules.batchnorm._BatchNorm


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


@torch.no_grad()
def fold_batchnorms(gm: fx.GraphModule) -> list[str]:
    """Fold every foldable eval-mode BatchNorm of a prepared graph in place (the BatchNorm
    leaves the graph); returns the folded BatchNorms' names."""
    candidates = [(d, layer, bn, _channel_axis(gm.get_submodule(layer.target)) if d == "after" else -1,
                   _channel_axis(gm.get_submodule(bn.target))) for d, layer, bn in batchnorm_neighbours(gm)]
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
