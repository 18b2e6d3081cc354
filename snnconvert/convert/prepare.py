"""prepare(model): ANN surgery for conversion (MST recipe, generalized).

LayerNorm → BatchNorm over channels, GELU/ReLU/ReLU6 → QCFS, QCFS on Q, K, V, scores, attention
output and projections (via architecture rules), dropout / drop-path removed, max-pool → avg-pool.
Anything left that has no spiking equivalent is reported, all at once, in one error.
"""
from __future__ import annotations

import copy

from torch import nn
from timm.layers import DropPath, LayerNorm2d, LayerScale
from timm.layers.adaptive_avgmax_pool import FastAdaptiveAvgPool

from snnconvert.convert.config import PrepareConfig
from snnconvert.convert.norm import ChannelBatchNorm, layernorm2d_to_batchnorm
from snnconvert.convert.qcfs import QCFS
from snnconvert.convert.rsm import RandomSpikeMask, add_spike_masks
from snnconvert.convert.rules import rule_for
from snnconvert.errors import UnsupportedLayersError
from snnconvert.runtime.operators import MatMul

#: leaf modules a prepared model may contain: each converts exactly (linear) or is a QCFS/op.
CONVERTIBLE_LEAVES: tuple[type, ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.modules.batchnorm._BatchNorm, QCFS, MatMul, nn.Softmax,
    nn.AvgPool2d, nn.AdaptiveAvgPool2d, FastAdaptiveAvgPool, nn.Identity, nn.Flatten, LayerScale,
    RandomSpikeMask,
)
CONTAINERS: tuple[type, ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _leaf_replacement(m: nn.Module, cfg: PrepareConfig) -> nn.Module | None:
    """The prepared form of a generic leaf module, or None to keep it."""
    if isinstance(m, (nn.ReLU, nn.GELU)):
        return QCFS(cfg.levels, cfg.threshold, channel_axis=1)
    if isinstance(m, nn.ReLU6):
        return QCFS(cfg.levels, 6.0, channel_axis=1)
    if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
        return ChannelBatchNorm.from_layernorm(m)
    if isinstance(m, LayerNorm2d):
        return layernorm2d_to_batchnorm(m)
    if isinstance(m, (nn.Dropout, DropPath)):
        return nn.Identity()
    if isinstance(m, nn.MaxPool2d):
        return nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
    if isinstance(m, nn.AdaptiveMaxPool2d):
        return nn.AdaptiveAvgPool2d(m.output_size)
    return None


def _rewrite(module: nn.Module, cfg: PrepareConfig, name: str, refused: list[tuple[str, str, str]]) -> nn.Module:
    """Prepare ``module`` recursively; instances a rule refuses are left as they are, in ``refused``."""
    rule = rule_for(module)
    reason = rule.check(module) if rule is not None and rule.check is not None else None
    if reason is not None:
        refused.append((name, type(module).__name__, reason))
        return module
    if rule is not None and rule.rewrite is not None:
        module = rule.rewrite(module, cfg)
    elif rule is None:
        leaf = _leaf_replacement(module, cfg)
        if leaf is not None:
            return leaf
    for child_name, child in list(module.named_children()):
        new = _rewrite(child, cfg, f"{name}.{child_name}" if name else child_name, refused)
        if new is not child:
            setattr(module, child_name, new)
    return module


def find_unconvertible(model: nn.Module) -> list[tuple[str, str, str]]:
    """Every module of a prepared model that has no spiking equivalent: ``(name, type, why)``."""
    problems = []
    for name, m in model.named_modules():
        rule = rule_for(m)
        reason = rule.check(m) if rule is not None and rule.check is not None else None
        if reason is None and rule is None:
            has_children = next(m.children(), None) is not None
            if has_children and not isinstance(m, CONTAINERS):
                reason = "its forward is not known to the converter (register an architecture rule)"
            elif not has_children and not isinstance(m, CONVERTIBLE_LEAVES):
                reason = "no spiking equivalent"
        if reason is not None:
            problems.append((name, type(m).__name__, reason))
    return problems


def prepare(model: nn.Module, config: PrepareConfig | None = None, inplace: bool = False) -> nn.Module:
    """Rewrite an ANN into its QCFS form, ready for training, calibration and conversion.

    Args:
        model: a timm Swin / ViT / DeiT, a timm or torchvision ResNet / VGG, or any model built
            from supported layers and registered blocks.
        config: levels, initial thresholds, MLP BatchNorm and spike masks (added last).
        inplace: modify ``model`` instead of a deep copy.

    Raises:
        UnsupportedLayersError: listing every module that cannot be rewritten.
    """
    cfg = config or PrepareConfig()
    if not inplace:
        model = copy.deepcopy(model)
    param = next(model.parameters(), None)
    training = model.training
    refused: list[tuple[str, str, str]] = []
    model = _rewrite(model, cfg, "", refused)
    inside_refused = tuple(f"{name}." for name, _, _ in refused if name)
    problems = refused + [p for p in find_unconvertible(model)
                          if p not in refused and not p[0].startswith(inside_refused)]
    if problems:
        raise UnsupportedLayersError(problems)
    if cfg.masks is not None:
        add_spike_masks(model, cfg.masks)
    if param is not None:
        model.to(param.device)
    return model.train(training)


def qcfs_modules(model: nn.Module) -> dict[str, QCFS]:
    """Every QCFS activation of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QCFS)}


def is_prepared(model: nn.Module) -> bool:
    """True when ``model`` holds QCFS activations (it went through :func:`prepare`)."""
    return any(isinstance(m, QCFS) for m in model.modules())


__all__ = ["prepare", "find_unconvertible", "qcfs_modules", "is_prepared", "CONVERTIBLE_LEAVES"]
