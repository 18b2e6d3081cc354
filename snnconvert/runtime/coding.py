"""How a converted model carries its ANN's values over time steps.

* ``rate`` (the QCFS / MST convention): the image is presented at every step and biases are added
  at every step; a value is the **running mean** of its stream, ``Σ_{τ≤t} y_τ / t``. Linear ops
  commute with the running mean; IF neurons send at most t spikes by step t.
* ``count`` (SpikeZIP-TF's accumulation): the image is presented once (at the first step) and every
  constant once; a value is the **total** of its stream, ``Σ_{τ≤t} y_τ``. Linear ops commute with
  the total; a neuron with θ = λ/L sends at most L net spikes in all, so its total is QCFS with L
  levels whatever T: once every neuron has sent its count the SNN *is* its QCFS ANN, and later
  steps send nothing. Nonlinear ops emit ``y_t = g(S_t) − g(S_{t−1})`` of cumulative inputs.

The prediction at step t is the argmax of the running total of the outputs under either coding.
"""
from __future__ import annotations

import torch

from snnconvert.runtime.state import StatefulModule, is_first

CODINGS = ("rate", "count")


def estimate(total: torch.Tensor, t: int | torch.Tensor, coding: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """The value a stream stands for after ``t`` steps, from its running total (written into
    ``out`` when one is given and the value is not the total itself)."""
    return torch.div(total, t, out=out) if coding == "rate" else total


class InputOnce(StatefulModule):
    """Count coding's input: the image at the first step, zeros after."""

    presents_once = True  # what it sends is a real value at the first step only (graph.events)

    def __init__(self):
        super().__init__()
        self.reset()

    def step(self, x: torch.Tensor) -> torch.Tensor:
        first = is_first(self.t)
        self.t = self.t + 1
        return x * first


class OnceOffset(StatefulModule):
    """A constant ``c`` that an affine op adds to its output, counted once (count coding): the
    total of the op's outputs is then the op of its inputs' totals.

    Args:
        offset: c, the op's output on zero dynamic inputs (a bias broadcast over the output), at
            batch size 1; a batch folded into the leading dimension (Swin's windows) is matched.
        included: the op's output already holds c (subtract it after the first step), or the op
            was stripped of it (add it at the first step: a Linear or Conv without its bias).
    """

    adds_once = True  # a constant counted once (graph.events: a mixed stream stays one)

    def __init__(self, offset: torch.Tensor, included: bool):
        super().__init__()
        self.register_buffer("offset", offset.detach().clone())
        self.included = included
        self.reset()

    def step(self, y: torch.Tensor) -> torch.Tensor:
        """``y + c`` at the first step (c not included) or ``y − c`` after it (c included), else ``y``."""
        first = is_first(self.t)
        self.t = self.t + 1
        sign = first - 1.0 if self.included else first
        if not isinstance(sign, torch.Tensor) and sign == 0.0:
            return y
        c = self.offset
        if c.dim() == y.dim() and c.shape[0] not in (1, y.shape[0]):  # [B·n, …] against [n, …]
            return (y.unflatten(0, (-1, c.shape[0])) + sign * c).flatten(0, 1)
        return y + sign * c

    def extra_repr(self) -> str:
        return f"shape={tuple(self.offset.shape)}, {'subtracted after the first step' if self.included else 'added at the first step'}"
