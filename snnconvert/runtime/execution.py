"""How the simulator runs a converted model: the constant input folded, K steps per call, a precision.

* **Folding the input.** Every value computed from the input alone through ops without state
  (:data:`~snnconvert.graph.events.INPUT`: the patch embedding, a first conv and its BatchNorm, a
  class token and position embedding) is the same at every step under rate coding. The graph is
  split in two: a *prefix* that computes those values once per batch, and a *step* graph that
  takes them as inputs. Nothing else changes, so every step computes what it computed before.
* **Time batching.** The step graph runs ``K`` steps per call (:func:`~snnconvert.runtime.state.set_steps`):
  its folded inputs are repeated K times along the batch dimension (time outermost), every
  stateless op (Linear, Conv, matmul with a constant, norms) runs once on ``K·N`` rows, and each
  stateful module scans its K steps as K single steps would. Memory grows with K, not with T.
* **Precision.** ``bf16`` / ``fp16`` run the step graph under autocast: matmuls and convolutions
  in half precision, while membranes, the running totals of compensated ops and every statistic
  stay float32 (they are created float32 whatever the dtype of a step's input).
* **Silent layers.** A Linear or Conv without a bias (count coding takes biases out into
  once-counted offsets) fed nothing but zeros at a step sends zeros: on a CPU, where looking costs
  no device sync, it does not run then (in the context of an :class:`Execution`, at fp32, not
  compiled). Late in a count-coded run most layers of a batch receive nothing at most steps.
* **Layers that stop.** A module with a ``last_step`` (a layer with dynamic time steps) sends
  zeros after it, and whatever only it reads is not needed after it either (:func:`run_steps`).
  After each such step the simulation goes on with a pruned copy of the step graph: the stopped
  ops are gone, and a stopped module that running ops still read is a zero tensor.
"""
from __future__ import annotations

import math
import operator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import fx, nn

from snnconvert.checks import check_fields
from snnconvert.errors import ArgumentError
from snnconvert.graph.events import INPUT, classify
from snnconvert.runtime.masking import reseed_masks
from snnconvert.runtime.state import StatefulModule, reset_states, set_steps
from snnconvert.runtime.statistics import Recorder

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: samples per call (K·N) the default chunk aims at, by device type: enough to fill a GPU. Elsewhere
#: the default is one step per call: on a CPU memory traffic dominates, and K steps multiply the
#: activations each op streams (benchmarks/simulation_cost.py: K = 8 helps resnet_nano's small
#: layers, does nothing for swin/vit_nano at batch 128, and doubles EfficientNet-Lite0's cost at 224²)
ROWS_PER_CALL = {"cuda": 8192}


@dataclass(frozen=True)
class SimulationOptions:
    """How :func:`~snnconvert.runtime.simulate` runs, not what it computes (every choice gives the
    same outputs; ``metrics`` and ``event_driven`` choose what is measured).

    Attributes:
        chunk: K, the steps run per call (time batching; exact against single steps); memory grows
            with K, not T. None: about :data:`ROWS_PER_CALL` samples per call on a GPU, one step
            per call on a CPU (where memory traffic, not the number of calls, sets the cost).
        metrics: ``full`` (every spiking statistic), or ``basic`` (spikes and energy only: the
            layers' firing, negative and residual potential are None).
        precision: ``fp32``, or ``bf16`` / ``fp16`` matmuls with float32 membranes and totals.
        compile: ``torch.compile`` the step graph (worth it on a GPU; a string names the backend).
        event_driven: count each op's work from the increments its inputs sent (count coding:
            :mod:`snnconvert.runtime.streams`); None: wherever the model is count-coded.
        fold: compute what depends on the input alone once per batch.
        skip_silent: at fp32 on a CPU, a bias-less weight layer fed only zeros returns zeros
            without running (exact); False runs every layer at every step.
    """

    chunk: int | None = None
    metrics: str = "full"
    precision: str = "fp32"
    compile: bool | str = False
    event_driven: bool | None = None
    fold: bool = True
    skip_silent: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        if self.chunk is not None and self.chunk < 1:
            raise ArgumentError(f"chunk must be >= 1 steps per call, got {self.chunk}")
        if self.metrics not in ("basic", "full"):
            raise ArgumentError(f"metrics must be 'basic' or 'full', got {self.metrics!r}")
        if self.precision not in PRECISIONS:
            raise ArgumentError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")


def keep_samples(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The rows of the samples where ``mask`` holds, from ``x`` whose leading dimension holds the
    same number of rows per sample (Swin's windows: ``[N·windows, …]``), sample after sample."""
    return x.unflatten(0, (len(mask), -1))[mask].flatten(0, 1)


def split_input(gm: fx.GraphModule) -> tuple[fx.GraphModule | None, fx.GraphModule]:
    """``(prefix, step)``: ``prefix(x)`` returns the tuple of input-only values the rest of the
    graph reads, ``step(*values)`` computes the output from them (``(None, gm)`` when nothing
    but the input itself would be folded)."""
    classes, _ = classify(gm)
    folded = {n for n, c in classes.items() if c == INPUT and "shape" in n.meta}
    if any(_mutates(n) and n.args and n.args[0] in folded for n in gm.graph.nodes):
        return None, gm  # a value of the input written over in place: it must be computed every step
    rest = [n for n in gm.graph.nodes if n not in folded]  # every other node, side effects included
    boundary = {i for n in rest for i in n.all_input_nodes if i in folded}
    order = [n for n in gm.graph.nodes if n in boundary]
    if all(n.op == "placeholder" for n in order):
        return None, gm

    prefix_graph, env = fx.Graph(), {}
    wanted = _ancestors(order)
    for node in gm.graph.nodes:
        if node in wanted:
            env[node] = prefix_graph.node_copy(node, env.__getitem__)
    prefix_graph.output(tuple(env[n] for n in order))

    step_graph, env = fx.Graph(), {}
    for node in order:
        env[node] = step_graph.placeholder(node.name)
        env[node].meta = dict(node.meta)
    for node in rest:
        env[node] = step_graph.node_copy(node, env.__getitem__)
    prefix, step = fx.GraphModule(gm, prefix_graph), fx.GraphModule(gm, step_graph)
    step.meta.update(gm.meta)
    return prefix, step


def _mutates(node: fx.Node) -> bool:
    """Whether ``node`` writes into its first argument (``x[i] = v``, ``x.add_(y)``)."""
    if node.op == "call_function":
        return node.target is operator.setitem or getattr(node.target, "__name__", "").endswith("_")
    return node.op == "call_method" and str(node.target).endswith("_") and not str(node.target).startswith("_")


def run_steps(gm: fx.GraphModule) -> dict[fx.Node, int]:
    """The steps each node of ``gm`` is computed for, for the nodes that stop (the others run at
    every step): a module with a ``last_step`` sends zeros after it, and any other node is needed as
    long as some node that reads it runs (the output, and a node that writes in place, always)."""
    steps: dict[fx.Node, float] = {}
    for node in reversed(gm.graph.nodes):
        if node.op in ("placeholder", "output") or _mutates(node) or not node.users:
            need = math.inf
        else:
            need = max(steps[user] for user in node.users)
        if node.op == "call_module":
            last = getattr(gm.get_submodule(node.target), "last_step", None)
            if last is not None:
                need = min(need, last)
        steps[node] = need
    return {n: int(s) for n, s in steps.items() if s != math.inf}


def _silent(like: torch.Tensor, rows: int, per: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The zeros a stopped module sends: ``rows`` leading rows per ``per`` rows of ``like`` (a
    step input: its rows follow the batch and the steps per call), each of ``shape``."""
    return like.new_zeros((like.shape[0] * rows // per, *shape))


def _pruned(gm: fx.GraphModule, steps: dict[fx.Node, int], after: int) -> fx.GraphModule:
    """``gm`` without the nodes that stop by step ``after`` (of :func:`run_steps`); those read by
    a node that runs on become zeros of their shape."""
    graph, env = fx.Graph(), {}
    first = next(n for n in gm.graph.nodes if n.op == "placeholder")
    for node in gm.graph.nodes:
        if steps.get(node, math.inf) > after:
            env[node] = graph.node_copy(node, env.__getitem__)
        elif any(steps.get(user, math.inf) > after for user in node.users):
            shape = node.meta["shape"]
            env[node] = graph.call_function(_silent, (env[first], shape[0], first.meta["shape"][0], tuple(shape[1:])))
    pruned = fx.GraphModule(gm, graph)
    pruned.meta.update(gm.meta)
    return pruned


def _ancestors(nodes: list[fx.Node]) -> set[fx.Node]:
    found, frontier = set(), list(nodes)
    while frontier:
        node = frontier.pop()
        if node not in found:
            found.add(node)
            frontier.extend(node.all_input_nodes)
    return found


class Execution:
    """A converted model run as the simulator runs it (see the module docstring); as a context
    manager it puts the model back to single steps on leaving, whatever happened.

    Args:
        snn: the converted model (a GraphModule).
        options: K (``chunk``, see :meth:`steps_per_call`), precision (autocast of the step graph
            on its device), ``compile``, ``fold`` and ``skip_silent`` (:class:`SimulationOptions`).
    """

    def __init__(self, snn: fx.GraphModule, options: SimulationOptions = SimulationOptions()):
        self.snn, self.chunk, self.precision, self.compile = snn, options.chunk, options.precision, options.compile
        self.skip_silent = options.skip_silent
        self.prefix, self.step = split_input(snn) if options.fold else (None, snn)
        self._stops = run_steps(self.step)
        self._ends = sorted(set(self._stops.values()))  # the steps after which some nodes stop
        self._phases: dict[int, nn.Module] = {}  # the graph run after step k (k = 0 or an end), compiled
        self._steps = 0
        self._skipping: list[nn.Module] = []  # layers that skip silent steps (in the context)
        self.t = 0  # steps done in this batch

    def steps_per_call(self, images: torch.Tensor) -> int:
        """K for a batch of ``images``: ``chunk``, or by default ``ROWS_PER_CALL // N`` (at least 1)
        on a device listed there, else 1."""
        if self.chunk is not None:
            return self.chunk
        return max(1, ROWS_PER_CALL.get(images.device.type, 1) // max(1, len(images)))

    def reset(self, batch: int = 0) -> None:
        """Back to t = 0 for sample batch ``batch`` (its spike masks' draws)."""
        reset_states(self.snn)
        reseed_masks(self.snn, batch)
        self.t = 0

    def keep(self, inputs: tuple[torch.Tensor, ...], mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Drop the samples where ``mask`` (one bool per sample) is False from the batch: from every
        stateful module's state and record; returns the step's ``inputs`` without them."""
        for module in self.snn.modules():
            if isinstance(module, StatefulModule):
                state = module.state()
                if state:
                    module.load_state({k: keep_samples(v, mask) for k, v in state.items()}, module.t)
            if isinstance(module, Recorder) and module.record is not None:
                module.record.keep(mask)
        return tuple(keep_samples(x, mask) for x in inputs)

    def inputs(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the step graph takes, from a batch of images: computed once per batch."""
        if self.prefix is None:
            return (images,)
        with self._autocast(images):
            return tuple(self.prefix(images))

    def run(self, inputs: tuple[torch.Tensor, ...], steps: int) -> torch.Tensor:
        """The next ``steps`` time steps from :meth:`inputs`: outputs ``[steps, N, …]`` (each step on
        the graph of what still runs at it)."""
        outputs = []
        while steps:
            start = max((e for e in self._ends if e <= self.t), default=0)
            end = next((e for e in self._ends if e > self.t), None)
            k = steps if end is None else min(steps, end - self.t)
            outputs.append(self._run_steps(self._phase(start), inputs, k))
            self.t, steps = self.t + k, steps - k
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _phase(self, start: int) -> nn.Module:
        """The step graph run after step ``start`` (pruned of what stopped by then), compiled if asked."""
        if start not in self._phases:
            graph = self.step if start == 0 else _pruned(self.step, self._stops, start)
            backend = {"backend": self.compile} if isinstance(self.compile, str) else {}
            self._phases[start] = torch.compile(graph, **backend) if self.compile else graph
        return self._phases[start]

    def _run_steps(self, graph: nn.Module, inputs: tuple[torch.Tensor, ...], steps: int) -> torch.Tensor:
        if steps != self._steps:
            set_steps(self.snn, steps)
            self._steps = steps
        repeated = inputs if steps == 1 else tuple(x.expand(steps, *x.shape).flatten(0, 1) for x in inputs)
        with self._autocast(inputs[0]):
            out = graph(*repeated)
        out = out.unflatten(0, (steps, -1))
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out

    def close(self) -> None:
        """Back to single steps."""
        set_steps(self.snn, 1)
        self._steps = 1

    def __enter__(self) -> Execution:
        if self.skip_silent and self.precision == "fp32" and not self.compile:
            self._skipping = [m for m in self.step.modules() if isinstance(m, _SKIPPABLE) and m.bias is None]
            for layer in self._skipping:
                layer.forward = _SkipSilent(layer.forward)
        return self

    def __exit__(self, *exc) -> None:
        for layer in self._skipping:
            del layer.forward  # the class's forward again
        self._skipping = []
        self.close()

    def _autocast(self, like: torch.Tensor):
        dtype = PRECISIONS[self.precision]
        return nullcontext() if dtype is None else torch.autocast(like.device.type, dtype=dtype)


_SKIPPABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _SkipSilent:
    """A bias-less weight layer's forward that, on a CPU, returns zeros for an all-zero input
    without running (exact: with no bias, zeros in give zeros out), once it has seen the shape
    of its output for that input."""

    def __init__(self, forward):
        self.forward, self.shapes = forward, {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.shape in self.shapes and not x.any():
            return x.new_zeros(self.shapes[x.shape])
        out = self.forward(x)
        self.shapes[x.shape] = out.shape
        return out
