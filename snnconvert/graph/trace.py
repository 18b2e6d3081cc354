"""Trace a model into a ``torch.fx`` graph: the static view every later stage works on.

The tracer is torch.fx's symbolic tracer with three additions:

* **Concrete shapes.** Given an example input it evaluates every node on it while tracing, so a
  branch on a *shape* (``if H % window:``, ``if x.shape[-1] < k:``) is taken as the example takes
  it and a ``torch._assert`` guard is written into the graph; a branch on tensor *values* is
  refused, naming the line.
* **Leaf fallback.** A submodule whose ``forward`` cannot be traced becomes a leaf (a single
  ``call_module`` node run as Python), and the frame that stopped the tracer is kept for the
  error message if no op kind is known for it (see :mod:`snnconvert.graph.ops`).
* **One input.** Extra ``forward`` parameters are fixed to their defaults (e.g. timm's
  ``attn_mask=None``), so the graph takes the image only.
* **Precision contexts dropped.** ``torch.autocast`` blocks (EfficientViT's attention turns
  autocast off around its sums) are traced through as plain code: they change only the precision
  the ops inside run in, and the graph runs in the model's. The modules that had one are listed
  in ``gm.meta["dropped_contexts"]``.
"""
from __future__ import annotations

import contextlib
import inspect
import operator
import traceback
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch.fx.node import map_aggregate

from snnconvert.errors import SnnConvertError
from snnconvert.graph.ops import is_known_leaf, reads_shape


@dataclass(frozen=True)
class TraceFailure:
    """Why a submodule could not be traced: the module and the source line that stopped the tracer."""

    module: str
    type_name: str
    frame: str
    error: str

    def describe(self) -> str:
        return f"its forward does not trace ({self.error} at {self.frame})"


def _frame(error: BaseException) -> str:
    """``file:line: code`` of the innermost frame outside torch and this module."""
    skip = ("torch/fx/", "torch/nn/modules/module.py", "snnconvert/graph/trace.py", "torch/_jit_internal")
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not any(s in f.filename for s in skip)]
    if not frames:
        return "<unknown>"
    f = frames[-1]
    name = f.filename.split("site-packages/")[-1]
    return f"{name}:{f.lineno} ({(f.line or '').strip()})"


class _Proxy(fx.Proxy):
    """A proxy that records item assignment into tensors computed from shapes and constants only
    (e.g. an attention mask built window by window); assignment into input-dependent tensors is refused."""

    def __setitem__(self, index, value) -> None:
        if not _static(self.node):
            raise fx.proxy.TraceError("item assignment into a tensor that depends on the input")
        self.tracer.create_proxy("call_function", operator.setitem, (self, index, value), {})


class GraphTracer(fx.Tracer):
    """The tracer behind :func:`trace` (see the module docstring).

    Args:
        example: an example input; with it branches on shapes are specialized and guarded.
        fixed: the values of the forward parameters after the first (their defaults).
    """

    def __init__(self, example: torch.Tensor | None, fixed: dict[str, Any] | None = None):
        super().__init__()
        self.example = example
        self.fixed = fixed or {}
        self.values: dict[fx.Node, Any] = {}
        self._evaluating = False  # computing a node's value: module calls and attributes run as Python
        self.dropped_contexts: set[str] = set()
        self._placeholders = 0
        self.failures: dict[str, TraceFailure] = {}
        self._fallback_leaves: set[str] = set()

    # -- leaves and fallback -------------------------------------------------------------------

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return (qualified_name in self._fallback_leaves or is_known_leaf(m)
                or super().is_leaf_module(m, qualified_name))

    def call_module(self, m: nn.Module, forward, args, kwargs):
        if self._evaluating:
            return forward(*args, **kwargs)
        path = self.path_of_module(m)
        if self.is_leaf_module(m, path) or m is self.root:
            return super().call_module(m, forward, args, kwargs)
        before = len(self.graph.nodes)
        stack, calls = dict(self.module_stack), dict(self.num_calls)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as error:  # noqa: BLE001 - any failure makes the module a leaf
            for node in reversed(list(self.graph.nodes)[before:]):
                self.values.pop(node, None)
                self.graph.erase_node(node)
            self.module_stack.clear()
            self.module_stack.update(stack)
            self.num_calls = calls
            if path not in self.failures:
                self.failures[path] = TraceFailure(path, type(m).__name__, _frame(error),
                                                   f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
            self._fallback_leaves.add(path)
            return super().call_module(m, forward, args, kwargs)

    # -- concrete values -----------------------------------------------------------------------

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if self.example is not None and kind != "output":
            self.values[proxy.node] = self._evaluate(kind, target, args, kwargs, proxy.node)
        return proxy

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val if self._evaluating else super().getattr(attr, attr_val, parameter_proxy_cache)

    def _value(self, arg):
        return self.values[arg.node] if isinstance(arg, fx.Proxy) else arg

    def _evaluate(self, kind, target, args, kwargs, node):
        if kind == "placeholder":
            self._placeholders += 1
            return self.example if self._placeholders == 1 else list(self.fixed.values())[self._placeholders - 2]
        args = map_aggregate(args, self._value)
        kwargs = map_aggregate(kwargs, self._value)
        self._evaluating = True
        try:
            with torch.no_grad():
                if kind == "get_attr":
                    return operator.attrgetter(target)(self.root)
                if kind == "call_module":
                    return self.root.get_submodule(target)(*args, **kwargs)
                if kind == "call_method":
                    return getattr(args[0], target)(*args[1:], **kwargs)
                return target(*args, **kwargs)
        finally:
            self._evaluating = False

    def to_bool(self, obj: fx.Proxy) -> bool:
        node = obj.node
        if node not in self.values:
            raise fx.proxy.TraceError(
                "a branch on a traced value (pass an example input so branches on shapes can be specialized)")
        if not _shape_derived(node):
            raise fx.proxy.TraceError("a branch on tensor values (only branches on shapes can be specialized)")
        taken = bool(self.values[node])
        condition = obj if taken else self.create_proxy("call_function", operator.not_, (obj,), {})
        self.create_proxy("call_function", torch._assert,
                          (condition, f"the graph was traced for another input shape ({node.name} was {taken})"), {})
        return taken


def _shape_derived(node: fx.Node) -> bool:
    """Whether ``node`` is computed from tensor shapes and literals only."""
    return _derived(node, lambda n: False)


def _static(node: fx.Node) -> bool:
    """Whether ``node`` is computed from shapes, parameters and literals (not the input's values)."""
    return _derived(node, lambda n: n.op == "get_attr")


def _derived(node: fx.Node, source, memo: dict | None = None) -> bool:
    memo = {} if memo is None else memo
    if node not in memo:
        if reads_shape(node) or source(node):
            memo[node] = True
        elif node.op in ("placeholder", "get_attr"):
            memo[node] = False
        else:
            memo[node] = all(_derived(n, source, memo) for n in node.all_input_nodes)
    return memo[node]


def _drop_fixed_parameters(graph: fx.Graph) -> None:
    """Remove the placeholders of parameters fixed to their defaults, with the guards on them."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for placeholder in placeholders[1:]:
        users, frontier = [], [placeholder]
        while frontier:
            node = frontier.pop()
            for user in node.users:
                if user not in users:
                    users.append(user)
                    frontier.append(user)
        for node in sorted(users, key=lambda n: -_position(graph, n)):
            graph.erase_node(node)
        graph.erase_node(placeholder)


def _position(graph: fx.Graph, node: fx.Node) -> int:
    return next(i for i, n in enumerate(graph.nodes) if n is node)


#: the precision contexts the tracer drops, as ``(module, attribute)``
_PRECISION_CONTEXTS = [(torch, "autocast"), (torch.amp, "autocast"), (torch.cpu.amp, "autocast"),
                       (torch.cuda.amp, "autocast")]


@contextlib.contextmanager
def _without_precision_contexts(tracer: GraphTracer):
    """Within the block, ``torch.autocast(...)`` is a context that does nothing and records the
    module being traced in ``tracer.dropped_contexts``."""
    def dropped(*args, **kwargs):
        tracer.dropped_contexts.add(next(reversed(tracer.module_stack), "") or "<model>")
        return contextlib.nullcontext()

    saved = [(owner, name, getattr(owner, name)) for owner, name in _PRECISION_CONTEXTS if hasattr(owner, name)]
    for owner, name, _ in saved:
        setattr(owner, name, dropped)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


@contextlib.contextmanager
def _through_wrapped_functions():
    """Trace into functions other libraries hide from fx with ``torch.fx.wrap`` (torchvision's Swin
    attention, stochastic depth …): what made them opaque, branches on shapes, is what this tracer
    specializes. torch's own wrapped functions stay as they are. (Uses fx's table of wrapped
    functions; if a torch version lacks it, such functions stay opaque ops.)"""
    table = getattr(fx._symbolic_trace, "_wrapped_fns_to_patch", None)
    if not isinstance(table, dict):
        yield
        return
    saved = dict(table)
    for key, frame in saved.items():
        module = str(frame.get("__name__", ""))
        if module != "torch" and not module.startswith("torch."):
            del table[key]
    try:
        yield
    finally:
        table.clear()
        table.update(saved)


def trace(model: nn.Module, example: torch.Tensor | None = None,
          reset: Callable[[nn.Module], None] | None = None) -> tuple[fx.GraphModule, dict[str, TraceFailure]]:
    """Trace ``model`` (in eval mode) into a GraphModule of one tensor input.

    Args:
        model: the module to trace; its submodules are shared with the result.
        example: an example input batch; when given, branches on shapes are specialized to it
            (and guarded), and the traced graph is checked against ``model`` on it.
        reset: what returns a stateful (spiking) model, or its graph, to its initial state: called
            before and after each run here (``snnconvert.runtime.reset_states``).

    Returns:
        The GraphModule (same ``training`` flag as ``model``), and the submodules that became
        leaves because their forward did not trace, by qualified name.

    Raises:
        SnnConvertError: when the model's own forward does not trace.
    """
    training = model.training
    model.eval()
    parameters = list(inspect.signature(model.forward).parameters.values())
    fixed = {}
    for p in parameters[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            raise SnnConvertError(f"{type(model).__name__}.forward takes a required argument {p.name!r} besides the "
                                  "input; only single-input models can be converted")
        fixed[p.name] = p.default
    tracer = GraphTracer(example, fixed)
    reset = reset or (lambda _module: None)
    reset(model)  # a stateful model (a spiking one) is traced from its initial state
    try:
        with _through_wrapped_functions(), _without_precision_contexts(tracer):
            graph = tracer.trace(model, concrete_args=fixed or None)
    except Exception as error:  # noqa: BLE001 - reported with the frame
        raise SnnConvertError(f"{type(model).__name__}.forward does not trace: {type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200]} at {_frame(error)}") from error
    finally:
        model.train(training)
        reset(model)
    _drop_fixed_parameters(graph)
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    for node in graph.nodes:  # tensors the forward creates are part of the code, not of the state
        if node.op == "get_attr" and node.target.startswith("_tensor_constant"):
            gm._non_persistent_buffers_set.add(node.target)
    gm.train(training)
    gm.meta["dropped_contexts"] = sorted(tracer.dropped_contexts)
    if example is not None:
        _check_same_function(model, gm, example, reset)
    return gm, tracer.failures


@torch.no_grad()
def _check_same_function(model: nn.Module, gm: fx.GraphModule, example: torch.Tensor,
                         reset: Callable[[nn.Module], None]) -> None:
    training = model.training
    model.eval()
    gm.eval()
    try:
        reset(model)
        expected = model(example)
        reset(gm)
        got = gm(example)
    finally:
        reset(gm)
        model.train(training)
        gm.train(training)
    if not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise SnnConvertError(f"the traced graph of {type(model).__name__} does not compute the model's function "
                              f"(max difference {float((expected - got).abs().max()):.3g}); a branch the tracer "
                              "cannot see (e.g. on self.training or global state) may differ")
