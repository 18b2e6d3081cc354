"""Datasets: IDX reading, the embedded sample, input fitting and errors that name the layout."""
import gzip

import numpy as np
import pytest
import torch

from snnconvert.data import InputSpec, fit_images, load_dataset
from snnconvert.data.idx import read_idx
from snnconvert.errors import DataError

from conftest import SPEC_28, SPEC_32


def _write_idx(path, array: np.ndarray, code: int = 0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_folder_loads(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28))
    labels = np.arange(5)
    for split in ("train", "t10k"):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    ds = load_dataset(str(tmp_path), "test", SPEC_28)
    assert len(ds) == 5
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and y == 3
    assert torch.allclose(x * 0.353 + 0.286, torch.from_numpy(images[3]).float()[None] / 255, atol=1e-5)


def test_truncated_idx_is_named(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(path, "wb") as f:
        f.write(header + b"\0" * 100)
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_embedded_sample_is_balanced_and_fits_models():
    test = load_dataset("embedded", "test", SPEC_32)
    assert len(test) == 1000
    labels = torch.stack([test[i][1] for i in range(len(test))])
    assert torch.bincount(labels).min() >= 80
    x, _ = test[0]
    assert x.shape == (1, 32, 32)
    # padding is zero intensity, i.e. normalized background
    assert torch.allclose(x[0, 0, 0], torch.tensor((0 - 0.286) / 0.353))


def test_fit_images_channels_and_resize():
    x = torch.rand(2, 1, 28, 28)
    rgb = fit_images(x, InputSpec((3, 64, 64), (0.5,) * 3, (0.5,) * 3))
    assert rgb.shape == (2, 3, 64, 64)
    with pytest.raises(DataError, match="channel"):
        fit_images(torch.rand(1, 2, 8, 8), InputSpec((3, 8, 8), (0.5,) * 3, (0.5,) * 3))


def test_bad_paths_name_the_layout(tmp_path):
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet-22k", "test", SPEC_28)
    with pytest.raises(DataError, match="ImageFolder tree"):
        load_dataset(str(tmp_path), "test", SPEC_28)
    with pytest.raises(DataError, match="local root"):
        load_dataset("cifar10", "test", SPEC_28)


def _image_folder(root, size=(50, 40)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_image_folder_uses_the_models_timm_data_config(tmp_path):
    """ImageNet-layout folders get timm's eval transform for the recipe (resize 1/crop_pct, bicubic, crop)."""
    from PIL import Image
    from timm.data import create_transform

    from snnconvert.model_zoo import get_recipe

    _image_folder(tmp_path)
    recipe = get_recipe("vgg16")  # timm: bilinear, crop_pct 0.875, ImageNet mean/std
    assert (recipe.interpolation, recipe.crop_pct) == ("bilinear", 0.875)
    ds = load_dataset(str(tmp_path), "test", recipe.input_spec)
    assert len(ds) == 4 and ds.classes == ["cat", "dog"]
    x, y = ds[3]
    expected = create_transform((3, 224, 224), interpolation="bilinear", mean=recipe.mean, std=recipe.std,
                                crop_pct=0.875)(Image.open(tmp_path / "val" / "dog" / "1.png").convert("RGB"))
    assert y == 1 and torch.equal(x, expected)
    train = load_dataset(str(tmp_path), "train", get_recipe("vit_s").input_spec, augment=True)
    assert train[0][0].shape == (3, 224, 224)


def test_torchvision_fashion_mnist_root_is_found(tmp_path):
    """A torchvision root (ROOT/FashionMNIST/raw/*-ubyte.gz) loads like the Debian files."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(1).integers(0, 255, (3, 28, 28))
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([4, 5, 6]))
    ds = load_dataset(str(tmp_path), "test", SPEC_28)
    assert len(ds) == 3 and int(ds[2][1]) == 6


def test_empty_image_folder_is_named(tmp_path):
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="ImageFolder tree"):
        load_dataset(str(tmp_path), "test", SPEC_28)
