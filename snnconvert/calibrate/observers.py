"""Observers: record the pre-activation statistics of QCFS inputs (a forward pre-hook each).

Like ``torch.ao`` observers, recording and computing are separate: ``observe`` collects,
``threshold`` computes λ by one of :data:`METHODS`.
"""
from __future__ import annotations

import torch

from snnconvert import distributed

METHODS = ("max", "percentile", "mse")


def channel_rows(x: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` as ``[channels, values]`` (one row for ``axis`` None), and the shape in which a value
    per channel broadcasts over ``x`` (``()`` layer-wise)."""
    if axis is None:
        return x.reshape(1, -1), ()
    axis = axis % x.dim()
    shape = (x.shape[axis],) + (1,) * (x.dim() - axis - 1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1), shape


class ActivationObserver:
    """Collects the positive inputs of one QCFS site, layer-wise or per channel.

    Keeps the running maximum and a uniform random subsample of at most ``max_values`` values
    per channel (layer-wise: one channel), enough for a 99.99th percentile and the MSE search.

    Args:
        channel_axis: axis of channels in the observed tensor, or None for layer-wise.
        max_values: subsample size kept per channel.
        seed: seed of the subsampling.
    """

    def __init__(self, channel_axis: int | None, max_values: int = 200_000, seed: int = 0):
        self.channel_axis = channel_axis
        self.max_values = max_values
        self.generator = torch.Generator().manual_seed(seed)
        self.maximum: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.channel_shape: tuple[int, ...] | None = None

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``[channels, values]``."""
        rows, self.channel_shape = channel_rows(x.detach().float().cpu(), self.channel_axis)
        return rows

    def observe(self, x: torch.Tensor) -> None:
        rows = self._rows(x)
        batch_max = rows.amax(dim=1)
        self.maximum = batch_max if self.maximum is None else torch.maximum(self.maximum, batch_max)
        self._pool([rows] if self.values is None else [self.values, rows])

    def _pool(self, parts: list[torch.Tensor]) -> None:
        pool = torch.cat(parts, dim=1)
        if pool.shape[1] > self.max_values:
            keep = torch.randperm(pool.shape[1], generator=self.generator)[: self.max_values]
            pool = pool[:, keep]
        self.values = pool

    def merge_processes(self) -> None:
        """Under torchrun: the maximum and subsample of every process's observations, on each."""
        if distributed.world_size() == 1 or self.values is None:
            return
        self.maximum = distributed.all_reduce(self.maximum.clone(), op="max")
        self._pool(distributed.all_gather(self.values))

    def threshold(self, method: str = "percentile", percentile: float = 99.99, levels: int = 8) -> torch.Tensor:
        """λ per channel (shape broadcasting over the observed tensor) or a scalar.

        * ``max``: the largest input seen.
        * ``percentile``: that percentile of the positive inputs (robust to outliers).
        * ``mse``: the λ minimizing ``E[(QCFS_λ(z) − ReLU(z))²]`` over quantiles of the positive inputs.
        """
        if self.values is None:
            raise RuntimeError("observer saw no data: run calibration batches through the model first")
        if method == "max":
            lam = self.maximum.clone()
        elif method == "percentile":
            lam = torch.stack([_percentile_positive(row, percentile) for row in self.values])
        elif method == "mse":
            lam = torch.stack([_mse_threshold(row, levels) for row in self.values])
        else:
            raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
        lam = torch.where(lam > 0, lam, torch.ones_like(lam))  # dead channels: keep a valid threshold
        if self.channel_axis is None:
            return lam.reshape(())
        return lam.reshape(self.channel_shape)


def _percentile_positive(row: torch.Tensor, percentile: float) -> torch.Tensor:
    pos = row[row > 0]
    if pos.numel() == 0:
        return torch.tensor(0.0)
    return torch.quantile(pos, percentile / 100.0)


def _mse_threshold(row: torch.Tensor, levels: int, grid: int = 100) -> torch.Tensor:
    from snnconvert.prepare.qcfs import qcfs

    pos = row[row > 0]
    if pos.numel() == 0:
        return torch.tensor(0.0)
    target = row.clamp_min(0)
    # candidates: quantiles of the positive inputs from the median to the maximum
    candidates = torch.quantile(pos, torch.linspace(0.5, 1.0, grid)).unique()
    errors = torch.stack([(qcfs(row, lam, levels) - target).pow(2).mean() for lam in candidates])
    return candidates[errors.argmin()]
