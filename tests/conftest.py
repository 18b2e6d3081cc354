"""Small models and data for CPU tests: fixed seeds, a few hundred samples at most."""
from __future__ import annotations

import timm
import torch
import pytest
from torch import nn
from torchvision.models import resnet as tv_resnet, vgg as tv_vgg
from timm.models import vgg as timm_vgg

from snnconvert.data import InputSpec, load_dataset, make_loader

SPEC_28 = InputSpec((1, 28, 28), (0.286,), (0.353,))
SPEC_32 = InputSpec((1, 32, 32), (0.286,), (0.353,))


def tiny_swin() -> nn.Module:
    return timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4, embed_dim=16,
                             depths=(2, 2), num_heads=(2, 2), mlp_ratio=2.0, in_chans=1, num_classes=10)


def tiny_vit() -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=7, embed_dim=24, depth=2, num_heads=2,
                             mlp_ratio=2.0, in_chans=1, num_classes=10)


def tiny_deit() -> nn.Module:
    return timm.create_model("deit_tiny_patch16_224", img_size=28, patch_size=7, embed_dim=24, depth=2, num_heads=2,
                             mlp_ratio=2.0, in_chans=1, num_classes=10, global_pool="avg")


def tiny_timm_resnet() -> nn.Module:
    return timm.create_model("resnet18", layers=(1, 1, 1, 1), in_chans=1, num_classes=10)


def tiny_tv_resnet() -> nn.Module:
    model = tv_resnet.ResNet(tv_resnet.Bottleneck, [1, 1, 1, 1], num_classes=10, width_per_group=16)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return model


def tiny_tv_vgg() -> nn.Module:
    model = tv_vgg.VGG(tv_vgg.make_layers([16, "M", 32, "M"], batch_norm=True), num_classes=10)
    model.features[0] = nn.Conv2d(1, 16, 3, padding=1)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))
    return model


def tiny_timm_vgg() -> nn.Module:
    return timm_vgg.VGG([16, "M", 32, "M"], num_classes=10, in_chans=1, mlp_ratio=0.01)


#: name → (factory, input spec); every registered architecture family appears once
ARCHITECTURES = {
    "swin": (tiny_swin, SPEC_32),
    "vit": (tiny_vit, SPEC_28),
    "deit": (tiny_deit, SPEC_28),
    "timm_resnet": (tiny_timm_resnet, SPEC_28),
    "tv_resnet": (tiny_tv_resnet, SPEC_28),
    "tv_vgg": (tiny_tv_vgg, SPEC_28),
    "timm_vgg": (tiny_timm_vgg, SPEC_28),
}


def images(spec: InputSpec, n: int = 64, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` embedded Fashion-MNIST images fitted to ``spec``."""
    loader = make_loader(load_dataset("embedded", split, spec), n)
    return next(iter(loader))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
