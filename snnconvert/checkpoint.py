"""Checkpoints: written atomically, loaded safely (``weights_only=True`` / safetensors).

An snnconvert checkpoint is a dict ``{"format": "snnconvert", "stage": …, "recipe": {…},
"prepare": {…}, "model": state_dict, …}``; stage is ``ann``, ``prepared``, ``converted`` or
``direct`` (a directly trained SNN, with its ``direct`` settings).
A plain state dict (e.g. timm weights) loads as stage ``ann``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from snnconvert.errors import CheckpointError

FORMAT = "snnconvert"
STAGES = ("ann", "prepared", "converted", "direct")


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], stage: str, recipe: dict,
                    prepare: dict | None = None, **extra: Any) -> None:
    """Write an snnconvert checkpoint atomically; ``extra`` holds JSON-able metadata or tensors."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    atomic_save({"format": FORMAT, "stage": stage, "recipe": json.dumps(recipe),
                 "prepare": json.dumps(prepare) if prepare is not None else None,
                 "model": state_dict, **extra}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely; a plain state dict is returned as ``{"stage": "ann", "model": …}``.

    Raises:
        CheckpointError: when the file is missing, corrupt or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds on corrupt files
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}). It may be "
                              "truncated or not a PyTorch file: re-create it (snnconvert train) or pass "
                              "another file.") from e
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("stage") not in STAGES or not isinstance(obj.get("model"), dict):
            raise CheckpointError(f"checkpoint {path} is damaged: bad stage or missing weights")
        obj = dict(obj)
        obj["recipe"] = json.loads(obj["recipe"])
        obj["prepare"] = json.loads(obj["prepare"]) if obj.get("prepare") else None
        return obj
    if isinstance(obj, dict):
        weights = obj.get("state_dict", obj.get("model", obj))
        if isinstance(weights, dict) and weights and all(isinstance(v, torch.Tensor) for v in weights.values()):
            return {"format": "state_dict", "stage": "ann", "recipe": None, "prepare": None, "model": weights}
    raise CheckpointError(f"{path} holds neither an snnconvert checkpoint nor a state dict of tensors")
