"""Checkpoints: written atomically, loaded safely (``weights_only=True`` / safetensors).

An snnconvert checkpoint is a dict ``{"format": "snnconvert", "layout": 2, "stage": …,
"recipe": {…}, "prepare": {…}, "model": state_dict, …}``; stage is ``ann``, ``prepared``,
``converted`` or ``direct`` (a directly trained SNN, with its ``direct`` settings).
A plain state dict (e.g. timm weights) loads as stage ``ann``.

Layout 2 names a prepared model's state as the graph converter does (``blocks.0.norm1`` for the
BatchNorm that replaced a LayerNorm, ``blocks.0.norm1_act`` for the QCFS after it); prepared
checkpoints of layout 1 (snnconvert 0.1's block rewrites) are renamed on loading.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snnconvert.errors import CheckpointError, first_line, shorten
from snnconvert.outputs import remove_stale_temporaries

FORMAT = "snnconvert"
LAYOUT = 2
STAGES = ("ann", "prepared", "converted", "direct")
#: layout 1 → 2 names of a prepared model's state (block rewrites → graph sites)
_LAYOUT_1_RENAMES = [
    (r"\.norm([12])\.norm\.", r".norm\1."), (r"\.norm([12])\.act\.", r".norm\1_act."),
    (r"\.mlp\.act1\.", ".mlp.act."), (r"\.mlp\.act2\.", ".mlp.fc2_act."),
    (r"\.mlp\.bn1\.", ".mlp.fc1_bn."), (r"\.mlp\.bn2\.", ".mlp.fc2_bn."),
    (r"\.reduction\.linear\.", ".reduction."), (r"\.reduction\.act\.", ".reduction_act."),
    (r"\.site\.", "."),
]


@dataclass(frozen=True)
class Job:
    """How a long job (training, a simulation) runs: with a progress bar or not, writing its
    progress atomically to ``checkpoint`` (None: nowhere) and, with ``resume``, going on from the
    progress it finds there after an interruption (else starting afresh)."""

    progress: bool = False
    checkpoint: str | Path | None = None
    resume: bool = True


def kept_checkpoints(path: str | Path, keep: int = 2) -> list[Path]:
    """The files of a run that keeps its last ``keep`` checkpoints, newest first: ``path``, then
    ``NAME.previous.pt``, ``NAME.previous2.pt`` …"""
    path = Path(path)
    return [path] + [path.with_name(f"{path.stem}.previous{'' if i == 1 else i}{path.suffix}") for i in range(1, keep)]


def atomic_save(obj: Any, path: str | Path, keep: int = 1) -> None:
    """``torch.save`` to a temporary file in the same folder (``.NAME.PID.*.tmp``), then rename over
    ``path``, keeping the ``keep - 1`` files it replaces as :func:`kept_checkpoints` (``path`` is
    never missing: the previous newest is linked to its new name first); first removes the
    temporary files of earlier writers of ``path`` that were killed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        _shift(kept_checkpoints(path, keep))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _shift(files: list[Path]) -> None:
    """Move each of ``files`` (newest first) to the next name, the last one out; the newest stays
    in place (as a hard link, or a copy where the file system has none) until it is replaced."""
    for newer, older in reversed(list(zip(files, files[1:]))):
        if not newer.exists():
            continue
        if newer is not files[0]:
            os.replace(newer, older)
            continue
        staged = older.with_name(f".{older.name}.{os.getpid()}.link.tmp")
        staged.unlink(missing_ok=True)
        try:
            os.link(newer, staged)
        except OSError:
            shutil.copy2(newer, staged)
        os.replace(staged, older)


def remove_previous(path: str | Path, keep: int) -> None:
    """Remove the older files :func:`kept_checkpoints` names (a finished run needs only its last)."""
    for older in kept_checkpoints(path, keep)[1:]:
        older.unlink(missing_ok=True)


def load_newest(path: str | Path, keep: int, fix: str, set_aside: bool = True
                ) -> tuple[dict[str, Any] | None, list[str]]:
    """The newest of a run's :func:`kept_checkpoints` that reads, and what to say of each newer
    one that did not (``set_aside``: each is renamed ``NAME.damaged``, so that the next save does
    not rotate it in as a previous one; one process of several does it). ``(None, [])`` when there
    is none; when none reads, the newest one's error (``fix``: what it advises).

    Raises:
        CheckpointError: when files exist and none of them can be read.
    """
    found = [p for p in kept_checkpoints(path, keep) if p.exists()]
    errors: list[tuple[Path, CheckpointError]] = []
    for candidate in found:
        try:
            ckpt = load_checkpoint(candidate, fix)
        except CheckpointError as e:
            errors.append((candidate, e))
            continue
        said = []
        for damaged, error in errors:
            aside = damaged.with_name(damaged.name + ".damaged")
            if set_aside:
                os.replace(damaged, aside)
            reason = str(error).replace(f"; {fix}", "")
            said.append(f"skipped {damaged.name} ({first_line(ValueError(reason), 200)}); kept it as {aside.name} and "
                        f"resumed from {candidate.name}")
        return ckpt, said
    if errors:
        raise errors[0][1]
    return None, []


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], stage: str, recipe: dict,
                    prepare: dict | None = None, keep: int = 1, **extra: Any) -> None:
    """Write an snnconvert checkpoint atomically, keeping the ``keep - 1`` it replaces
    (:func:`atomic_save`); ``extra`` holds JSON-able metadata or tensors."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    atomic_save({"format": FORMAT, "layout": LAYOUT, "stage": stage, "recipe": json.dumps(recipe),
                 "prepare": json.dumps(prepare) if prepare is not None else None,
                 "model": state_dict, **extra}, path, keep)


def load_checkpoint(path: str | Path, fix: str = "re-create it or pass another file") -> dict[str, Any]:
    """Read a checkpoint safely; a plain state dict is returned as ``{"stage": "ann", "model": …}``.
    ``fix`` is what an error advises for a file that cannot be read.

    Raises:
        CheckpointError: when the file is missing, corrupt or not a checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: pass the checkpoint file in it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a write that never finished; {fix}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch's notes on pickle protocols say nothing to a user
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds on corrupt files
        raise _unreadable(path, e, fix) from e
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("stage") not in STAGES or not isinstance(obj.get("model"), dict):
            raise CheckpointError(f"checkpoint {path} is damaged: bad stage or missing weights")
        obj = dict(obj)
        obj["recipe"] = json.loads(obj["recipe"])
        obj["prepare"] = json.loads(obj["prepare"]) if obj.get("prepare") else None
        _check_finite(obj["model"], path)
        return _migrated(obj, path)
    if isinstance(obj, dict):
        weights = obj.get("state_dict", obj.get("model", obj))
        if isinstance(weights, dict) and weights and all(isinstance(v, torch.Tensor) for v in weights.values()):
            _check_finite(weights, path)
            return {"format": "state_dict", "stage": "ann", "recipe": None, "prepare": None, "model": weights}
    raise CheckpointError(f"{path} holds neither an snnconvert checkpoint nor a state dict of tensors")


def _unreadable(path: Path, error: Exception, fix: str) -> CheckpointError:
    """What to say of a file torch cannot load with ``weights_only=True``: Python objects it
    refused to build (never built: nothing in the file ran), or a damaged or foreign file."""
    blocked = re.search(r"GLOBAL ([\w.]+)", str(error))
    if blocked:
        return CheckpointError(f"checkpoint {path} holds Python objects ({blocked.group(1)}), not just tensors; "
                               "snnconvert loads tensors only and ran none of it. If you trust its source, save "
                               "the weights alone (torch.save(model.state_dict(), FILE) or safetensors) and pass that")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))  # torch's text around it advises
    reason = detail.group(1).strip() if detail else first_line(error, 120)   # weights_only=False: not for us
    return CheckpointError(f"checkpoint {path} cannot be read ({reason}): it is truncated, damaged or not a PyTorch "
                           f"file; {fix}")


def _check_finite(weights: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights with NaN (anywhere) or ±inf (in weights, biases and thresholds): what a
    diverged training or a damaged file leaves, and what would make every result garbage."""
    bad = []
    for name, value in weights.items():
        if not value.is_floating_point() or bool(torch.isfinite(value).all()):
            continue
        nan = int(torch.isnan(value).sum())
        if nan or name.endswith((".weight", ".bias", "threshold")):
            bad.append(f"{name} ({nan} NaN, {int(torch.isinf(value).sum())} inf of {value.numel()})")
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite values in {len(bad)} tensor(s): {shorten(bad, 3)}; "
                              "a training that diverged (retrain with a lower --lr) or a damaged file")


def _migrated(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """A checkpoint of an earlier layout in the current one (prepared models are renamed; layout 1
    replaced max-pooling by average pooling, which its config now says)."""
    layout = ckpt.get("layout", 1)
    if layout == LAYOUT or ckpt["stage"] in ("ann", "direct"):
        return ckpt
    if ckpt["stage"] == "converted":
        raise CheckpointError(f"{path} is a converted model of snnconvert 0.1's layout: convert its prepared "
                              "checkpoint again (`snnconvert convert MODEL --checkpoint prepared.pt --out …`)")
    state = {}
    for key, value in ckpt["model"].items():
        for pattern, replacement in _LAYOUT_1_RENAMES:
            key = re.sub(pattern, replacement, key)
        state[key] = value
    prepare = {**(ckpt["prepare"] or {}), "max_pool": "avg", "keep_activations": []}
    return {**ckpt, "model": state, "prepare": prepare, "layout": LAYOUT, "migrated_from_layout": layout}
