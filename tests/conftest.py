"""Small models and data for CPU tests: fixed seeds, a few hundred samples at most."""
from __future__ import annotations

import os

import timm
import torch
import pytest
from torch import nn

from snnconvert.calibrate import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds
from snnconvert.prepare import PrepareConfig, prepare_with_report
from snnconvert.data import InputSpec, load_dataset, make_loader


def pytest_configure(config):
    """In each xdist worker, its share of the cores (torch would give every worker all of them, and
    the workers would fight over them), unless OMP_NUM_THREADS says how many threads to use; the
    commands the tests start inherit the same count."""
    if "PYTEST_XDIST_WORKER" in os.environ and "OMP_NUM_THREADS" not in os.environ:
        workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


SPEC_28 = InputSpec((1, 28, 28), (0.286,), (0.353,))
SPEC_32 = InputSpec((1, 32, 32), (0.286,), (0.353,))


def tiny_swin() -> nn.Module:
    return timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4, embed_dim=16,
                             depths=(2, 2), num_heads=(2, 2), mlp_ratio=2.0, in_chans=1, num_classes=10)


def tiny_vit() -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=7, embed_dim=24, depth=2, num_heads=2,
                             mlp_ratio=2.0, in_chans=1, num_classes=10)


def tiny_timm_resnet() -> nn.Module:
    return timm.create_model("resnet18", layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), in_chans=1, num_classes=10)


def images(spec: InputSpec, n: int = 64, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` embedded Fashion-MNIST images fitted to ``spec``."""
    loader = make_loader(load_dataset("embedded", split, spec), n)
    return next(iter(loader))


def calibrated(model: nn.Module, x: torch.Tensor, config: PrepareConfig | None = None,
               calibration: CalibrationConfig = CalibrationConfig("percentile", 99.9, "layer", 96)):
    """``model`` prepared on ``x``, its new BatchNorms' statistics and its thresholds calibrated on
    ``x``: ``(prepared model in eval mode, report)``."""
    prepared, report = prepare_with_report(model, x[:2], config or PrepareConfig())
    loader = [(x, None)]
    calibrate_batchnorm(prepared, loader, len(x), only=report.new_batchnorms(),
                        identity=report.new_batchnorms(identity=True))
    calibrate_thresholds(prepared, loader, calibration)
    return prepared.eval(), report


class DiesAfter:
    """A loader of ``batches`` that is killed (KeyboardInterrupt) after the first ``n`` of them."""

    def __init__(self, batches: list, n: int):
        self.batches, self.n = batches, n

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        yield from self.batches[: self.n]
        raise KeyboardInterrupt("killed")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
