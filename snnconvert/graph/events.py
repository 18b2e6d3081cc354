"""Which values of a converted model are spikes, read off the graph before anything runs.

A value is one of:

* ``static``: it does not depend on the input's values (parameters, shapes, guards);
* ``events``: spikes, i.e. what an event source sends (an IF neuron, a spike encoder, a
  per-step max-pool of spikes), or a sum, rearrangement, scaling or average of such values:
  a layer fed events can be driven by them (one accumulate per event and connection);
* ``input``: the input, and whatever is computed from it alone through ops without state (up to
  the first neurons: a patch embedding, a first conv and its BatchNorm): the same at every step
  under rate coding, so it is computed once per batch and counted once;
* ``once``: a real value at the first step and zero after: count coding's input (the image,
  presented once) and whatever is computed from it alone, up to the neurons;
* ``real``: any other value (the image under rate coding, softmax outputs, the residual stream,
  norms …).

An event source is a module that emits spikes (``emits_spikes``), or a max-pool applied to each
step's spikes (it passes on some of them). Events mixed with real values (added to a real
tensor, concatenated with one, shifted by a constant) are real.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import fx

from snnconvert.graph import ops

STATIC, EVENTS, INPUT, ONCE, REAL = "static", "events", "input", "once", "real"
#: a real value that is a ``once`` value plus events (:func:`mixed_streams`; not a class of :func:`classify`)
MIXED = "mixed"
#: linear ops that keep a sum of events a sum of events (with unit or constant weights)
_KEEP_EVENTS = ops.ADDITIONS | ops.SUBTRACTIONS | ops.SCALINGS | ops.NEGATIONS | ops.AVERAGES


def is_source(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``node`` is a module that emits spikes."""
    return node.op == "call_module" and bool(getattr(gm.get_submodule(node.target), "emits_spikes", False))


def _presents_once(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``node`` is count coding's input gate."""
    return node.op == "call_module" and bool(getattr(gm.get_submodule(node.target), "presents_once", False))


def _adds_once(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``node`` is count coding's once-counted constant (an affine op's offset)."""
    return node.op == "call_module" and bool(getattr(gm.get_submodule(node.target), "adds_once", False))


def keeps_events(node: fx.Node, gm: fx.GraphModule, kind: str) -> bool:
    if kind in (ops.STRUCTURAL, ops.IDENTITY):
        return True
    if kind != ops.LINEAR:
        return False
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), ops.POOL_MODULES)
    return ops.calls(node, _KEEP_EVENTS)


def classify(gm: fx.GraphModule, sources: Callable[[fx.Node], bool] | None = None
             ) -> tuple[dict[fx.Node, str], dict[fx.Node, str]]:
    """``(value class of every node, op kind of every node)`` of a converted graph; an op that
    takes events where it adds or mixes in a non-event value gives a real value. ``sources``
    tells event sources apart (default: :func:`is_source`; a prepared graph's QCFS sites, which
    become them)."""
    sources = sources or (lambda node: is_source(node, gm))
    dynamic = ops.dynamic_nodes(gm.graph)
    kinds = {n: ops.kind(n, gm, dynamic.__contains__) for n in gm.graph.nodes}
    classes: dict[fx.Node, str] = {}
    for node in gm.graph.nodes:
        inputs = [classes.get(n, REAL) for n in ops.data_inputs(node) if n in dynamic]
        if node not in dynamic:
            classes[node] = STATIC
        elif node.op == "placeholder" or inputs and all(c == INPUT for c in inputs) and kinds[node] != ops.SPIKING:
            classes[node] = INPUT
        elif sources(node) or is_event_pool(node, gm, kinds, classes):
            classes[node] = EVENTS
        elif _presents_once(node, gm) or inputs and all(c == ONCE for c in inputs):
            classes[node] = ONCE
        else:
            classes[node] = EVENTS if (inputs and all(c == EVENTS for c in inputs)
                                       and _sums_inputs(node, gm, kinds[node], dynamic)) else REAL
    return classes, kinds


def _sums_inputs(node: fx.Node, gm: fx.GraphModule, kind: str, dynamic: set[fx.Node]) -> bool:
    """Whether ``node`` keeps a sum of its dynamic inputs a sum of them (a rearrangement, sum,
    scaling or average that adds no constant of its own)."""
    return keeps_events(node, gm, kind) and not (kind == ops.LINEAR and _adds_static(node, dynamic))


def mixed_streams(gm: fx.GraphModule, classes: dict[fx.Node, str], kinds: dict[fx.Node, str]) -> set[fx.Node]:
    """Real values of a count-coded graph that are a real value of the first step plus events:
    sums, rearrangements, scalings and averages of ``once`` values and events (count coding's
    residual stream: the patch embedding, then the spikes each branch adds), and once-counted
    constants added to them. By linearity a weight layer fed one does its MACs on the real part
    at the first step, then one accumulate per event and connection."""
    mixed: set[fx.Node] = set()
    dynamic = {n for n, c in classes.items() if c != STATIC}
    for node in gm.graph.nodes:
        if classes.get(node) != REAL:
            continue
        parts = {MIXED if n in mixed else classes[n] for n in ops.data_inputs(node) if n in dynamic}
        if not parts or not parts <= {ONCE, EVENTS, MIXED} or parts == {ONCE}:
            continue
        if _sums_inputs(node, gm, kinds[node], dynamic) or _adds_once(node, gm):
            mixed.add(node)
    return mixed


def is_event_pool(node: fx.Node, gm: fx.GraphModule, kinds: dict, classes: dict) -> bool:
    """A max-pool applied to each step's spikes (not compensated): it passes on some of them."""
    inputs = [n for n in ops.data_inputs(node) if n in classes]
    return kinds.get(node) == ops.MAXPOOL and bool(inputs) and all(classes[n] == EVENTS for n in inputs)


def _adds_static(node: fx.Node, dynamic: set[fx.Node]) -> bool:
    """An addition or subtraction with an operand that does not depend on the input (a bias)."""
    if not ops.calls(node, ops.ADDITIONS | ops.SUBTRACTIONS):
        return False
    return any(not (isinstance(a, fx.Node) and a in dynamic) for a in node.args[:2])
