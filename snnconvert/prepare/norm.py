"""BatchNorm over the channel (last) axis: the LayerNorm replacement of the MST recipe.

LayerNorm normalizes each token over its features; in an SNN those statistics change every step.
BatchNorm with frozen running statistics is a per-channel affine map ``y = a·x + b`` that commutes
with the running mean of spikes, so it converts exactly (and folds into a neighbouring Linear).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from snnconvert.graph.edit import drop_if_unused, join, move, owner, replace_with_module
from snnconvert.graph.ops import BATCHNORM, register_module_kind


class ChannelBatchNorm(nn.BatchNorm1d):
    """BatchNorm whose channels are the last axis of an input of any rank ``[*, C]``.

    Statistics are taken over every other axis (batch and tokens), as MST's BatchNorm1d over
    ``[B, C, N]``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = super().forward(x.reshape(-1, shape[-1]))
        return y.reshape(shape)

    @classmethod
    def like_layernorm(cls, dim: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                       eps: float) -> ChannelBatchNorm:
        """A BatchNorm over ``dim`` features with a LayerNorm's γ/β (statistics to be calibrated)."""
        bn = cls(dim, eps=eps)
        with torch.no_grad():
            if weight is not None:
                bn.weight.copy_(weight)
            if bias is not None:
                bn.bias.copy_(bias)
        return bn.to(weight.device if weight is not None else "cpu")


register_module_kind(ChannelBatchNorm, BATCHNORM)


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen BatchNorm as ``y = scale·x + shift`` per channel: ``scale = γ/√(σ²+ε)``."""
    var = bn.running_var if bn.running_var is not None else torch.ones(bn.num_features)
    mean = bn.running_mean if bn.running_mean is not None else torch.zeros(bn.num_features)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale.detach(), (beta - mean * scale).detach()


def _layernorm_call(node: fx.Node, gm: fx.GraphModule):
    """``(normalized_shape, weight node or tensor, bias, eps)`` of a LayerNorm node, or None."""
    if node.op == "call_module":
        ln = gm.get_submodule(node.target)
        if type(ln) is not nn.LayerNorm:
            return None
        return tuple(ln.normalized_shape), ln.weight, ln.bias, ln.eps
    if node.op == "call_function" and node.target is F.layer_norm:
        args = list(node.args) + [None] * (5 - len(node.args))
        shape = node.kwargs.get("normalized_shape", args[1])
        weight, bias = node.kwargs.get("weight", args[2]), node.kwargs.get("bias", args[3])
        eps = node.kwargs.get("eps", args[4] if args[4] is not None else 1e-5)
        return tuple(shape), weight, bias, eps
    return None


def _tensor(gm: fx.GraphModule, value) -> torch.Tensor | None:
    if isinstance(value, fx.Node):
        return gm.get_parameter(value.target) if value.op == "get_attr" else None
    return value


def layernorms_to_batchnorms(gm: fx.GraphModule, dynamic: set[fx.Node]) -> dict[str, nn.Module]:
    """Replace every LayerNorm over the last axis (module or functional, on dynamic input) by a
    :class:`ChannelBatchNorm` with its γ/β, in place. Returns ``{path: the LayerNorm it replaced}``;
    a functional LayerNorm's BatchNorm takes the path of the module that held its weight."""
    replaced = {}
    for node in list(gm.graph.nodes):
        call = _layernorm_call(node, gm) if node in dynamic else None
        if call is None or len(call[0]) != 1:
            continue
        shape, weight, bias, eps = call
        if weight is not None and _tensor(gm, weight) is None or bias is not None and _tensor(gm, bias) is None:
            continue  # weights computed from the input: not a LayerNorm with parameters
        w, b = _tensor(gm, weight), _tensor(gm, bias)
        original = nn.LayerNorm(shape, eps=eps, elementwise_affine=w is not None, bias=b is not None)
        with torch.no_grad():
            if w is not None:
                original.weight.copy_(w)
            if b is not None:
                original.bias.copy_(b)
        bn = ChannelBatchNorm.like_layernorm(shape[0], w, b, eps)
        if node.op == "call_module":
            path = node.target
            replace_with_module(gm, node, path, bn)
        else:
            path = weight.target.rpartition(".")[0] if isinstance(weight, fx.Node) else join(owner(node), "norm")
            new = replace_with_module(gm, node, path, bn, (node.args[0],))
            drop_if_unused(gm, (weight, bias))
            if new.target != path and not _referenced(gm, path):
                gm.delete_submodule(path)
                move(gm, new, path)
            path = new.target
        replaced[path] = original.to(bn.weight.device)
    return replaced


def _referenced(gm: fx.GraphModule, path: str) -> bool:
    return any(n.op in ("get_attr", "call_module") and (n.target == path or n.target.startswith(path + "."))
               for n in gm.graph.nodes)
