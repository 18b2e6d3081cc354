"""Prepared building blocks that replace ANN blocks whose forward cannot be rewritten in place."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from snnconvert.convert.norm import ChannelBatchNorm
from snnconvert.convert.qcfs import QCFS


def then_qcfs(name: str, module: nn.Module, levels: int, threshold: float) -> nn.Sequential:
    """``QCFS(module(x))`` as a Sequential of ``{name}`` and ``act`` (channels last), e.g. the
    spiking input of an attention or MLP branch (``norm``) or a spiking projection (``linear``)."""
    return nn.Sequential(OrderedDict([(name, module), ("act", QCFS(levels, threshold, channel_axis=-1))]))


class SpikeMlp(nn.Module):
    """Transformer MLP ``QCFS(bn2(fc2(norm(QCFS(bn1(fc1(x)))))))`` (MST's SpikingMlp); input ``[*, C]``.

    ``bn1``/``bn2`` are BatchNorms after the Linears (MST's variant, ``batchnorm=True``) or identities.
    """

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, levels: int, threshold: float,
                 norm: nn.Module | None = None, batchnorm: bool = False):
        super().__init__()
        self.fc1 = fc1
        self.bn1 = ChannelBatchNorm(fc1.out_features) if batchnorm else nn.Identity()
        self.act1 = QCFS(levels, threshold, channel_axis=-1)
        self.norm = norm if norm is not None else nn.Identity()
        self.fc2 = fc2
        self.bn2 = ChannelBatchNorm(fc2.out_features) if batchnorm else nn.Identity()
        self.act2 = QCFS(levels, threshold, channel_axis=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.fc2(self.norm(self.act1(self.bn1(self.fc1(x)))))))


def added_batchnorms(model: nn.Module) -> list[ChannelBatchNorm]:
    """The BatchNorms ``mlp_batchnorm`` added (not in the ANN, so they must start as the identity)."""
    return [bn for mlp in model.modules() if isinstance(mlp, SpikeMlp)
            for bn in (mlp.bn1, mlp.bn2) if isinstance(bn, ChannelBatchNorm)]


class SpikeResidualBlock(nn.Module):
    """ResNet basic/bottleneck block with one activation per use: ``act(body(x) + shortcut(x))``.

    ``body`` is ``conv_i → bn_i → act_i`` for every conv but the last, whose ``bn`` output is
    added to the shortcut before the final activation. Input and output ``[B, C, H, W]``.
    """

    def __init__(self, convs: list[nn.Conv2d], bns: list[nn.Module], downsample: nn.Module | None,
                 levels: int, threshold: float):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(bns)
        self.acts = nn.ModuleList(QCFS(levels, threshold, channel_axis=1) for _ in convs)
        self.downsample = downsample if downsample is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            h = bn(conv(h))
            if i < last:
                h = self.acts[i](h)
        return self.acts[last](h + self.downsample(x))
