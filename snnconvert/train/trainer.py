"""Training of prepared (QCFS) models: AdamW, warmup + cosine schedule, label smoothing.

Checkpoints are written atomically every ``checkpoint_every`` steps and at each epoch end, with
the optimizer, schedule, position in the epoch and history, so a killed run resumes where it
stopped: each epoch's shuffle order derives from ``seed + epoch`` and the finished batches are skipped.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from snnconvert.checkpoint import load_checkpoint, save_checkpoint
from snnconvert.errors import CheckpointError
from snnconvert.runtime.simulator import evaluate


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`fit`.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: peak learning rate of AdamW.
        weight_decay: applied to weight matrices only (not biases, norms or thresholds).
        label_smoothing: of the cross-entropy target.
        warmup_epochs: linear warmup before the cosine decay (may be fractional).
        seed: seeds shuffling and initialization-free randomness.
        checkpoint_every: steps between mid-epoch checkpoints (0: epoch ends only).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs must be >= 0, batch_size >= 1 and lr > 0")


@dataclass
class TrainResult:
    """History of a run: one entry per finished epoch."""

    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: dict[str, int] | None = None
    seconds: float = 0.0


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def fit(model: nn.Module, train_set: Dataset, config: TrainConfig, val_loader: DataLoader | None = None,
        checkpoint: str | Path | None = None, checkpoint_meta: dict[str, Any] | None = None,
        resume: bool = True, device: str | torch.device = "cpu", progress: bool = True) -> TrainResult:
    """Train ``model`` on ``train_set`` with cross-entropy.

    Args:
        model: a prepared QCFS model (or any classifier).
        train_set: yields ``(image, label)``.
        config: hyper-parameters.
        val_loader: evaluated after each epoch (accuracy recorded in the history).
        checkpoint: file written atomically during training and resumed from when it exists.
        checkpoint_meta: ``stage``, ``recipe`` and ``prepare`` stored with the weights, and
            ``extra`` (JSON-able metadata such as the command line).
        resume: continue from ``checkpoint`` if it holds an unfinished run.
    """
    model.to(device)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(total, int(config.warmup_epochs * steps_per_epoch)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    result = TrainResult()
    epoch, start_batch = 0, 0
    meta = checkpoint_meta or {"stage": "prepared", "recipe": {}, "prepare": None}

    def save(epoch_: int, batch_: int) -> None:
        if checkpoint is None:
            return
        state = {"epoch": epoch_, "batch": batch_, "config": asdict(config), "history": result.history}
        if epoch_ < config.epochs:  # a finished run keeps no optimizer state: the file stays small
            state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
        save_checkpoint(checkpoint, model.state_dict(), meta["stage"], meta["recipe"], meta.get("prepare"),
                        train_state=state, **meta.get("extra", {}))

    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint)
        train_state = state.get("train_state")
        if train_state is None:
            raise CheckpointError(f"{checkpoint} exists but holds no training state; pass another --out "
                                  "or delete it to start afresh")
        if train_state["config"] != asdict(config):
            raise CheckpointError(f"{checkpoint} was written with other settings {train_state['config']}; "
                                  "use the same options to resume, or another output path")
        model.load_state_dict(state["model"])
        if "optimizer" in train_state:
            optimizer.load_state_dict(train_state["optimizer"])
            scheduler.load_state_dict(train_state["scheduler"])
        epoch, start_batch = train_state["epoch"], train_state["batch"]
        result.history = list(train_state["history"])
        result.resumed_from = {"epoch": epoch, "batch": start_batch}

    start = time.perf_counter()
    while epoch < config.epochs:
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed + epoch))
        loader = DataLoader(train_set, batch_size=config.batch_size,
                            sampler=order[start_batch * config.batch_size:].tolist())
        model.train()
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress,
                   initial=start_batch, total=steps_per_epoch)
        for batch, (images, labels) in enumerate(bar, start=start_batch):
            images, labels = images.to(device), labels.to(device)
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{running / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if config.checkpoint_every and (batch + 1) % config.checkpoint_every == 0 and batch + 1 < steps_per_epoch:
                save(epoch, batch + 1)
        entry = {"epoch": epoch + 1, "train_loss": running / max(1, seen)}
        if val_loader is not None:
            entry["val_accuracy"] = evaluate(model, val_loader, device=device)
            model.train()
        result.history.append(entry)
        if progress:
            tqdm.write(f"epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if k != "epoch"))
        epoch, start_batch = epoch + 1, 0
        save(epoch, 0)
    result.seconds = time.perf_counter() - start
    model.eval()
    return result
