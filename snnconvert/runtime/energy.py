"""Synaptic operations, MACs and floating-point ops of a model, counted while it runs.

A Linear / Conv whose input carries spikes (this step's output of a module that ``emits_spikes`` —
a spiking neuron, a spike mask, a spike encoder — or a rearrangement of it: reshaped, transposed,
rolled, windowed, zero-padded; recognized by its event count and absolute sum) does one accumulate
(AC) per input event and connection:
``SOP = Σ_t events × fan-out``. An integer-valued input (spikes summed on a residual stream, or
max-pooled) counts each unit as one event. A layer fed real values (the image, a real-valued
residual stream) does dense multiply-accumulates (MAC) every step.

A compensated product ``y = a @ b`` (``a: [.., n, k]``, ``b: [.., k, m]``) keeps the running sums
``A_t``, ``B_t`` and adds ``a_t·B_t + A_{t−1}·b_t`` to ``A_t·B_t``: a spike operand makes its
term additions (events of ``a_t`` × m, events of ``b_t`` × n), a real one dense MACs; emitting
``y_t = A_t·B_t/t − A_{t−1}·B_{t−1}/(t−1)`` is one floating-point op per output element. The
``mst`` mode's per-step product ``a_t·b_t`` is additions over one spike operand.

Softmax, LayerNorm, expectation-compensated nonlinearities and unfolded BatchNorm are counted as
one floating-point op per output element and step (a lower bound: an exponential costs more).

``E = E_AC·SOP + E_MAC·(MAC + float ops)`` with the 45 nm defaults ``E_AC = 0.9 pJ``,
``E_MAC = 4.6 pJ``. Run on an ANN (``all_real=True``), every op counts MACs once per forward:
the ANN's energy to compare. An event is a nonzero input element (a burst of several spikes
counts once); an all-zero input (a silent spiking layer) costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from snnconvert.runtime.operators import ExpectationCompensated, MatMul

#: ops that run in floating point, one op per output element and step
ELEMENTWISE = (nn.Softmax, nn.LayerNorm, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class EnergyCosts:
    """Energy per operation in pJ; the defaults are 45 nm CMOS figures (32-bit float)."""

    ac_pj: float = 0.9
    mac_pj: float = 4.6

    def __post_init__(self) -> None:
        if self.ac_pj < 0 or self.mac_pj < 0:
            raise ValueError(f"energies per operation must be >= 0, got AC {self.ac_pj} pJ, MAC {self.mac_pj} pJ")

    def of(self, sops: float, macs: float, float_ops: float = 0) -> float:
        """``E_AC·SOP + E_MAC·(MAC + float ops)`` in pJ."""
        return self.ac_pj * sops + self.mac_pj * (macs + float_ops)


@dataclass
class LayerOps:
    """Operations of one op of the model, summed over steps and samples.

    Attributes:
        name: qualified module name.
        kind: ``linear`` (Linear / Conv), ``product`` (a product of two streams) or
            ``elementwise`` (a floating-point op such as softmax).
        sops: synaptic operations (ACs, additions) driven by spikes.
        macs: multiply-accumulates with real-valued operands.
        float_ops: other floating-point ops (elementwise ops, the compensated products' output).
    """

    name: str
    kind: str = "linear"
    sops: int = 0
    macs: int = 0
    float_ops: int = 0


def _dense_macs(layer: nn.Module, out: torch.Tensor) -> int:
    if isinstance(layer, nn.Linear):
        return out.numel() * layer.in_features
    return out.numel() * (layer.in_channels // layer.groups) * int(torch.tensor(layer.kernel_size).prod())


def _sops(layer: nn.Module, x: torch.Tensor, counts: bool = False) -> int:
    """Events × connections: exact for Conv (edges included) via a convolution of the event map.
    With ``counts`` an input element ``x`` is ``|x|`` events (spikes summed: a residual stream)."""
    events = x.abs().to(torch.float32) if counts else (x != 0).to(torch.float32)
    if isinstance(layer, nn.Linear):
        return int(events.sum()) * layer.out_features
    g = layer.groups
    per_group = events.reshape(events.shape[0], g, -1, *events.shape[2:]).sum(2)
    ones = torch.ones(g, 1, *layer.kernel_size, device=x.device)
    conv = {1: F.conv1d, 2: F.conv2d}[events.dim() - 2]
    reach = conv(per_group, ones, stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=g)
    return int(reach.sum()) * (layer.out_channels // g)


def op_kinds(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Every op of ``model`` that does counted work, by name: ``(module, kind)`` with kind ``linear``,
    ``product`` or ``elementwise`` (the floating-point ops); an op wrapped by
    :class:`ExpectationCompensated` is counted as the wrapper."""
    wrapped = {id(m.fn) for m in model.modules() if isinstance(m, ExpectationCompensated)}
    kinds: dict[str, tuple[nn.Module, str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            kinds[name] = (m, "linear")
        elif id(m) in wrapped:
            continue
        elif isinstance(m, MatMul) or isinstance(m, ExpectationCompensated) and m.bilinear:
            kinds[name] = (m, "product")
        elif isinstance(m, (ExpectationCompensated, *ELEMENTWISE)):
            kinds[name] = (m, "elementwise")
    return kinds


class OpCounter:
    """Counts SOPs, MACs and floating-point ops of every Linear / Conv, product and elementwise
    floating-point op of ``model`` while attached (a context manager).

    Args:
        model: a converted SNN (or, with ``all_real``, an ANN).
        all_real: treat every input as real-valued (an ANN's dense MACs).
    """

    def __init__(self, model: nn.Module, all_real: bool = False):
        self.model, self.all_real = model, all_real
        self._kinds = op_kinds(model)
        self._sources = [m for m in model.modules() if getattr(m, "emits_spikes", False)]
        self._ops = {n: LayerOps(n, kind) for n, (_, kind) in self._kinds.items()}
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
        if self.all_real:
            return False
        events, total = self._mark(x)
        return any(events == e and abs(total - t) <= 1e-4 * max(1.0, t) for e, t in self._spike_marks)

    def _linear(self, ops: LayerOps, layer: nn.Module, inputs, out: torch.Tensor) -> None:
        x = inputs[0]
        if self._carries_spikes(x):
            ops.sops += _sops(layer, x)
        elif self._spike_counts(x):
            ops.sops += _sops(layer, x, counts=True)
        else:
            ops.macs += _dense_macs(layer, out)

    def _spike_counts(self, x: torch.Tensor) -> bool:
        """Integer-valued input while spikes flow this step: a sum or max-pool of spike tensors."""
        return not self.all_real and bool(self._spike_marks) and bool(torch.equal(x, x.round()))

    def _product(self, ops: LayerOps, op: nn.Module, inputs, out: torch.Tensor) -> None:
        a, b = inputs
        n, k, m = a.shape[-2], a.shape[-1], b.shape[-1]
        spikes_a, spikes_b = self._carries_spikes(a), self._carries_spikes(b)
        if not isinstance(op, ExpectationCompensated):  # a_t @ b_t of this step alone
            if spikes_a or spikes_b:
                ops.sops += int(torch.count_nonzero(a)) * m if spikes_a else int(torch.count_nonzero(b)) * n
            else:
                ops.macs += out.numel() * k
            return
        # a_t·B_t + A_{t−1}·b_t, then y_t = P_t/t − P_{t−1}/(t−1)
        terms = [(a, spikes_a, m)] + ([(b, spikes_b, n)] if op.t > 1 else [])
        for x, spikes, fan_out in terms:
            if spikes:
                ops.sops += int(torch.count_nonzero(x)) * fan_out
            else:
                ops.macs += x.numel() * fan_out
        ops.float_ops += out.numel()

    def _elementwise(self, ops: LayerOps, _op: nn.Module, _inputs, out: torch.Tensor) -> None:
        ops.float_ops += out.numel()

    def _hook(self, name: str):
        ops = self._ops[name]
        count = {"linear": self._linear, "product": self._product, "elementwise": self._elementwise}[ops.kind]
        return lambda module, inputs, out: count(ops, module, inputs, out)

    def __enter__(self) -> OpCounter:
        self._handles = [self.model.register_forward_pre_hook(self._new_step)]
        self._handles += [m.register_forward_hook(self._spikes_out) for m in self._sources]
        self._handles += [m.register_forward_hook(self._hook(n)) for n, (m, _) in self._kinds.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._spike_marks.clear()

    def totals(self) -> torch.Tensor:
        """SOPs, MACs and float ops per op so far, an integer tensor ``[3, ops]`` in model order."""
        return torch.tensor([[o.sops for o in self._ops.values()], [o.macs for o in self._ops.values()],
                             [o.float_ops for o in self._ops.values()]], dtype=torch.long).reshape(3, -1)

    def add(self, totals: torch.Tensor) -> None:
        """Add earlier totals (from :meth:`totals`), e.g. those of a resumed run."""
        for o, (s, m, f) in zip(self._ops.values(), totals.t().tolist()):
            o.sops, o.macs, o.float_ops = o.sops + s, o.macs + m, o.float_ops + f

    def results(self, totals: torch.Tensor | None = None) -> list[LayerOps]:
        """Per-op counts in model order: this counter's, or ``totals`` (e.g. summed over processes)."""
        if totals is None:
            return list(self._ops.values())
        return [LayerOps(o.name, o.kind, *map(int, column)) for o, column in zip(self._ops.values(), totals.t())]
