"""Operations and energy of a converted model, from its graph and the spikes each source sent.

Every op of the graph is accounted for, from the static classification of its operands
(:mod:`snnconvert.graph.events`), with nothing recognized while the model runs:

* a Linear / Conv (module or functional) fed **events** does one accumulate per event and
  connection: ``SOP = Σ_sources Σ_i count_i × fan-out_i``, where ``count_i`` is how many spikes
  element i of a source sent over the simulation (kept by the source itself) and ``fan-out_i``
  how many (output, weight) pairs it reaches through the ops in between (rearrangements, sums,
  scalings, average pools: computed once, by autograd through the graph with unit weights; exact
  at convolution edges). Fed **real** values it does dense multiply-accumulates every step.
* a compensated product ``y = a @ b`` updates ``A_t·B_t`` by ``a_t·B_t + A_{t−1}·b_t``: an events
  operand makes its term additions (events × the other operand's outer size; the ``b`` term from
  the second step on), a real one MACs; emitting ``y_t`` is one float op per output element. A
  per-step product (``mst`` mode, direct training) costs additions over its events operand.
* softmax, norms, kept activations, compensated ops, unfolded BatchNorm, scalings of real values:
  one float op per output element and step (a lower bound: an exponential costs more).
* additions of real values (the residual stream, biases added to a stream) and reductions (means,
  average pools): one addition per element and step; adding events to a real value costs one
  addition per event.
* ops on the input alone, up to the first neurons (the simulator computes them once per batch
  under rate coding; count coding presents the image once) are counted for one step.
* an op that stops after step k (it feeds only layers with dynamic time steps that stopped:
  :func:`~snnconvert.runtime.execution.run_steps`) is counted for its first k steps: its MACs
  for ``Σ_samples min(steps, k)`` steps, its SOPs from the spikes its sources sent by step k.
* rearrangements, shape arithmetic, values computed once from parameters, and the neurons' own
  updates (where the synaptic operations land) cost nothing here.

**Event-driven** (count coding, :mod:`snnconvert.runtime.streams`): a value sends only its nonzero
increments, and each op costs per step only what they reach: a weight layer or a product fed a real
value one MAC per sent element × its fan-out (``Σ_i sent_i × fan-out_i``, as for spikes); a
compensated product's emission, one addition (of its two terms) per output element that changed,
and a scaling of its output by a constant nothing (folded into the stored operand it multiplies:
each event adds ``c·θ`` to the totals instead of ``θ``); an elementwise op,
every output at the first step (``g(0)`` need not be 0), then one op per sent input element (a
binary op: the sum over its inputs, an upper bound of their union); a softmax over the last
dimension, likewise, the whole row for each row with a sent element; real
additions and averages, one addition per sent element. A weight layer fed a **mixed stream**
(:func:`mixed_streams`: a real value of the first step plus events, count coding's residual stream)
does, by linearity, its MACs on the whole value at the first step, then one accumulate per event
and connection, as if fed events. Ops whose work cannot be read from their inputs' increments (a
norm over several dimensions, a softmax over another one, ops that stop early) stay dense.

``E = E_AC·(SOP + additions) + E_MAC·(MAC + float ops)`` with the 45 nm defaults ``E_AC = 0.9 pJ``
(a 32-bit float addition), ``E_MAC = 4.6 pJ``. The ANN's figure counts the same ops densely.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import fx, nn

from snnconvert.graph import ops
from snnconvert.graph.edit import join, owner
from snnconvert.graph.events import (EVENTS, INPUT, MIXED, ONCE, REAL, STATIC, classify, is_event_pool, is_source,
                                     mixed_streams)
from snnconvert.graph.shapes import example_input, per_sample
from snnconvert.runtime.energy.table import OpTable, OpCost, Term
from snnconvert.runtime.execution import run_steps
from snnconvert.runtime.operators import Call, ExpectationCompensated, MatMul
from snnconvert.runtime.state import reset_states
from snnconvert.runtime.streams import probe_name

#: why an event-driven scaling of a product's output costs nothing (:attr:`OpAccounting.free`)
FOLDED_SCALING = "a constant scaling of a product's output (folded into the product's stored operand)"
_ADDS = ops.ADDITIONS | ops.SUBTRACTIONS


def op_name(node: fx.Node) -> str:
    """The name of the op a node computes in the accounting: its module's path, or its owner's and its own."""
    if node.op == "call_module":
        return node.target
    return join(owner(node), node.name)


def _weight_shape(node: fx.Node, gm: fx.GraphModule) -> tuple[int, ...]:
    """Shape of a weight layer's weight (module, or functional with a constant weight)."""
    if node.op == "call_module":
        return tuple(gm.get_submodule(node.target).weight.shape)
    weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
    return tuple(weight.meta["shape"])


def _target(node: fx.Node):
    return node.target if node.op != "call_module" else None


def _literal(value):
    """A call argument as a value: a node's recorded value (a shape, a padding)."""
    return value.meta.get("value") if isinstance(value, fx.Node) else value


class OpAccounting(OpTable):
    """The operations every op of a converted model does, from its graph (see the module docstring).

    Args:
        snn: a converted model (a GraphModule annotated by ``convert``).
        dense: count every value as real and every op once (the ANN's figure, per sample).
        event_driven: charge what the values' sent increments reach (count coding; see the module
            docstring): the run watches the values in :attr:`streams`
            (:func:`~snnconvert.runtime.streams.watching`).

    Attributes:
        streams: the values an event-driven run watches: ``probe name: (node, by rows)``.
    """

    def __init__(self, snn: fx.GraphModule, dense: bool = False, event_driven: bool = False):
        self.gm, self.dense, self.event_driven = snn, dense, event_driven and not dense
        self.classes, self.kinds = classify(snn)
        if dense:
            self.classes = {n: (STATIC if c == STATIC else REAL) for n, c in self.classes.items()}
        self._source_nodes = {n.target: n for n in snn.graph.nodes if self.classes[n] == EVENTS
                              and (is_source(n, snn) or is_event_pool(n, snn, self.kinds, self.classes))}
        self.mixed = mixed_streams(snn, self.classes, self.kinds) if self.event_driven else set()
        self.streams: dict[str, tuple[fx.Node, bool]] = {}
        # (op, its events input, fan-out: a number, or the weight-layer node to compute it for, b-term)
        self._consumers: list[tuple[OpCost, fx.Node, float | fx.Node, bool]] = []
        self.ops: list[OpCost] = []
        self.free: dict[str, list[str]] = {}
        stops = {} if dense else run_steps(snn)
        for node in snn.graph.nodes:
            op = self._account(node)
            if op is not None:
                op.once, op.until = self.classes[node] in (INPUT, ONCE), stops.get(node)
                self.ops.append(op)
            elif node.op.startswith("call"):
                self.free.setdefault(self._why_free(node), []).append(op_name(node))
        self.sources = [*self._source_nodes, *self.streams]
        if self._consumers:
            self._trace_fanouts()

    # -- per op --------------------------------------------------------------------------------

    def _account(self, node: fx.Node) -> OpCost | None:
        kind, cls = self.kinds[node], self.classes[node]
        if cls == STATIC or node.op in ("placeholder", "output"):
            return None
        module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        out = per_sample(node) if "shape" in node.meta else 0.0
        if kind == ops.WEIGHT:
            op = OpCost(op_name(node), "linear")
            if _target(node) in ops.MATRIX_PRODUCTS:  # a matrix product with a constant matrix
                i, x = next((i, a) for i, a in enumerate(node.args[:2]) if self.classes.get(a) != STATIC)
                inner = float(x.meta["shape"][-1 if i == 0 else -2])
                spec = inner * out / per_sample(x)  # outputs each element reaches (× 1 weight each)
            else:
                x, shape = node.args[0], _weight_shape(node, self.gm)
                inner, spec = math.prod(shape[1:]), node
            if self.classes[x] == EVENTS:
                self._consumers.append((op, x, spec, False))
            elif x in self.mixed:  # its real part at the first step (densely), then its events
                op.first_step_macs = out * inner
                self._consumers.append((op, x, spec, True))
            elif self._live(node):
                self._sent(op, x, "macs", spec if isinstance(spec, float) else self._unit_fanout(spec, x))
            else:
                op.macs = out * inner
            return op
        if isinstance(module, ExpectationCompensated) and module.bilinear:
            live = self._live(node)
            op = OpCost(op_name(node), "product", float_ops=0.0 if self.dense or live else out)
            if live:  # its emission: the sum of its two terms, one addition per output element that changed
                self._sent(op, node, "adds", 1.0)
            a, b = (node.args[i] for i in module.dynamic)
            for operand, after_first in ((a, False), (b, True)):
                self._operand(op, node, operand, after_first, live)
            if self.dense:
                op.macs = out * self._contracted(node, a)
            return op
        if kind == ops.PRODUCT or isinstance(module, MatMul):
            op = OpCost(op_name(node), "product")
            a, b = (n for n in node.args[:2])
            spiking = next((x for x in (a, b) if self.classes.get(x) == EVENTS), None)
            if spiking is not None:
                self._consumers.append((op, spiking, self._operand_fanout(node, spiking), False))
            else:
                op.macs = out * self._contracted(node, a)
            return op
        if isinstance(module, ExpectationCompensated) or kind in (ops.SOFTMAX, ops.NORM, ops.NONLINEAR,
                                                                   ops.ACTIVATION, ops.BATCHNORM):
            op = OpCost(op_name(node), "elementwise", float_ops=out)
            inner = module.fn if isinstance(module, ExpectationCompensated) else module
            reach = ops.recomputed_by(inner.fn if isinstance(inner, Call) else inner or node.target, node)
            if reach is not None and self._live(node):  # every output at the first step (g(0) need not be 0)
                op.float_ops, op.first_step_float_ops = 0.0, out
                self._per_input(op, node, "float_ops", reach == "rows", after_first=True)
            return op
        if kind == ops.MAXPOOL:
            return None if cls == EVENTS else OpCost(op_name(node), "elementwise", float_ops=out)
        if kind == ops.LINEAR and cls in (REAL, INPUT, ONCE):
            return self._linear(node, module, out)
        return None

    def _why_free(self, node: fx.Node) -> str:
        """Why an op costs nothing here (``unaccounted`` if it should have cost something)."""
        kind, cls = self.kinds[node], self.classes[node]
        if cls == STATIC:
            return "static (shapes, guards, values computed once)"
        if kind in (ops.STRUCTURAL, ops.IDENTITY):
            return "rearrangement"
        if kind == ops.SPIKING:
            return "neuron, mask, encoder, or a constant or input counted once (synaptic operations land in neurons)"
        if cls == EVENTS:
            return "on events (folded into the synaptic operations of the layers they reach)"
        if ops.calls(node, ops.NEGATIONS):
            return "sign change"
        if self._live(node) and self._folded_scaling(node):
            return FOLDED_SCALING
        return "unaccounted"

    @property
    def unaccounted(self) -> list[str]:
        """Ops that do work but have no count: none, for every op kind conversion produces."""
        return self.free.get("unaccounted", [])

    def _linear(self, node: fx.Node, module: nn.Module | None, out: float) -> OpCost | None:
        target, live = _target(node), self._live(node)
        if target in _ADDS:
            op = OpCost(op_name(node), "add")
            spikes = [a for a in node.args[:2] if isinstance(a, fx.Node) and self.classes.get(a) == EVENTS]
            if spikes:  # a real value plus events: one addition per event
                self._consumers.append((op, spikes[0], 1.0, False))
            elif live:
                self._per_input(op, node, "adds")
            else:
                op.adds = out
            return op
        if target in ops.SCALINGS:
            if live and self._folded_scaling(node):
                return None
            op = OpCost(op_name(node), "elementwise", float_ops=0.0 if live else out)
        elif target in ops.SCALED_ADDITIONS:  # a multiply and an add per element
            op = OpCost(op_name(node), "elementwise", float_ops=0.0 if live else out, adds=0.0 if live else out)
            if live:
                self._per_input(op, node, "adds")
        elif target in ops.AVERAGES or isinstance(module, ops.POOL_MODULES):  # an addition per input element
            op = OpCost(op_name(node), "add", adds=0.0 if live else per_sample(node.args[0]))
            if live:
                self._sent(op, node.args[0], "adds", 1.0)
            return op
        elif target in ops.NEGATIONS:
            return None
        else:
            return OpCost(op_name(node), "add", adds=out)
        if live:
            self._per_input(op, node, "float_ops")
        return op

    def _folded_scaling(self, node: fx.Node) -> bool:
        """A scaling by a constant of the output of a compensated product of two streams that
        nothing else reads: event-driven, the constant is folded into the product."""
        if not ops.calls(node, ops.SCALINGS):
            return False
        inputs = self._dynamic_inputs(node)
        if len(inputs) != 1 or len(inputs[0].users) != 1 or inputs[0].op != "call_module":
            return False
        product = self.gm.get_submodule(inputs[0].target)
        return isinstance(product, ExpectationCompensated) and product.bilinear

    def _contracted(self, product: fx.Node, a: fx.Node) -> float:
        """Inner size of a product: k of ``[n, k] @ [k, m]``, 1 for an elementwise product."""
        module = self.gm.get_submodule(product.target) if product.op == "call_module" else None
        inner = module.fn if isinstance(module, ExpectationCompensated) else module
        op = inner.fn if isinstance(inner, Call) else _target(product)
        return float(a.meta["shape"][-1]) if isinstance(inner, MatMul) or op in ops.MATRIX_PRODUCTS else 1.0

    def _operand(self, op: OpCost, product: fx.Node, operand: fx.Node, after_first: bool, live: bool) -> None:
        fanout = self._operand_fanout(product, operand)
        if self.classes.get(operand) == EVENTS:
            self._consumers.append((op, operand, fanout, after_first))
        elif live:
            self._sent(op, operand, "macs", fanout, after_first)
        elif not self.dense:
            macs = per_sample(operand) * fanout
            op.macs += macs
            if after_first:
                op.first_step_macs -= macs

    # -- event-driven: what the sent elements of real values reach ---------------------------

    def _dynamic_inputs(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in ops.data_inputs(node) if self.classes.get(a, STATIC) != STATIC]

    def _live(self, node: fx.Node) -> bool:
        """Whether ``node``'s costs follow its inputs' sent increments: event-driven, an op of every
        step (not one on the input alone), and every dynamic input a watched value of every step."""
        return self.event_driven and self.classes[node] not in (INPUT, ONCE) and all(
            self.classes.get(a) in (REAL, EVENTS, ONCE) and "shape" in a.meta for a in self._dynamic_inputs(node))

    def _sent(self, op: OpCost, x: fx.Node, field: str, fanout: torch.Tensor | float, after_first: bool = False,
              rows: bool = False) -> None:
        """Charge ``op`` ``fanout`` of ``field`` per element (row) of ``x`` sent at a step."""
        name = probe_name(x, rows)
        self.streams[name] = (x, rows)
        op.terms.append(Term(name, fanout, after_first, field))

    def _per_input(self, op: OpCost, node: fx.Node, field: str, rows: bool = False, after_first: bool = False) -> None:
        """Charge one ``field`` per output element that a sent element (row) of an input reaches."""
        for x in self._dynamic_inputs(node):
            reach = float(node.meta["shape"][-1]) if rows else per_sample(node) / per_sample(x)
            self._sent(op, x, field, reach, after_first, rows)

    def _unit_fanout(self, layer: fx.Node, x: fx.Node) -> torch.Tensor | float:
        """Connections per element of ``x`` into weight layer ``layer`` (a real value's fan-out)."""
        with torch.enable_grad():
            return _compact(self._fanout_of(layer, torch.ones(x.meta["shape"], dtype=torch.float64)).flatten())

    def _operand_fanout(self, product: fx.Node, operand: fx.Node) -> float:
        """Outputs (× inner products) one element of ``operand`` takes part in."""
        inner = self._contracted(product, product.args[0])
        return per_sample(product) * inner / per_sample(operand)

    # -- fan-out of events ---------------------------------------------------------------------

    @torch.no_grad()
    def _trace_fanouts(self) -> None:
        inputs = {x for _, x, _, _ in self._consumers}
        twin = copy.deepcopy(self.gm).double()  # the same graph (same nodes) in float64
        reset_states(twin)
        nodes = dict(zip(self.gm.graph.nodes, twin.graph.nodes))
        back = {v: k for k, v in nodes.items()}
        with torch.enable_grad():
            classes = {nodes[n]: MIXED if n in self.mixed else c for n, c in self.classes.items()}
            unit = _UnitRun(twin, classes,
                            {nodes[n]: k for n, k in self.kinds.items()},
                            {nodes[n] for n in self._source_nodes.values()}, {nodes[n] for n in inputs})
            unit.run(example_input(twin))  # the twin's neurons step once; the twin is dropped
            for op, x, spec, after_first in self._consumers:
                value = unit.values[nodes[x]]
                fanout = spec if isinstance(spec, float) else self._fanout_of(spec, value)
                sources = unit.ancestors(nodes[x])
                grads = torch.autograd.grad((value * fanout).sum(), [unit.leaves[s] for s in sources],
                                            retain_graph=True, allow_unused=True)
                for source, grad in zip(sources, grads):
                    if grad is not None:
                        op.terms.append(Term(back[source].target, _compact(grad.detach().flatten()), after_first))

    def _fanout_of(self, node: fx.Node, value: torch.Tensor) -> torch.Tensor:
        """Connections per input element of weight layer ``node``: the ``(output, weight)`` pairs
        each element takes part in (exact at convolution edges), from the layer run with unit weights."""
        x = torch.ones_like(value, requires_grad=True)
        ones = torch.ones(_weight_shape(node, self.gm), dtype=x.dtype)
        if node.op == "call_module":
            layer = self.gm.get_submodule(node.target)
            params = {"weight": ones}
            if getattr(layer, "bias", None) is not None:
                params["bias"] = torch.zeros_like(layer.bias, dtype=x.dtype)
            y = torch.func.functional_call(layer, params, (x,))
        else:
            args = [x, *(_literal(a) for a in node.args[1:])]
            kwargs = {k: _literal(v) for k, v in node.kwargs.items()}
            if "weight" in kwargs:
                kwargs["weight"] = ones
            else:
                args[1] = ones
            if "bias" in kwargs:
                kwargs["bias"] = None
            elif len(args) > 2:
                args[2] = None
            y = node.target(*args, **kwargs)
        (grad,) = torch.autograd.grad(y.sum(), x)
        return grad.detach()

def _compact(fanout: torch.Tensor) -> torch.Tensor | float:
    """A fan-out map as one number where it is uniform."""
    first = fanout[0]
    return float(first) if bool((fanout == first).all()) else fanout


class _UnitRun(fx.Interpreter):
    """One run of the graph with every event source replaced by a unit tensor that requires grad
    and every op on events computed with unit weights (sums instead of means, scalings dropped),
    so that gradients count connections."""

    def __init__(self, gm: fx.GraphModule, classes, kinds, sources: set[fx.Node], record: set[fx.Node]):
        super().__init__(gm)
        self.classes, self.kinds, self.sources, self.record = classes, kinds, sources, record
        self.values: dict[fx.Node, torch.Tensor] = {}
        self.leaves: dict[fx.Node, torch.Tensor] = {}
        self._above: dict[fx.Node, list[fx.Node]] = {}

    def run_node(self, node: fx.Node):
        if node in self.sources:
            value = torch.ones(node.meta["shape"], dtype=torch.float64, requires_grad=True)
            self.leaves[node] = value
        elif self.classes.get(node) in (EVENTS, MIXED) and self.kinds.get(node) == ops.LINEAR:
            value = self._unit(node)
        else:
            value = super().run_node(node)
            if isinstance(value, torch.Tensor) and self.classes.get(node) in (REAL, INPUT, ONCE):
                value = value.detach()
        if node in self.record:
            self.values[node] = value
        return value

    def _unit(self, node: fx.Node) -> torch.Tensor:
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        target = node.target if node.op != "call_module" else self.module.get_submodule(node.target)
        dynamic = [a for a, n in zip(args, node.args)
                   if isinstance(n, fx.Node) and self.classes.get(n) in (EVENTS, MIXED)]
        if target in ops.SCALINGS or target in ops.NEGATIONS:
            return dynamic[0]
        if target in _ADDS:  # a mixed stream's real part is no connection
            return dynamic[0] + dynamic[1] if len(dynamic) == 2 else dynamic[0]
        if target in (torch.mean, "mean"):
            return torch.sum(*args, **kwargs) if node.op == "call_function" else args[0].sum(*args[1:], **kwargs)
        if target in (torch.sum, "sum"):
            return super().run_node(node)
        return _unit_pool(target, args, kwargs)

    def ancestors(self, node: fx.Node) -> list[fx.Node]:
        """The sources ``node``'s value comes from."""
        if node not in self._above:
            found, frontier, seen = [], [node], {node}
            while frontier:
                current = frontier.pop()
                if current in self.sources:
                    found.append(current)
                    continue
                for n in ops.data_inputs(current):
                    if n not in seen and self.classes.get(n) in (EVENTS, MIXED):
                        seen.add(n)
                        frontier.append(n)
            self._above[node] = found
        return self._above[node]


def _unit_pool(pool, args, kwargs) -> torch.Tensor:
    """An average pool's sum over each window (unit weights)."""
    x = args[0]
    if isinstance(pool, nn.AvgPool1d):
        return pool(x) * pool.kernel_size[0]
    if pool is F.avg_pool1d:
        return pool(*args, **kwargs) * (args[1] if len(args) > 1 else kwargs["kernel_size"])
    if isinstance(pool, (nn.AvgPool2d, nn.AvgPool3d)):
        fn = F.avg_pool2d if isinstance(pool, nn.AvgPool2d) else F.avg_pool3d
        return fn(x, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, pool.count_include_pad, 1)
    if pool in (F.avg_pool2d, F.avg_pool3d):
        names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
        given = dict(zip(names, args[1:]), **{k: v for k, v in kwargs.items() if k != "divisor_override"})
        return pool(x, divisor_override=1, **given)
    size = pool.output_size if isinstance(pool, nn.Module) else (args[1] if len(args) > 1 else kwargs["output_size"])
    spatial = x.shape[2:]
    sizes = [size] * len(spatial) if isinstance(size, int) else list(size)
    counts = torch.ones((), dtype=x.dtype)
    for i, (n, m) in enumerate(zip(spatial, sizes)):
        m = n if m is None else m
        starts = [(j * n) // m for j in range(m)]
        ends = [-(-((j + 1) * n) // m) for j in range(m)]
        region = torch.tensor([e - s for s, e in zip(starts, ends)], dtype=x.dtype)
        counts = counts.unsqueeze(-1) * region
    average = pool(x) if isinstance(pool, nn.Module) else pool(*args, **kwargs)
    return average * counts
