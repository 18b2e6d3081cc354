"""The architectures conversion is checked on: 23 timm and 5 torchvision models at tiny widths.

Each is the real architecture class (its blocks, attention, norms, activations, shape-dependent
code) with fewer and narrower layers, so that every one prepares, converts and simulates on a CPU
in seconds. ``tests/test_architectures.py`` and ``benchmarks/architecture_coverage.py`` run them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import timm
import torchvision.models as tv
from torch import nn


@dataclass(frozen=True)
class Architecture:
    """A model to build for coverage checks.

    Attributes:
        name: the timm name, or ``torchvision.<name>``.
        build: ``() → model`` with random weights and 10 classes.
        input_size: ``(C, H, W)`` it takes.
    """

    name: str
    build: Callable[[], nn.Module]
    input_size: tuple[int, int, int] = (3, 32, 32)


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


def _tv(factory: Callable[..., nn.Module], **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: factory(num_classes=10, **kwargs)


def _caformer() -> nn.Module:
    """caformer_s18's blocks (separable-conv then attention token mixers, StarReLU, no-bias LayerNorms)."""
    from timm.models.metaformer import Attention, LayerNorm2dNoBias, LayerNormNoBias, MetaFormer, SepConv

    return MetaFormer(depths=(1, 1, 1, 1), dims=(16, 32, 64, 64), token_mixers=[SepConv, SepConv, Attention, Attention],
                      norm_layers=[LayerNorm2dNoBias] * 2 + [LayerNormNoBias] * 2, num_classes=10)


def _resmlp() -> nn.Module:
    """resmlp_12_224's blocks (Affine norms: β + α·x, token-mixing Linear, GELU MLP)."""
    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

    return MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=32, mlp_ratio=4,
                    block_layer=ResBlock, norm_layer=Affine)


def _tv_vgg() -> nn.Module:
    model = tv.VGG(tv.vgg.make_layers([16, "M", 32, "M", 32, "M"], batch_norm=True), num_classes=10)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))
    return model


_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
_SWIN = dict(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 2))
_STAGES4 = dict(depths=(1, 1, 1, 1))

ARCHITECTURES: list[Architecture] = [
    Architecture("vit_tiny_patch16_224", _timm("vit_tiny_patch16_224", **_VIT)),
    Architecture("deit_tiny_patch16_224", _timm("deit_tiny_patch16_224", **_VIT)),
    Architecture("deit_tiny_distilled_patch16_224", _timm("deit_tiny_distilled_patch16_224", **_VIT)),
    Architecture("swin_tiny_patch4_window7_224", _timm("swin_tiny_patch4_window7_224", **_SWIN)),
    Architecture("swinv2_tiny_window8_256", _timm("swinv2_tiny_window8_256", **_SWIN)),
    Architecture("eva02_tiny_patch14_224", _timm("eva02_tiny_patch14_224", **_VIT)),
    Architecture("beit_base_patch16_224", _timm("beit_base_patch16_224", **_VIT)),
    Architecture("pvt_v2_b0", _timm("pvt_v2_b0", embed_dims=(8, 16, 24, 32), num_heads=(1, 1, 1, 1),
                                    mlp_ratios=(2, 2, 2, 2), **_STAGES4)),
    Architecture("levit_128s", _timm("levit_128s", img_size=64, embed_dim=(16, 24, 32), key_dim=8, depth=(1, 1, 1),
                                     num_heads=(2, 2, 2)), (3, 64, 64)),
    Architecture("mobilevit_xxs", _timm("mobilevit_xxs"), (3, 64, 64)),
    Architecture("convnext_atto", _timm("convnext_atto", dims=(8, 16, 24, 32), **_STAGES4)),
    Architecture("resnet18", _timm("resnet18", layers=(1, 1, 1, 1), channels=(16, 32, 64, 128))),
    Architecture("resnet50", _timm("resnet50", layers=(1, 1, 1, 1), channels=(8, 16, 32, 64))),
    Architecture("vgg16", _timm("vgg16", mlp_ratio=0.05)),
    Architecture("regnetx_002", _timm("regnetx_002")),
    Architecture("densenet121", _timm("densenet121", growth_rate=8, block_config=(2, 2))),
    Architecture("mobilenetv2_100", _timm("mobilenetv2_100")),
    Architecture("tf_efficientnet_lite0", _timm("tf_efficientnet_lite0")),
    Architecture("efficientnet_b0", _timm("efficientnet_b0")),
    Architecture("mobilenetv3_small_100", _timm("mobilenetv3_small_100")),
    Architecture("efficientvit_b0", _timm("efficientvit_b0", widths=(8, 16, 32, 64, 128), depths=(1, 1, 1, 2, 2),
                                          head_dim=16, head_widths=(256, 320)), (3, 64, 64)),
    Architecture("caformer_s18", _caformer, (3, 64, 64)),
    Architecture("resmlp_12_224", _resmlp),
    Architecture("torchvision.resnet18", _tv(tv.ResNet, block=tv.resnet.BasicBlock, layers=[1, 1, 1, 1])),
    Architecture("torchvision.vgg11_bn", _tv_vgg),
    Architecture("torchvision.mobilenet_v3_small", _tv(tv.mobilenet_v3_small)),
    Architecture("torchvision.vit_b_16", _tv(tv.VisionTransformer, image_size=32, patch_size=8, num_layers=2,
                                             num_heads=2, hidden_dim=32, mlp_dim=64)),
    Architecture("torchvision.swin_t", _tv(tv.SwinTransformer, patch_size=[4, 4], embed_dim=16, depths=[2, 2],
                                           num_heads=[2, 2], window_size=[4, 4])),
]


def get_architecture(name: str) -> Architecture:
    return next(a for a in ARCHITECTURES if a.name == name)
