"""Read MNIST-format IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from snnconvert.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (``magic = 0, 0, dtype, ndim``; big-endian sizes)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}. Re-install or re-download the dataset.") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims).copy()  # writable, detached from the file buffer


def find_idx_pair(root: Path, split: str) -> tuple[Path, Path] | None:
    """``(images, labels)`` IDX files of ``split`` ('train' or 'test') under ``root``, if present."""
    prefix = "train" if split == "train" else "t10k"
    for folder in (root, root / "raw", root / "FashionMNIST" / "raw", root / "MNIST" / "raw"):
        for ext in (".gz", ""):
            images = folder / f"{prefix}-images-idx3-ubyte{ext}"
            labels = folder / f"{prefix}-labels-idx1-ubyte{ext}"
            if images.exists() and labels.exists():
                return images, labels
    return None
