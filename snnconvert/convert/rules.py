"""Architecture rules: how ``prepare`` rewrites each known block and which BatchNorms fold.

A rule is keyed by exact module type. ``rewrite`` returns the prepared module (its children are
then prepared by the generic leaf mapping); a rule without ``rewrite`` marks a container whose
``forward`` is known to be convertible as it is. ``folds`` names (first, second) submodule pairs,
in data-flow order with only linear ops between them, where one side is a BatchNorm that
:func:`snnconvert.convert.fold.fold_batchnorms` merges into the other (a Linear or Conv).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable

from timm.layers import Mlp, PatchEmbed, LayerScale, SelectAdaptivePool2d, ClassifierHead
from timm.layers.attention import Attention
from timm.models import swin_transformer as timm_swin
from timm.models import vision_transformer as timm_vit
from timm.models import resnet as timm_resnet
from timm.models import vgg as timm_vgg
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

from snnconvert.convert.attention import SpikeAttention, SpikeWindowAttention
from snnconvert.convert.blocks import SpikeMlp, SpikeResidualBlock, then_qcfs
from snnconvert.convert.config import PrepareConfig

Pairs = Callable[[nn.Module], list[tuple[str, str]]]


def _no_pairs(_: nn.Module) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True)
class ArchitectureRule:
    """How ``prepare`` treats one module type.

    Attributes:
        name: short name shown by :func:`list_rules`.
        rewrite: ``(module, config) → prepared module``; None keeps the module (its forward is
            convertible) and only prepares its children.
        folds: ``module → [(first, second), …]`` BatchNorm fold pairs by submodule name.
        check: ``module → reason`` when this instance uses an unsupported option, else None.
    """

    name: str
    rewrite: Callable[[nn.Module, PrepareConfig], nn.Module] | None = None
    folds: Pairs = field(default=_no_pairs)
    check: Callable[[nn.Module], str | None] | None = None


_RULES: dict[type, ArchitectureRule] = {}


def register_rule(types: type | tuple[type, ...], rule: ArchitectureRule) -> None:
    """Register ``rule`` for each of ``types`` (exact types; subclasses need their own rule)."""
    for t in types if isinstance(types, tuple) else (types,):
        _RULES[t] = rule


def rule_for(module: nn.Module) -> ArchitectureRule | None:
    """The rule registered for ``type(module)``, if any."""
    return _RULES.get(type(module))


def list_rules() -> list[str]:
    """``"TypeName: rule name"`` for every registered type."""
    return sorted(f"{t.__module__}.{t.__qualname__}: {r.name}" for t, r in _RULES.items())


def _fixed(*pairs: tuple[str, str]) -> Pairs:
    return lambda _m: list(pairs)


# --- transformers (timm) ---------------------------------------------------------------------

def _prenorm_block(block: nn.Module, cfg: PrepareConfig) -> nn.Module:
    """timm ViT ``Block`` / Swin block: QCFS after both norms, spiking attention and MLP."""
    block.norm1 = then_qcfs("norm", block.norm1, cfg.levels, cfg.threshold)
    block.norm2 = then_qcfs("norm", block.norm2, cfg.levels, cfg.threshold)
    return block


def _attention_check(attn: nn.Module) -> str | None:
    extras = [n for n in ("q_norm", "k_norm", "norm")
              if not isinstance(getattr(attn, n, None), (nn.Identity, type(None)))]
    if getattr(attn, "gate", None) is not None:
        extras.append("gate")
    return f"attention options {extras} have no spiking equivalent" if extras else None


def _mlp_rewrite(mlp: nn.Module, cfg: PrepareConfig) -> nn.Module:
    return SpikeMlp(mlp.fc1, mlp.fc2, cfg.levels, cfg.threshold, norm=mlp.norm, batchnorm=cfg.mlp_batchnorm)


def _merging_rewrite(merge: nn.Module, cfg: PrepareConfig) -> nn.Module:
    merge.reduction = then_qcfs("linear", merge.reduction, cfg.levels, cfg.threshold)
    return merge


def _pool_check(pool: nn.Module) -> str | None:
    kind = getattr(pool, "pool_type", "avg") or ""
    return None if kind in ("", "avg", "fast", "fastavg") else f"global pool '{kind}' is not average pooling"


def _vit_check(vit: nn.Module) -> str | None:
    if getattr(vit, "attn_pool", None) is not None:
        return "attention pooling head is not supported"
    return None


register_rule(timm_vit.Block, ArchitectureRule("pre-norm ViT block", rewrite=_prenorm_block))
register_rule(timm_swin.SwinTransformerBlock, ArchitectureRule("Swin block", rewrite=_prenorm_block))
register_rule(Attention, ArchitectureRule(
    "ViT attention → SpikeAttention", check=_attention_check,
    rewrite=lambda a, c: SpikeAttention.from_timm(a, c.levels, c.threshold)))
register_rule(timm_swin.WindowAttention, ArchitectureRule(
    "Swin window attention → SpikeWindowAttention",
    rewrite=lambda a, c: SpikeWindowAttention.from_timm(a, c.levels, c.threshold)))
register_rule(Mlp, ArchitectureRule("MLP → SpikeMlp", rewrite=_mlp_rewrite))
register_rule(timm_swin.PatchMerging, ArchitectureRule(
    "Swin patch merging", rewrite=_merging_rewrite, folds=_fixed(("norm", "reduction.linear"))))
register_rule(PatchEmbed, ArchitectureRule("patch embedding", folds=_fixed(("proj", "norm"))))
register_rule(timm_swin.SwinTransformerStage, ArchitectureRule("Swin stage"))
register_rule(timm_swin.SwinTransformer, ArchitectureRule("Swin Transformer", folds=_fixed(("norm", "head.fc"))))
register_rule(timm_vit.VisionTransformer, ArchitectureRule(
    "Vision Transformer", check=_vit_check, folds=_fixed(("norm", "head"), ("fc_norm", "head"))))
register_rule(ClassifierHead, ArchitectureRule("classifier head"))
register_rule(SelectAdaptivePool2d, ArchitectureRule("global pool", check=_pool_check))
register_rule(LayerScale, ArchitectureRule("layer scale (per-channel multiply)"))

# --- prepared modules (our own) ----------------------------------------------------------------

register_rule(SpikeAttention, ArchitectureRule("spiking attention"))
register_rule(SpikeWindowAttention, ArchitectureRule("spiking window attention"))
register_rule(SpikeMlp, ArchitectureRule("spiking MLP", folds=_fixed(("fc1", "bn1"), ("fc2", "bn2"))))
register_rule(SpikeResidualBlock, ArchitectureRule(
    "spiking residual block", folds=lambda b: [(f"convs.{i}", f"bns.{i}") for i in range(len(b.convs))]))

# --- CNNs ------------------------------------------------------------------------------------


def _tv_residual_rewrite(block: nn.Module, cfg: PrepareConfig) -> nn.Module:
    """torchvision Basic/Bottleneck reuse one ReLU module; give each use its own QCFS."""
    n = 3 if isinstance(block, tv_resnet.Bottleneck) else 2
    convs = [getattr(block, f"conv{i}") for i in range(1, n + 1)]
    bns = [getattr(block, f"bn{i}") for i in range(1, n + 1)]
    return SpikeResidualBlock(convs, bns, block.downsample, cfg.levels, cfg.threshold)


def _timm_block_check(block: nn.Module) -> str | None:
    if getattr(block, "se", None) is not None:
        return "squeeze-excitation (sigmoid gating) has no spiking equivalent"
    return None


def _conv_bn_pairs(block: nn.Module) -> list[tuple[str, str]]:
    return [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(block, f"conv{i}") and hasattr(block, f"bn{i}")]


register_rule((tv_resnet.BasicBlock, tv_resnet.Bottleneck),
              ArchitectureRule("torchvision residual block → SpikeResidualBlock", rewrite=_tv_residual_rewrite))
register_rule(tv_resnet.ResNet, ArchitectureRule("torchvision ResNet", folds=_fixed(("conv1", "bn1"))))
register_rule(tv_vgg.VGG, ArchitectureRule("torchvision VGG"))
register_rule((timm_resnet.BasicBlock, timm_resnet.Bottleneck),
              ArchitectureRule("timm residual block", folds=_conv_bn_pairs, check=_timm_block_check))
register_rule(timm_resnet.ResNet, ArchitectureRule("timm ResNet", folds=_conv_bn_pairs))
register_rule(timm_vgg.VGG, ArchitectureRule("timm VGG"))
register_rule(timm_vgg.ConvMlp, ArchitectureRule("timm VGG pre-logits"))

__all__ = ["ArchitectureRule", "register_rule", "rule_for", "list_rules"]
