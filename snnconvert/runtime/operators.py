"""Spike-correct operators for ops that do not commute with the running mean (or total).

For inputs whose running means are ``ā_t = A_t/t`` (``A_t = Σ_{τ≤t} a_τ``), an
:class:`ExpectationCompensated` op emits, under rate coding,

    ``y_t = t·g(ā_t, b̄_t, …) − (t−1)·g(ā_{t−1}, b̄_{t−1}, …)``

so that the running mean of its output is exactly ``g`` of the running means of its inputs;
under count coding it emits ``y_t = g(A_t, B_t, …) − g(A_{t−1}, B_{t−1}, …)`` (``y_1 = g(A_1, …)``),
so that the total of its output is ``g`` of the totals.
For a product ``g(a, b) = a·b`` this is ``A_t·B_t/t − A_{t−1}·B_{t−1}/(t−1)`` (rate); the increment
``a_t·B_{t−1} + A_{t−1}·b_t + a_t·b_t`` has one binary operand per term (additions only).
For softmax, GELU or LayerNorm it is expectation compensation and runs in floating point.
:class:`MatMul` holds the ANN's product as a module, and :class:`Call` any function call, so that
``convert`` can wrap them.
"""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.graph.ops import PRODUCT, register_module_kind
from snnconvert.runtime.coding import estimate
from snnconvert.runtime.state import StatefulModule


class MatMul(nn.Module):
    """``a @ b`` as a module; conversion wraps it in :class:`ExpectationCompensated` (or, in the
    ``mst`` mode, leaves it to multiply each step's operands)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


register_module_kind(MatMul, PRODUCT)


class Call(nn.Module):
    """A function or method call as a module: ``fn(*args, **kwargs)``, or ``args[0].fn(*args[1:])``
    when ``fn`` is a method name (how conversion holds a functional op of the graph)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs):
        if isinstance(self.fn, str):
            return getattr(args[0], self.fn)(*args[1:], **kwargs)
        return self.fn(*args, **kwargs)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", str(self.fn))


class ExpectationCompensated(StatefulModule):
    """Wraps ``fn(*args, **kwargs)`` so its output's running mean (rate coding) or total (count
    coding) equals ``fn`` of the running means (totals) of its dynamic (step-varying) inputs; the
    other arguments are passed as they are.

    Args:
        fn: the ANN op (a module, e.g. a :class:`Call`).
        dynamic: positions of the arguments that vary from step to step (None: every positional
            argument).
        bilinear: True when ``fn`` is a product of two dynamic operands (counted as additions
            for a spike operand, not floating-point work).
        coding: ``rate`` or ``count`` (:mod:`snnconvert.runtime.coding`).
    """

    def __init__(self, fn: nn.Module, dynamic: tuple[int, ...] | None = None, bilinear: bool = False,
                 coding: str = "rate"):
        super().__init__()
        self.fn = fn
        self.dynamic = None if dynamic is None else tuple(dynamic)
        self.bilinear = bilinear
        self.coding = coding
        self.t = 0
        self.sums: list[torch.Tensor] | None = None
        self.previous: torch.Tensor | None = None

    def reset(self) -> None:
        self.t = 0
        self.sums = None
        self.previous = None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        self.t += 1
        if self.dynamic is None:
            self.dynamic = tuple(range(len(args)))
        inputs = [args[i] for i in self.dynamic]
        if self.sums is None:
            self.sums = [x.clone() for x in inputs]
        else:
            self.sums = [s + x for s, x in zip(self.sums, inputs)]
        values = list(args)
        for i, total in zip(self.dynamic, self.sums):
            values[i] = estimate(total, self.t, self.coding)
        current = self.fn(*values, **kwargs)
        if self.coding == "rate":
            current = self.t * current
        out = current if self.previous is None else current - self.previous
        self.previous = current
        return out
