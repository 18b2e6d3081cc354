"""convert(model): a prepared QCFS model → a single-step spiking model.

QCFS → IF neuron with reset by subtraction (θ = λ, v(0) = θ/2); BatchNorm folded into its
neighbouring Linear/Conv; spike×spike products and softmax swapped for spike-correct operators.
Two attention modes:

* ``compensated``: products and softmax by expectation compensation (the running mean of the
  output equals the op of the running means; exact in the limit of the QCFS ANN).
* ``mst``: the Masked Spiking Transformer reference code: the ops applied to each step's
  spikes alone (a biased estimate, kept for reproduction and comparison).

The returned model processes one time step per call; :func:`snnconvert.runtime.simulate` drives it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from snnconvert.convert.fold import fold_batchnorms
from snnconvert.convert.prepare import find_unconvertible, is_prepared
from snnconvert.convert.qcfs import QCFS
from snnconvert.errors import SnnConvertError, UnsupportedLayersError
from snnconvert.runtime.neurons import NEURONS
from snnconvert.runtime.energy import op_kinds
from snnconvert.runtime.operators import ExpectationCompensated, MatMul

MODES = ("compensated", "mst")


def _spiking(m: nn.Module, mode: str, neuron: str) -> nn.Module | None:
    if isinstance(m, QCFS):  # θ = λ, v(0) = φ·θ
        return NEURONS[neuron](m.threshold.detach(), initial_potential=m.shift)
    if mode == "compensated" and isinstance(m, MatMul):
        return ExpectationCompensated(m, bilinear=True)
    if mode == "compensated" and isinstance(m, (nn.Softmax, nn.LayerNorm)):
        return ExpectationCompensated(m)
    return None


def _swap(module: nn.Module, mode: str, neuron: str) -> None:
    for name, child in list(module.named_children()):
        new = _spiking(child, mode, neuron)
        if new is None:
            _swap(child, mode, neuron)
        else:
            setattr(module, name, new)


def convert(model: nn.Module, mode: str = "compensated", neuron: str = "if", inplace: bool = False) -> nn.Module:
    """Convert a prepared (QCFS) model into a single-step SNN (eval mode).

    Args:
        model: output of :func:`snnconvert.convert.prepare`, trained and/or calibrated.
        mode: ``"compensated"`` (default, exact in expectation) or ``"mst"`` (per-step ops).
        neuron: ``"if"`` (IF, reset by subtraction; default), ``"signed-if"`` (may also fire
            negative spikes to take back surplus ones) or ``"signed-burst-if"`` (signed, several
            spikes per step); see :data:`snnconvert.runtime.NEURONS`.
        inplace: modify ``model`` instead of a deep copy.
    """
    if mode not in MODES:
        raise SnnConvertError(f"unknown attention mode {mode!r}; choose one of {', '.join(MODES)}")
    if neuron not in NEURONS:
        raise SnnConvertError(f"unknown neuron {neuron!r}; choose one of {', '.join(NEURONS)}")
    if not is_prepared(model):
        raise SnnConvertError("the model has no QCFS activations: run snnconvert.prepare(model) "
                              "(and train or calibrate it) before convert()")
    problems = find_unconvertible(model)
    if problems:
        raise UnsupportedLayersError(problems)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    fold_batchnorms(model)
    _swap(model, mode, neuron)
    return model


@dataclass(frozen=True)
class FloatOp:
    """An op of a converted model that is not spike-driven."""

    name: str
    kind: str
    why: str


def float_operations(snn: nn.Module) -> list[FloatOp]:
    """Every op of a converted model that still runs in floating point, by name."""
    ops = []
    for name, (m, kind) in op_kinds(snn).items():
        if kind != "elementwise":
            continue
        if isinstance(m, ExpectationCompensated):
            ops.append(FloatOp(name, type(m.fn).__name__, "expectation-compensated nonlinearity"))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            ops.append(FloatOp(name, type(m).__name__, "unfolded BatchNorm: per-channel multiply-add each step"))
        else:
            ops.append(FloatOp(name, type(m).__name__, "nonlinearity applied to each step"))
    return ops
