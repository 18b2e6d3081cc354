"""Fold frozen BatchNorm into the neighbouring Linear / Conv.

With ``BN(x) = s·x + t`` per channel (``s = γ/√(σ²+ε)``, ``t = β − μ·s``):
after a layer ``Wx + b``: ``W' = diag(s)·W``, ``b' = s·b + t``;
before a Linear: ``W' = W·diag(s)``, ``b' = b + W·t`` (exact; a padded Conv is not, and is skipped).
"""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.convert.norm import batchnorm_affine
from snnconvert.convert.rules import rule_for

_BN = nn.modules.batchnorm._BatchNorm
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


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


def _fold_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, nn.Sequential):
            names = [n for n, _ in m.named_children()]
            pairs += [(prefix + a, prefix + b) for a, b in zip(names, names[1:])]
        rule = rule_for(m)
        if rule is not None:
            pairs += [(prefix + a, prefix + b) for a, b in rule.folds(m)]
    return pairs


def fold_batchnorms(model: nn.Module) -> list[str]:
    """Fold every foldable eval-mode BatchNorm in place; return the names of the folded ones.

    A folded BatchNorm is replaced by ``nn.Identity``.
    """
    modules = dict(model.named_modules())
    folded = []
    for first, second in _fold_pairs(model):
        a, b = modules.get(first), modules.get(second)
        if isinstance(a, _LAYERS) and isinstance(b, _BN):
            _fold_after(a, b)
            target = second
        elif isinstance(a, _BN) and isinstance(b, nn.Linear):
            _fold_before(a, b)
            target = first
        else:
            continue
        parent_name, _, attr = target.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, attr, nn.Identity())
        modules[target] = nn.Identity()
        folded.append(target)
    return folded
