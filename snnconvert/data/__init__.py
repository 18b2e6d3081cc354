"""Datasets (embedded Fashion-MNIST sample, Fashion-MNIST, MNIST, CIFAR, ImageFolder) and loaders."""
from snnconvert.data.datasets import (DATASET_NAMES, InputSpec, TensorImages, fit_images, load_dataset,
                                      make_loader)

__all__ = ["DATASET_NAMES", "InputSpec", "TensorImages", "fit_images", "load_dataset", "make_loader"]
