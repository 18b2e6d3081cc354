"""Does a dataset fit a model? Its images' channels and size, and its classes.

Images are fitted to the model as :func:`~snnconvert.data.datasets.fit_images` and timm's
transforms do: grayscale replicated to three channels, small images zero-padded by at most a
quarter of the model's side (MNIST's 28 px into 32), large ones (and photographs) resized. Beyond
that — a 28 px image padded into a 224 px model, a 10-class dataset scored against 1,000 outputs —
the numbers would mean nothing, so the data is refused with the options that adapt the model.
"""
from __future__ import annotations

from torch.utils.data import Dataset

from snnconvert.data.datasets import InputSpec, TensorImages
from snnconvert.errors import DataError

#: the largest zero-padding allowed, as a fraction of the model's side
MAX_PADDING = 0.25


def _classes(dataset: Dataset) -> tuple[int, bool]:
    """``(classes, labelled in the model's class space already)``."""
    if isinstance(dataset, TensorImages):
        return dataset.num_classes, False
    return len(getattr(dataset, "classes", [])), getattr(dataset, "label_space", "folders") == "model"


def check_fit(dataset: Dataset, spec: InputSpec, data: str, model: str) -> None:
    """Refuse ``dataset`` when its images or classes do not fit the model ``spec`` describes.

    Raises:
        DataError: saying what does not fit and how to build the model for the data.
    """
    c, h, w = spec.size
    adapt = f"pass --input-size C,H,W (and --num-classes N) to build {model} for this data"
    if isinstance(dataset, TensorImages):
        channels, height, width = (1, *dataset.images.shape[-2:]) if dataset.images.dim() == 3 \
            else dataset.images.shape[1:]
        if channels != c and not (channels == 1 and c == 3):
            raise DataError(f"{data} has {channels}-channel images, {model} takes {c} channels: {adapt}")
        padding = max((h - height) / h, (w - width) / w)
        if padding > MAX_PADDING:
            raise DataError(f"{data} has {height}×{width} images, {model} takes {h}×{w}: they would be zero-padded "
                            f"({padding:.0%} of the side) and the results would mean nothing; {adapt}")
    classes, mapped = _classes(dataset)
    if spec.num_classes is not None and not mapped and classes != spec.num_classes:
        raise DataError(f"{data} has {classes} classes, {model} predicts {spec.num_classes}: pass --num-classes "
                        f"{classes} to build {model} with a new {classes}-class head (train it: --epochs), or, for "
                        f"an ImageFolder of some of {model}'s classes, --class-map FILE (the model's class names "
                        "in output order, one per line)")
