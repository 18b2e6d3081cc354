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
        self.reset()

    #: the running totals of the dynamic inputs (``sum0``, ``sum1`` …) and the last ``t·g(ā_t, …)``
    memories = ("sum", "previous")

    def reset(self) -> None:
        super().reset()
        self._values: list[torch.Tensor] | None = None  # the estimates of one step (rate coding)

    def load_state(self, state: dict[str, torch.Tensor], t: int | torch.Tensor) -> None:
        super().load_state(state, t)
        self._values = None

    def _positions(self, args) -> tuple[int, ...]:
        if self.dynamic is None:
            self.dynamic = tuple(range(len(args)))
        return self.dynamic

    def _current(self, args, totals: list[torch.Tensor], t: int | torch.Tensor, kwargs,
                 into: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``t·g(ā_t, …)`` (rate) or ``g(A_t, …)`` (count) from the totals after step ``t`` (a
        bilinear ``g`` under rate coding: ``g(A_t, B_t)/t``, the same without two divisions);
        the estimates are written into ``into`` when given.

        With ``t`` a ``[K]`` tensor of steps, the totals are ``[K, M, …]`` (one row per step) and
        ``g`` runs once on all K steps (a 0-d tensor ``t`` is one step: an exported step's counter).
        """
        steps = t.numel() if isinstance(t, torch.Tensor) and t.dim() == 1 else None

        def per_step(x: torch.Tensor):
            return t if steps is None else t.view(steps, *[1] * (x.dim() - 1))

        if self.bilinear:
            values = totals
        else:
            values = [estimate(total, per_step(total), self.coding, None if into is None else into[i])
                      for i, total in enumerate(totals)]
        if steps is not None:
            values = [v.flatten(0, 1) for v in values]
        merged = list(args)
        for i, value in zip(self.dynamic, values):
            merged[i] = value
        current = self.fn(*merged, **kwargs)
        if steps is not None:
            current = current.unflatten(0, (steps, -1))
        if self.coding == "rate":
            if any(current.data_ptr() == v.data_ptr() for v in values):  # fn gave back an input
                current = current.clone()
            current = current.div_(per_step(current)) if self.bilinear else current.mul_(per_step(current))
        return current

    def step(self, *args, **kwargs) -> torch.Tensor:
        self.t = self.t + 1  # not in place: an exported step shares one counter
        inputs = [args[i] for i in self._positions(args)]
        if self.sum is None:
            self.sum = [_wide(x, copy=True) for x in inputs]
            if self.coding == "rate" and not self.bilinear:
                self._values = [torch.empty_like(total) for total in self.sum]
        else:
            for total, x in zip(self.sum, inputs):
                total.add_(x)
        # write into buffers of earlier steps (out= has no autograd, and an exported step is out-of-place)
        reuse = not torch.is_grad_enabled() and not torch.jit.is_tracing()
        current = self._current(args, self.sum, self.t, kwargs, self._values if reuse else None)
        if self.previous is None:  # kept apart from what is returned, so it can be written over
            self.previous = current.clone()
            return current
        out = torch.sub(current, self.previous, out=self.previous if reuse else None)
        self.previous = current
        return out

    def multi_step(self, *args, **kwargs) -> torch.Tensor:
        """K steps at once: the running totals after each step (added step after step, as
        :meth:`step` adds them), ``fn`` once on all K, and the differences between steps."""
        k = self.steps
        totals = []
        for n, position in enumerate(self._positions(args)):
            steps = args[position].unflatten(0, (k, -1))
            stacked = torch.empty_like(_wide(steps))
            running = None if self.sum is None else self.sum[n]
            for j in range(k):
                running = stacked[j].copy_(steps[j]) if running is None else torch.add(running, steps[j], out=stacked[j])
            totals.append(stacked)
        self.sum = [stacked[-1] for stacked in totals]
        t = torch.arange(self.t + 1, self.t + k + 1, dtype=totals[0].dtype, device=totals[0].device)
        self.t += k
        current = self._current(args, totals, t, kwargs)
        out = torch.empty_like(current)
        if self.previous is None:
            out[0] = current[0]
        else:
            torch.sub(current[0], self.previous, out=out[0])
        torch.sub(current[1:], current[:-1], out=out[1:])
        self.previous = current[-1]
        return out.flatten(0, 1)


def _wide(x: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """``x`` in at least float32 (running totals stay float32 when a step's values are bf16/fp16)."""
    return x.to(torch.promote_types(x.dtype, torch.float32), copy=copy)
