"""Spike-correct operators for ops that do not commute with the running mean.

For inputs whose running means are ``ā_t = A_t/t`` (``A_t = Σ_{τ≤t} a_τ``), an
:class:`ExpectationCompensated` op emits

    ``y_t = t·g(ā_t, b̄_t, …) − (t−1)·g(ā_{t−1}, b̄_{t−1}, …)``

so that the running mean of its output is exactly ``g`` of the running means of its inputs.
For a product ``g(a, b) = a·b`` this is ``A_t·B_t/t − A_{t−1}·B_{t−1}/(t−1)``; its increment
``a_t·B_{t−1} + A_{t−1}·b_t + a_t·b_t`` has one binary operand per term (additions only).
For softmax, GELU or LayerNorm it is expectation compensation and runs in floating point.
:class:`MatMul` holds the ANN's product as a module, so that ``convert`` can wrap it.
"""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.runtime.state import StatefulModule


class MatMul(nn.Module):
    """``a @ b`` as a module; conversion wraps it in :class:`ExpectationCompensated` (or, in the
    ``mst`` mode, leaves it to multiply each step's operands)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


class ExpectationCompensated(StatefulModule):
    """Wraps ``fn(*inputs)`` so its output's running mean equals ``fn`` of the inputs' running means.

    Args:
        fn: the ANN op (a module taking one or more tensors).
        bilinear: True when ``fn`` is a product of two spike streams (counted as additions,
            not floating-point work).
    """

    def __init__(self, fn: nn.Module, bilinear: bool = False):
        super().__init__()
        self.fn = fn
        self.bilinear = bilinear
        self.t = 0
        self.sums: list[torch.Tensor] | None = None
        self.previous: torch.Tensor | None = None

    def reset(self) -> None:
        self.t = 0
        self.sums = None
        self.previous = None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.t += 1
        if self.sums is None:
            self.sums = [x.clone() for x in inputs]
        else:
            self.sums = [s + x for s, x in zip(self.sums, inputs)]
        current = self.t * self.fn(*[s / self.t for s in self.sums])
        out = current if self.previous is None else current - self.previous
        self.previous = current
        return out
