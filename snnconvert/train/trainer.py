"""Training and distillation fine-tuning: AdamW, warmup + cosine schedule, label smoothing.

One loop serves training from scratch, training the original ANN, and fine-tuning a prepared
model against a teacher (:class:`DistillationLoss`). Checkpoints are written atomically every
``checkpoint_every`` steps and at each epoch end, with the optimizer, schedule, position in the
epoch and history, so a killed run resumes where it stopped: each epoch's shuffle order derives
from ``seed + epoch`` and the finished batches are skipped. The last ``keep_checkpoints`` are kept
while the run goes on (``NAME.previous.pt`` …), and a resume takes the newest one that reads: a
newest file damaged by a crash costs the steps since the one before, not the run.

Under torchrun every global batch of ``batch_size`` images is split evenly across the processes
(DistributedDataParallel averages the gradients), so a run means the same with any number of
processes and can resume with another number; only rank 0 writes checkpoints.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from snnconvert import distributed
from snnconvert.checks import check_fields
from snnconvert.checkpoint import Job, load_newest, remove_previous, save_checkpoint
from snnconvert.errors import ArgumentError, CheckpointError, first_line
from snnconvert.runtime.simulator import evaluate
from snnconvert.train.distill import DistillationLoss


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
        keep_checkpoints: checkpoints kept while the run goes on, the newest and the ones before it
            (``NAME.previous.pt`` …; a finished run keeps its last one only). Not a setting of the
            run: a resume may change it.
        distill_alpha: weight α of distillation from the teacher (0: cross-entropy only).
        temperature: τ of the distillation softmax.
        train_samples: train on this many images of the training set (a subset fixed by ``seed``);
            None: all of them.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    distill_alpha: float = 0.0
    temperature: float = 2.0
    train_samples: int | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ArgumentError("epochs must be >= 0, batch_size >= 1 and lr > 0")
        if self.keep_checkpoints < 1:
            raise ArgumentError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.train_samples is not None and self.train_samples < 1:
            raise ArgumentError(f"train_samples must be >= 1, got {self.train_samples}")
        DistillationLoss(self.distill_alpha, self.temperature)  # validates both

    def same_run(self, stored: dict[str, Any]) -> bool:
        """Whether ``stored`` (a checkpoint's ``asdict`` of a config) trains the same run: every
        setting equal but ``keep_checkpoints`` (which files are kept changes no weight)."""
        mine = {k: v for k, v in asdict(self).items() if k != "keep_checkpoints"}
        return mine == {k: v for k, v in stored.items() if k != "keep_checkpoints"}


@dataclass
class TrainResult:
    """History of a run: one entry per finished epoch; ``seconds`` of training in all (a resumed
    run adds its time to what the checkpoint recorded)."""

    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: dict[str, int] | None = None
    seconds: float = 0.0


def _param_groups(model: nn.Module, weight_decay: float, lr: float,
                  lr_of: Callable[[str], float | None] | None = None) -> list[dict[str, Any]]:
    """Weight matrices decay, other parameters do not; ``lr_of(name)`` may give a parameter its
    own learning rate (None: ``lr``)."""
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {(True, lr): [], (False, lr): []}  # always these two first
    for name, p in model.named_parameters():
        if p.requires_grad:
            own = lr_of(name) if lr_of is not None else None
            groups.setdefault((p.dim() >= 2, lr if own is None else own), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": group_lr}
            for (decay, group_lr), params in groups.items()]


def _schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _epoch_batches(n: int, batch_size: int, seed: int, start_batch: int) -> list[list[int]]:
    """This process's part of each global batch of one epoch, from ``start_batch`` on."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    world, rank = distributed.world_size(), distributed.rank()
    return [chunk.tolist() for chunk in (b.tensor_split(world)[rank] for b in order.split(batch_size)[start_batch:])]


@dataclass(frozen=True, eq=False)
class Objective:
    """What training minimizes beyond cross-entropy, and how fast each parameter moves.

    Attributes:
        teacher: the model whose softened logits the student learns (kept frozen, in eval mode;
            needed when ``distill_alpha`` > 0).
        penalty: ``penalty(model)`` added to the loss (a regularizer of the parameters, e.g. the
            mask loss of dynamic time steps).
        lr_of: ``lr_of(name)`` gives a parameter its own peak learning rate (None: the config's).
    """

    teacher: nn.Module | None = None
    penalty: Callable[[nn.Module], torch.Tensor] | None = None
    lr_of: Callable[[str], float | None] | None = None


def fit(model: nn.Module, train_set: Dataset, config: TrainConfig, val_loader: DataLoader | None = None,
        device: str | torch.device = "cpu", job: Job = Job(), objective: Objective = Objective(),
        checkpoint_meta: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` on ``train_set`` with cross-entropy plus the ``objective``'s distillation and penalty.

    Args:
        model: a prepared QCFS model (or any classifier).
        train_set: yields ``(image, label)``.
        config: hyper-parameters (``distill_alpha`` > 0 needs a teacher).
        val_loader: evaluated after each epoch (accuracy recorded in the history).
        job: a progress bar; ``job.checkpoint``, the file written atomically during training and,
            with ``job.resume``, continued from when it holds an unfinished run.
        objective: the teacher, a penalty, per-parameter learning rates (:class:`Objective`).
        checkpoint_meta: ``stage``, ``recipe`` and ``prepare`` stored with the weights, and
            ``extra`` (JSON-able metadata such as the command line).
    """
    checkpoint, resume, progress = job.checkpoint, job.resume, job.progress
    teacher, penalty, lr_of = objective.teacher, objective.penalty, objective.lr_of
    if config.distill_alpha > 0 and teacher is None:
        raise ValueError("distill_alpha > 0 needs a teacher model")
    if config.batch_size % distributed.world_size():
        raise ValueError(f"batch size {config.batch_size} does not split over {distributed.world_size()} "
                         "processes: pick a multiple of the process count")
    if config.train_samples is not None and config.train_samples < len(train_set):
        chosen = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed))
        train_set = Subset(train_set, chosen[: config.train_samples].tolist())
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay, config.lr, lr_of), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(total, int(config.warmup_epochs * steps_per_epoch)))
    loss_fn = DistillationLoss(config.distill_alpha, config.temperature, config.label_smoothing)
    result = TrainResult()
    epoch, start_batch = 0, 0
    meta = checkpoint_meta or {"stage": "prepared", "recipe": {}, "prepare": None}
    main = distributed.is_main()
    running = torch.zeros(2, dtype=torch.float64)  # summed loss and samples of this process in this epoch
    earlier_seconds, start = 0.0, time.perf_counter()  # training time before a resume, this run's start

    def save(epoch_: int, batch_: int) -> None:
        if checkpoint is None:
            return
        # every process's augmentation RNG and running loss, so that a resumed epoch continues exactly
        processes = distributed.all_gather({"rng": torch.get_rng_state(), "running": running.clone()})
        if not main:
            return
        state = {"epoch": epoch_, "batch": batch_, "config": asdict(config), "history": result.history,
                 "seconds": earlier_seconds + time.perf_counter() - start}
        if epoch_ < config.epochs:  # a finished run keeps no optimizer state: the file stays small
            state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), processes=processes)
        save_checkpoint(checkpoint, model.state_dict(), meta["stage"], meta["recipe"], meta.get("prepare"),
                        config.keep_checkpoints, train_state=state, **meta.get("extra", {}))
        if epoch_ >= config.epochs:
            remove_previous(checkpoint, config.keep_checkpoints)

    state, skipped = (load_newest(checkpoint, config.keep_checkpoints, "start the run afresh with --no-resume (the file is "
                                  "then overwritten), or pass another --out", set_aside=main)
                      if resume and checkpoint is not None else (None, []))
    for said in skipped if main else ():
        warnings.warn(said)
    if state is not None:
        train_state = state.get("train_state")
        if train_state is None:
            raise CheckpointError(f"{checkpoint} exists but holds no training state; pass another --out, "
                                  "or --no-resume to overwrite it")
        ran, running_now = (state.get("recipe") or {}).get("name"), meta["recipe"].get("name")
        if (state["stage"], ran) != (meta["stage"], running_now):
            raise CheckpointError(f"{checkpoint} holds a {state['stage']} run of {ran!r}, not a {meta['stage']} run of "
                                  f"{running_now!r}: pass another output path, or delete it to start afresh")
        other = {k: state.get(k) for k, v in meta.get("extra", {}).items() if k != "command" and state.get(k) != v}
        if other:
            raise CheckpointError(f"{checkpoint} holds a run with other settings {other}; pass another output path, "
                                  "or delete it to start afresh")
        if state["prepare"] != json.loads(json.dumps(meta.get("prepare"))):  # as stored (tuples become lists)
            raise CheckpointError(f"{checkpoint} holds a model prepared otherwise ({state['prepare']}); pass another "
                                  "output path, or delete it to start afresh")
        if not config.same_run(train_state["config"]):
            raise CheckpointError(f"{checkpoint} was written with other settings {train_state['config']}; "
                                  "use the same options to resume, or another output path")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{checkpoint} holds weights that do not fit the model built now ({first_line(e, 120)}); "
                                  "pass another --out, or --no-resume to overwrite it") from e
        if "optimizer" in train_state:
            optimizer.load_state_dict(train_state["optimizer"])
            scheduler.load_state_dict(train_state["scheduler"])
        epoch, start_batch = train_state["epoch"], train_state["batch"]
        if len(train_state.get("processes", [])) == distributed.world_size():  # else: a fresh RNG, loss of this part
            torch.set_rng_state(train_state["processes"][distributed.rank()]["rng"])
            if start_batch:
                running = train_state["processes"][distributed.rank()]["running"]
        result.history = list(train_state["history"])
        earlier_seconds = float(train_state.get("seconds", 0.0))
        result.resumed_from = {"epoch": epoch, "batch": start_batch}

    trained = distributed.wrap(model)
    start = time.perf_counter()
    while epoch < config.epochs:
        # the loader's own generator: starting an epoch must not draw from the augmentation RNG
        loader = DataLoader(train_set, batch_sampler=_epoch_batches(len(train_set), config.batch_size,
                                                                    config.seed + epoch, start_batch),
                            generator=torch.Generator())
        model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress or not main,
                   initial=start_batch, total=steps_per_epoch)
        for batch, (images, labels) in enumerate(bar, start=start_batch):
            images, labels = images.to(device), labels.to(device)
            with torch.no_grad():
                target = teacher(images) if teacher is not None and config.distill_alpha > 0 else None
            loss = loss_fn(trained(images), labels, target)
            if penalty is not None:
                loss = loss + penalty(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += torch.tensor([loss.item() * len(labels), len(labels)], dtype=torch.float64)
            bar.set_postfix(loss=f"{running[0] / running[1]:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if config.checkpoint_every and (batch + 1) % config.checkpoint_every == 0 and batch + 1 < steps_per_epoch:
                save(epoch, batch + 1)
        loss_sum, seen = distributed.all_reduce(running.clone()).tolist()
        entry = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen)}
        if val_loader is not None:
            entry["val_accuracy"] = evaluate(model, val_loader, device=device)
            model.train()
        result.history.append(entry)
        if progress and main:
            tqdm.write(f"epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if k != "epoch"))
        epoch, start_batch = epoch + 1, 0
        running = torch.zeros(2, dtype=torch.float64)
        save(epoch, 0)
    distributed.barrier()
    result.seconds = earlier_seconds + time.perf_counter() - start
    model.eval()
    return result
