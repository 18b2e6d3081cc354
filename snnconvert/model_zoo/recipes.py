"""The registered recipes: timm's pretrained transformers and CNNs, and the small models trained here."""
from __future__ import annotations

from snnconvert.model_zoo.registry import Recipe, register_recipe

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

# ImageNet models (weights from timm when online, or --checkpoint)
register_recipe(Recipe("swin_t", "swin_tiny_patch4_window7_224", description="Swin-T, ImageNet-1k"))
register_recipe(Recipe("swin_s", "swin_small_patch4_window7_224", description="Swin-S, ImageNet-1k"))
register_recipe(Recipe("vit_s", "vit_small_patch16_224", mean=(0.5,) * 3, std=(0.5,) * 3,
                       description="ViT-S/16, ImageNet-1k"))
register_recipe(Recipe("vit_b", "vit_base_patch16_224", mean=(0.5,) * 3, std=(0.5,) * 3,
                       description="ViT-B/16, ImageNet-1k"))
register_recipe(Recipe("deit_s", "deit_small_patch16_224", description="DeiT-S/16, ImageNet-1k"))
register_recipe(Recipe("resnet18", "resnet18", description="ResNet-18, ImageNet-1k"))
register_recipe(Recipe("vgg16", "vgg16", description="VGG-16, ImageNet-1k"))

# Small models for 28-32 px inputs, trained here on Fashion-MNIST
_FMNIST = dict(mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, levels=8, timesteps=64)
register_recipe(Recipe(
    "swin_nano", "swin_tiny_patch4_window7_224", input_size=(1, 32, 32), **_FMNIST,
    model_args=dict(img_size=32, patch_size=4, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                    mlp_ratio=2.0, in_chans=1, num_classes=10),
    checkpoint="swin_nano_fmnist.pt",
    description="Swin, 2 stages × 2 blocks, dim 32→64, 4×4 windows (shifted in stage 1), 4 px patches, 32 px"))
register_recipe(Recipe(
    "vit_nano", "vit_tiny_patch16_224", input_size=(1, 28, 28), **_FMNIST,
    model_args=dict(img_size=28, patch_size=4, embed_dim=48, depth=4, num_heads=3, mlp_ratio=2.0,
                    in_chans=1, num_classes=10),
    checkpoint="vit_nano_fmnist.pt",
    description="ViT, 4 blocks, dim 48, 3 heads, 7×7 patches of 4 px + class token, 28 px"))
register_recipe(Recipe(
    "resnet_nano", "resnet18", input_size=(1, 28, 28), **_FMNIST,
    model_args=dict(layers=(1, 1, 1, 1), in_chans=1, num_classes=10),
    description="ResNet with one basic block per stage, 28 px"))
