"""BatchNorm over the channel (last) axis: the LayerNorm replacement of the MST recipe.

LayerNorm normalizes each token over its features; in an SNN those statistics change every step.
BatchNorm with frozen running statistics is a per-channel affine map ``y = a·x + b`` that commutes
with the running mean of spikes, so it converts exactly (and folds into a neighbouring Linear).
"""
from __future__ import annotations

import torch
from torch import nn



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
    def from_layernorm(cls, ln: nn.LayerNorm) -> ChannelBatchNorm:
        """A BatchNorm over ``ln``'s features with γ/β taken from the LayerNorm."""
        (dim,) = ln.normalized_shape
        bn = cls(dim, eps=ln.eps)
        if ln.weight is not None:
            bn.weight.data.copy_(ln.weight.data)
        if ln.bias is not None:
            bn.bias.data.copy_(ln.bias.data)
        return bn.to(next(ln.parameters(), torch.empty(0)).device)


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen BatchNorm as ``y = scale·x + shift`` per channel: ``scale = γ/√(σ²+ε)``."""
    var = bn.running_var if bn.running_var is not None else torch.ones(bn.num_features)
    mean = bn.running_mean if bn.running_mean is not None else torch.zeros(bn.num_features)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale.detach(), (beta - mean * scale).detach()


def layernorm2d_to_batchnorm(ln: nn.Module) -> nn.BatchNorm2d:
    """timm ``LayerNorm2d`` (channels first) → BatchNorm2d with the same γ/β."""
    dim = ln.normalized_shape[0]
    bn = nn.BatchNorm2d(dim, eps=ln.eps)
    if ln.weight is not None:
        bn.weight.data.copy_(ln.weight.data)
        bn.bias.data.copy_(ln.bias.data)
    return bn
