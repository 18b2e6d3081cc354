"""Calibrate a prepared model from sample data: BatchNorm statistics and QCFS thresholds.

``calibrate_batchnorm`` re-estimates BatchNorm running statistics (needed right after the
LayerNorm → BatchNorm swap); ``calibrate_thresholds`` sets λ (= θ after conversion) of every QCFS
from the statistics of its inputs. Both take a DataLoader of ``(images, labels)`` and restore the
model's ``training`` flag when done.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from snnconvert import checks, distributed
from snnconvert.checks import check_fields
from snnconvert.errors import ArgumentError
from snnconvert.calibrate.observers import METHODS, ActivationObserver
from snnconvert.prepare.rewrite import qcfs_modules


@dataclass(frozen=True)
class CalibrationConfig:
    """How thresholds are chosen.

    Attributes:
        method: ``max``, ``percentile`` or ``mse``.
        percentile: for ``percentile`` (99.9, 99.99 …).
        granularity: ``layer`` or ``channel`` (channel-wise where the site has a channel axis).
        num_samples: number of sample images to use.
    """

    method: str = "percentile"
    percentile: float = 99.99
    granularity: str = "layer"
    num_samples: int = 256

    def __post_init__(self) -> None:
        check_fields(self)
        if self.method not in METHODS:
            raise ArgumentError(f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 0 < self.percentile <= 100:
            raise ArgumentError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.granularity not in ("layer", "channel"):
            raise ArgumentError(f"granularity must be 'layer' or 'channel', got {self.granularity!r}")
        if self.num_samples < 1:
            raise ArgumentError(f"num_samples must be >= 1, got {self.num_samples}")


def _check_arguments(model: nn.Module, loader: Iterable, num_samples: int, function: str) -> None:
    checks.module(model, function, call=f"{function}(model, loader, …)")
    checks.loader(loader, function)
    checks.count(num_samples, function, "num_samples")


def _limited(model: nn.Module, loader: Iterable, num_samples: int, function: str, desc: str, progress: bool):
    """The loader's first ``num_samples`` images (under torchrun: this process's share of them),
    each batch checked to be ``(images, labels)`` of the model's input size; none is an error."""
    input_shape = getattr(model, "meta", {}).get("input_shape")
    num_samples = -(-num_samples // distributed.world_size())
    seen = 0
    bar = tqdm(total=num_samples, desc=desc, unit="img", disable=not progress or not distributed.is_main())
    for item in loader:
        checks.expect(isinstance(item, (tuple, list)) and len(item) == 2, function, "each batch of the loader",
                      "an (images, labels) pair", item, "labels may be None")
        checks.batch(item[0], function, "a batch of the loader", input_shape)
        images = item[0][: num_samples - seen]
        yield images
        seen += len(images)
        bar.update(len(images))
        if seen >= num_samples:
            break
    bar.close()
    checks.nonempty(seen, function, "loader")


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, loader: Iterable, num_samples: int = 256,
                        device: str | torch.device = "cpu", progress: bool = False,
                        only: list[str] | None = None, identity: list[str] = ()) -> None:
    """Re-estimate BatchNorm running means/variances as a plain average over the samples (under
    torchrun: averaged over the processes, each of which saw an equal share).

    Args:
        only: the BatchNorms (by name) to re-estimate, e.g. the ones ``prepare`` put in place of
            LayerNorms; the others keep their (pretrained) statistics. None: every BatchNorm.
        identity: new BatchNorms that must not change the model's function: they pass their input
            through during the pass, then get ``γ = √(σ²+ε)``, ``β = μ``: the identity in eval mode.
    """
    _check_arguments(model, loader, num_samples, "calibrate_batchnorm")
    named = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    bns = [m for n, m in named.items() if only is None or n in only or n in identity]
    identity = [named[n] for n in identity]
    if not bns:
        return
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    before = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in bns]  # restored if the data is refused
    handles = [bn.register_forward_hook(lambda _m, inputs, _out: inputs[0]) for bn in identity]
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
            bn.train()
        try:
            for images in _limited(model, loader, num_samples, "calibrate_batchnorm", "BatchNorm statistics", progress):
                model(images.to(device))
        except ArgumentError:
            for bn, state in zip(bns, before):
                bn.load_state_dict(state)
            raise
        for bn in bns:
            for stat in (bn.running_mean, bn.running_var):
                stat.copy_(distributed.all_reduce(stat.clone()) / distributed.world_size())
        for bn in identity:
            bn.weight.copy_((bn.running_var + bn.eps).sqrt())
            bn.bias.copy_(bn.running_mean)
    finally:
        for h in handles:
            h.remove()
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def calibrate_thresholds(model: nn.Module, loader: Iterable, config: CalibrationConfig | None = None,
                         device: str | torch.device = "cpu", progress: bool = False,
                         only: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Set every QCFS threshold λ (or those of the sites named in ``only``) from its input
    statistics over ``config.num_samples`` images.

    Sites run unquantized (as ReLU, or ReLU6 where capped; a signed site as the identity, observing
    magnitudes) while observing, so each layer sees the activations it would see without the
    thresholds being calibrated. Returns the new thresholds
    by layer name.
    """
    checks.instance(config, CalibrationConfig, "calibrate_thresholds", "config")
    cfg = config or CalibrationConfig()
    _check_arguments(model, loader, cfg.num_samples, "calibrate_thresholds")
    sites = qcfs_modules(model)
    if only is not None:
        wanted = set(only)
        sites = {name: site for name, site in sites.items() if name in wanted}
    if not sites:
        raise ArgumentError("calibrate_thresholds: the model has no QCFS sites to calibrate; run "
                            "snnconvert.prepare(model, example) first")
    observers = {n: ActivationObserver(q.channel_axis if cfg.granularity == "channel" else None)
                 for n, q in sites.items()}

    def observe_and_pass(name):
        def hook(module, inputs, _output):
            observers[name].observe(inputs[0].abs() if module.signed else inputs[0])
            return module.relu_form(inputs[0])
        return hook

    handles = [q.register_forward_hook(observe_and_pass(n)) for n, q in sites.items()]
    was_training = model.training
    try:
        model.eval()
        for images in _limited(model, loader, cfg.num_samples, "calibrate_thresholds", "threshold calibration",
                               progress):
            model(images.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    thresholds = {}
    for name, q in sites.items():
        observers[name].merge_processes()
        lam = observers[name].threshold(cfg.method, cfg.percentile, q.levels)
        q.set_threshold(lam)
        thresholds[name] = lam
    return thresholds
