"""Datasets by name or path, with the model's input size and normalization.

``--data`` accepts a name (``embedded``, ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``)
or a directory: MNIST-format IDX files, a CIFAR python folder, or an ImageFolder tree
(``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg``, the ImageNet layout).
"""
from __future__ import annotations

import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from snnconvert import distributed
from snnconvert.data.idx import find_idx_pair, read_idx
from snnconvert.errors import DataError, first_line, shorten

#: Debian's ``dataset-fashion-mnist`` package installs here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED_SAMPLE = "fashion_mnist_sample.npz"
DATASET_NAMES = ("embedded", "fashion-mnist", "mnist", "cifar10", "cifar100")


@dataclass(frozen=True)
class InputSpec:
    """What a model expects of its data (its timm data config): ``(C, H, W)``, per-channel
    normalization, for photographs the resize interpolation and centre-crop fraction of
    evaluation; and what it predicts: ``num_classes`` and, when known, the class names in the
    order of its outputs (an ImageFolder's folders are labelled through them)."""

    size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    num_classes: int | None = None
    classes: tuple[str, ...] | None = None
    scale: float = 1.0
    channel_order: str = "rgb"


def fit_images(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``[N, C, H, W]`` floats in [0, 1] → the model's channels, size and normalization.

    Smaller images are zero-padded to the centre (MNIST 28 → 32), larger ones resized.
    """
    c, h, w = spec.size
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise DataError(f"cannot map {x.shape[1]}-channel images to a {c}-channel model")
    if x.shape[-2:] != (h, w):
        if x.shape[-2] <= h and x.shape[-1] <= w:
            top, left = (h - x.shape[-2]) // 2, (w - x.shape[-1]) // 2
            x = F.pad(x, (left, w - x.shape[-1] - left, top, h - x.shape[-2] - top))
        else:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return normalize(x, spec)


def normalize(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``[N, C, H, W]`` pixels in [0, 1] as the model takes them: ``(x · scale − mean) / std``,
    channels reversed first for a BGR model."""
    if spec.channel_order == "bgr":
        x = x.flip(1)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (x * spec.scale - mean) / std


class TensorImages(Dataset):
    """Small image sets held in memory as uint8 ``[N, C, H, W]``; fitted to the model per item.

    With ``augment``, training images get a random shift of up to 2 px and a horizontal flip.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, spec: InputSpec, augment: bool = False):
        if images.ndim == 3:
            images = images[:, None]
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.spec = spec
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i: i + 1].float() / 255.0
        if self.augment:
            dy, dx = torch.randint(-2, 3, (2,)).tolist()
            x = torch.roll(F.pad(x, (2, 2, 2, 2)), shifts=(dy, dx), dims=(2, 3))[..., 2:-2, 2:-2]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return fit_images(x, self.spec)[0], self.labels[i]

    def subset(self, n: int) -> TensorImages:
        """The first ``n`` samples (of the same classes)."""
        subset = TensorImages(self.images[:n].numpy(), self.labels[:n].numpy(), self.spec, self.augment)
        subset.num_classes = self.num_classes
        return subset


def _embedded(split: str, spec: InputSpec, augment: bool) -> TensorImages:
    with resources.files("snnconvert.data").joinpath("embedded", EMBEDDED_SAMPLE).open("rb") as f:
        arrays = np.load(f)
        return TensorImages(arrays[f"{split}_images"], arrays[f"{split}_labels"], spec, augment)


def _idx(root: Path, split: str, spec: InputSpec, augment: bool) -> TensorImages | None:
    pair = find_idx_pair(root, split)
    if pair is None:
        return None
    images, labels = (read_idx(p) for p in pair)
    if len(images) != len(labels):
        raise DataError(f"{pair[0]} has {len(images)} images but {pair[1]} has {len(labels)} labels")
    return TensorImages(images, labels, spec, augment)


def _torchvision(kind: str, root: Path, split: str, spec: InputSpec, augment: bool) -> Dataset:
    """CIFAR or ImageFolder data through timm's transforms for the model's data config (train:
    random-resized crop, flip, colour jitter; eval: resize by ``1/crop_pct`` and centre crop).
    Models with other than 3 channels get the images fitted as :func:`fit_images` does."""
    from timm.data import create_transform
    from torchvision import datasets, transforms

    train = split == "train"
    if spec.size[0] == 3 and spec.scale == 1 and spec.channel_order == "rgb":
        tf = create_transform(spec.size, is_training=augment, interpolation=spec.interpolation,
                              mean=spec.mean, std=spec.std, crop_pct=spec.crop_pct)
    elif spec.size[0] == 3:  # timm's resizing and cropping, then this module's scale, order and normalization
        tf = transforms.Compose([create_transform(spec.size, is_training=augment, interpolation=spec.interpolation,
                                                  mean=(0.0,) * 3, std=(1.0,) * 3, crop_pct=spec.crop_pct),
                                 transforms.Lambda(lambda x: normalize(x[None], spec)[0])])
    else:
        steps = [transforms.RandomHorizontalFlip()] if augment else []
        tf = transforms.Compose([*steps, transforms.ToTensor(), transforms.Lambda(lambda x: fit_images(x[None], spec)[0])])
    try:
        if kind == "cifar10":
            return datasets.CIFAR10(str(root), train=train, transform=tf, download=False)
        if kind == "cifar100":
            return datasets.CIFAR100(str(root), train=train, transform=tf, download=False)
        folder = root / ("train" if train else "val")
        images = datasets.ImageFolder(str(folder if folder.is_dir() else root), transform=tf, loader=_load_image)
    except (RuntimeError, FileNotFoundError) as e:
        raise DataError(f"{kind} data not found under {root} ({first_line(e, 150)}). Expected an ImageFolder tree "
                        "ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg, or a torchvision CIFAR root") from e
    return labelled_as_the_model(_readable(images), spec)


#: leave out the image files that cannot be read (listed in a warning) instead of refusing the data
SKIP_BAD_FILES: ContextVar[bool] = ContextVar("skip_bad_files", default=False)


def _readable(folder):
    """``folder`` (an ImageFolder) once every file was found to open as an image; files that do not
    are refused, all listed, or left out under :data:`SKIP_BAD_FILES`."""
    from PIL import Image, UnidentifiedImageError

    bad = []
    for path, _ in folder.samples:
        try:
            with Image.open(path) as image:
                image.verify()
        except UnidentifiedImageError:
            bad.append((path, "not an image"))
        except Exception as e:  # PIL raises many kinds on damaged images
            bad.append((path, first_line(e, 60)))
    if not bad:
        return folder
    listed = shorten([f"{path} ({why})" for path, why in bad], 3)
    if not SKIP_BAD_FILES.get():
        raise DataError(f"{len(bad)} of {len(folder.samples)} files under {folder.root} are not readable images: "
                        f"{listed}. Remove or replace them, or pass --skip-bad-files to leave them out")
    warnings.warn(f"left out {len(bad)} of {len(folder.samples)} files under {folder.root} that are not readable "
                  f"images: {listed}", stacklevel=2)
    gone = {path for path, _ in bad}
    folder.samples = [(path, label) for path, label in folder.samples if path not in gone]
    folder.imgs, folder.targets = folder.samples, [label for _, label in folder.samples]
    return folder


def _load_image(path: str):
    """An RGB image; a file that stops decoding half-way is named."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as e:
        raise DataError(f"image {path} cannot be decoded ({first_line(e, 80)}): replace or remove it") from e


def labelled_as_the_model(folder, spec: InputSpec):
    """An ImageFolder whose labels are the model's class indices: through ``spec.classes`` (the
    model's class names in order) or, for a 1000-class model whose folders are ImageNet synsets
    (``n01440764`` …), timm's ImageNet order. Otherwise folders are labelled 0, 1, … as sorted
    (``folder.label_space`` says which)."""
    from timm.data import ImageNetInfo

    names = spec.classes
    if names is None and spec.num_classes == 1000:
        synsets = ImageNetInfo().label_names()
        names = tuple(synsets) if set(folder.classes) <= set(synsets) else None
    folder.label_space = "folders"
    if names is None:
        return folder
    index = {name: i for i, name in enumerate(names)}
    unknown = [c for c in folder.classes if c not in index]
    if unknown:
        raise DataError(f"{len(unknown)} class folders of {folder.root} are not among the model's "
                        f"{len(names)} classes: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}; "
                        "fix the folder names or the --class-map file")
    folder.samples = [(path, index[folder.classes[label]]) for path, label in folder.samples]
    folder.imgs, folder.targets = folder.samples, [label for _, label in folder.samples]
    folder.label_space = "model"
    return folder


def native_size(data: str) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of a dataset's images held in memory (IDX, the embedded sample); None for
    photographs, whose size is the model's choice."""
    found = load_dataset(data, "test", InputSpec((1, 1, 1), (0.0,), (1.0,)))
    if not isinstance(found, TensorImages):
        return None
    return (1, *found.images.shape[-2:]) if found.images.dim() == 3 else tuple(found.images.shape[1:])


def load_dataset(data: str, split: str, spec: InputSpec, augment: bool = False) -> Dataset:
    """The ``split`` ('train' or 'test') of a dataset given by name or directory.

    Raises:
        DataError: naming the expected layout when the path is wrong or empty.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    name = data.lower().replace("_", "-")
    if name == "embedded":
        return _embedded(split, spec, augment)
    if name in ("fashion-mnist", "fmnist"):
        found = _idx(DEBIAN_FASHION_MNIST, split, spec, augment)
        if found is None:
            raise DataError(f"Fashion-MNIST not found in {DEBIAN_FASHION_MNIST}. Install it with "
                            "`apt-get install dataset-fashion-mnist`, or pass --data DIR holding "
                            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
                            "and t10k-labels-idx1-ubyte.gz")
        return found
    if name in ("mnist", "cifar10", "cifar100"):
        raise DataError(f"{name} needs a local root: pass --data DIR (a torchvision root or, for MNIST, "
                        "a folder with the IDX files); nothing is downloaded")
    root = Path(data).expanduser()
    if not root.is_dir():
        raise DataError(f"unknown dataset {data!r}: use one of {', '.join(DATASET_NAMES)} or a directory")
    found = _idx(root, split, spec, augment)
    if found is not None:
        return found
    if (root / "cifar-10-batches-py").is_dir():
        return _torchvision("cifar10", root, split, spec, augment)
    if (root / "cifar-100-python").is_dir():
        return _torchvision("cifar100", root, split, spec, augment)
    if any(p.is_dir() for p in root.iterdir()):
        return _torchvision("folder", root, split, spec, augment)
    raise DataError(f"{root} holds no dataset. Expected one of: MNIST-format IDX files "
                    "(train-images-idx3-ubyte[.gz] …), cifar-10-batches-py/ or cifar-100-python/, "
                    "or an ImageFolder tree ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg")


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                limit: int | None = None) -> DataLoader:
    """A DataLoader over the first ``limit`` samples (all when None), in a seeded shuffle if asked.

    Under torchrun each process gets its share (:func:`snnconvert.distributed.shard`) of the
    same ordering, so the processes together see exactly what one process would.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist() if shuffle \
        else list(range(len(dataset)))
    if limit is not None:
        order = [i for i in order if i < limit] if shuffle else order[:limit]
    return DataLoader(torch.utils.data.Subset(dataset, distributed.shard(order)), batch_size=batch_size)
