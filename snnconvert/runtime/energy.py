"""Synaptic operations and energy of Linear and Conv layers, counted while a model runs.

A layer whose input carries spikes (the output of an IF neuron or a spike mask this step, or a
rearrangement of it: reshaped, rolled, windowed, zero-padded — recognized by its event count and
absolute sum) does one accumulate (AC) per input event and connection: ``SOP = Σ_t events × fan-out``. A layer fed
real values (the image, the residual stream) does dense multiply-accumulates (MAC) every step.
``E = E_AC·SOP + E_MAC·MAC`` with the 45 nm defaults ``E_AC = 0.9 pJ``, ``E_MAC = 4.6 pJ``. Run on
an ANN (``all_real=True``), every layer counts MACs once per forward: the ANN's energy to compare.

An event is a nonzero input element: a burst of several spikes counts once, and an all-zero input
(a silent spiking layer) costs nothing. Ops outside Linear /
Conv (softmax, spike×spike products, BatchNorm on the residual stream) are not counted here; the
report lists them as floating-point operations.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from snnconvert.runtime.neurons import IFNeuron



@dataclass(frozen=True)
class EnergyCosts:
    """Energy per operation in pJ; the defaults are 45 nm CMOS figures (32-bit float)."""

    ac_pj: float = 0.9
    mac_pj: float = 4.6

    def __post_init__(self) -> None:
        if self.ac_pj < 0 or self.mac_pj < 0:
            raise ValueError(f"energies per operation must be >= 0, got AC {self.ac_pj} pJ, MAC {self.mac_pj} pJ")

    def of(self, sops: float, macs: float) -> float:
        """``E_AC·SOP + E_MAC·MAC`` in pJ."""
        return self.ac_pj * sops + self.mac_pj * macs


@dataclass
class LayerOps:
    """Operations of one Linear / Conv layer, summed over steps and samples.

    Attributes:
        name: qualified module name.
        sops: synaptic operations (ACs) from spike inputs.
        macs: multiply-accumulates from real-valued inputs.
    """

    name: str
    sops: int = 0
    macs: int = 0


def _dense_macs(layer: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(layer, nn.Linear):
        return out.numel() * layer.in_features
    return out.numel() * (layer.in_channels // layer.groups) * int(torch.tensor(layer.kernel_size).prod())


def _sops(layer: nn.Module, x: torch.Tensor) -> int:
    """Events × connections: exact for Conv (edges included) via a convolution of the event map."""
    events = (x != 0).to(torch.float32)
    if isinstance(layer, nn.Linear):
        return int(events.sum()) * layer.out_features
    g = layer.groups
    per_group = events.reshape(events.shape[0], g, -1, *events.shape[2:]).sum(2)
    ones = torch.ones(g, 1, *layer.kernel_size, device=x.device)
    conv = {1: F.conv1d, 2: F.conv2d}[events.dim() - 2]
    reach = conv(per_group, ones, stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=g)
    return int(reach.sum()) * (layer.out_channels // g)


class OpCounter:
    """Counts SOPs and MACs of every Linear / Conv of ``model`` while attached (a context manager).

    Args:
        model: a converted SNN (or, with ``all_real``, an ANN).
        all_real: treat every input as real-valued (an ANN's dense MACs).
    """

    def __init__(self, model: nn.Module, all_real: bool = False):
        from snnconvert.convert.rsm import RandomSpikeMask

        self.model, self.all_real = model, all_real
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
        self._sources = [m for m in model.modules() if isinstance(m, (IFNeuron, RandomSpikeMask))]
        self._ops = {n: LayerOps(n) for n in self.layers}
        self._spike_marks: list[tuple[int, float]] = []  # (events, Σ|x|) of this step's spike tensors
        self._handles: list = []

    @staticmethod
    def _mark(x: torch.Tensor) -> tuple[int, float]:
        return int(torch.count_nonzero(x)), float(x.abs().sum())

    def _new_step(self, _module, _inputs) -> None:
        self._spike_marks.clear()

    def _spikes_out(self, _module, _inputs, out: torch.Tensor) -> None:
        self._spike_marks.append(self._mark(out))

    def _carries_spikes(self, x: torch.Tensor) -> bool:
        events, total = self._mark(x)
        return any(events == e and abs(total - t) <= 1e-4 * max(1.0, t) for e, t in self._spike_marks)

    def _count(self, name: str):
        def hook(layer: nn.Module, inputs, out: torch.Tensor) -> None:
            x = inputs[0]
            if not self.all_real and self._carries_spikes(x):
                self._ops[name].sops += _sops(layer, x)
            else:
                self._ops[name].macs += _dense_macs(layer, x, out)
        return hook

    def __enter__(self) -> OpCounter:
        self._handles = [self.model.register_forward_pre_hook(self._new_step)]
        self._handles += [m.register_forward_hook(self._spikes_out) for m in self._sources]
        self._handles += [m.register_forward_hook(self._count(n)) for n, m in self.layers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._spike_marks.clear()

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """SOPs and MACs per layer so far, as integer tensors in model order."""
        return (torch.tensor([o.sops for o in self._ops.values()], dtype=torch.long),
                torch.tensor([o.macs for o in self._ops.values()], dtype=torch.long))

    def add(self, sops: torch.Tensor, macs: torch.Tensor) -> None:
        """Add earlier totals (from :meth:`totals`), e.g. those of a resumed run."""
        for o, s, m in zip(self._ops.values(), sops.tolist(), macs.tolist()):
            o.sops, o.macs = o.sops + s, o.macs + m

    def results(self) -> list[LayerOps]:
        """Per-layer counts, in model order."""
        return list(self._ops.values())
