"""Where QCFS goes in a traced model: activations, and the Masked Spiking Transformer's sites.

* **Activations** (:func:`activations_to_qcfs`): every activation on dynamic values becomes a QCFS,
  except the kept ones (gates by default). A ReLU-family activation ``offset + scale·clip(x + shift,
  0, cap)`` (ReLU, ReLU6 with its cap of 6, hard sigmoid, clamps) keeps its form around the QCFS,
  so only quantization changes it; any other (GELU, SiLU, hard swish …) is approximated by QCFS.
* **MST sites** (:func:`insert_mst_sites`, "QCFS after each linear or normalization layer" as the
  MST reference model places it), found by their position in the graph:

  - on each operand of a product of two dynamic tensors that is not already spikes and does not
    come from a floating-point op (a softmax or a gate stays real), and on the product's output
    (after its scaling) unless that goes into a norm or activation; in attention the operands are
    Q, K and V and the outputs the scores and the attention output (fused attention is handled
    by :mod:`snnconvert.prepare.attention`);
  - after the norm that opens a residual branch (pre-norm: its input is also added back);
  - after a weight layer whose output is added to another dynamic tensor (a branch's last
    projection, or patch merging's reduction that starts a residual stream).

With ``spike_probabilities`` (:func:`insert_probability_sites`), a QCFS capped at 1 also goes on
every softmax output that a product reads (attention probabilities). With ``spike_streams``
(:func:`insert_stream_sites`), a signed QCFS goes on every real-valued stream a weight layer
reads that is not a sum of spikes (a linear bottleneck's residual stream).

Each inserted QCFS is named after what it follows (``blocks.0.norm1_act``, ``blocks.0.attn.proj_act``)
and carries its role (:data:`snnconvert.prepare.qcfs.ROLES`).
"""
from __future__ import annotations

import operator

import torch
from torch import fx, nn

from snnconvert.prepare.config import PrepareConfig
from snnconvert.graph.batchnorms import folds_into_linear
from snnconvert.prepare.norm import ChannelBatchNorm
from snnconvert.prepare.qcfs import QCFS
from snnconvert.graph import events, ops
from snnconvert.graph.edit import insert_after, insert_before, join, new_node, owner, replace_with_module
from snnconvert.graph.ops import Activation
from snnconvert.runtime.operators import Call

_REARRANGING = (ops.STRUCTURAL, ops.IDENTITY)


class Analysis:
    """What the site rules ask of a graph: the kind of every node (recomputed after each edit)."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.refresh()

    def refresh(self) -> None:
        self.dynamic = ops.dynamic_nodes(self.gm.graph)
        self.kinds = {n: ops.kind(n, self.gm, self.dynamic.__contains__) for n in self.gm.graph.nodes}

    def kind(self, node) -> str:
        return self.kinds.get(node, "literal") if isinstance(node, fx.Node) else "literal"

    def is_site(self, node: fx.Node) -> bool:
        return node.op == "call_module" and isinstance(self.gm.get_submodule(node.target), QCFS)

    def is_scaling(self, node: fx.Node) -> bool:
        """A product or quotient of one dynamic tensor and a constant."""
        return ops.calls(node, ops.SCALINGS) and self.kinds.get(node) == ops.LINEAR

    def passes(self, node: fx.Node) -> bool:
        return self.kinds.get(node) in _REARRANGING or self.is_scaling(node)

    def consumers(self, node: fx.Node) -> list[fx.Node]:
        """The first ops after ``node`` that use its values and are not rearrangements or scalings."""
        found, frontier, seen = [], [node], set()
        while frontier:
            current = frontier.pop()
            for user in current.users:
                if user in seen or current not in ops.data_inputs(user):
                    continue
                seen.add(user)
                (frontier if self.passes(user) and self.kinds[user] != "output" else found).append(user)
        return found

    def origin(self, node: fx.Node) -> fx.Node:
        """The first op before ``node`` that is not a rearrangement or scaling of one dynamic input."""
        while self.passes(node):
            inputs = [n for n in node.all_input_nodes if n in self.dynamic]
            if len(inputs) != 1:
                break
            node = inputs[0]
        return node

    def spikes(self, node: fx.Node) -> bool:
        return self.is_site(self.origin(node))

    def settled(self, node: fx.Node) -> bool:
        """Whether every consumer of ``node`` is a QCFS site, an activation or a norm already."""
        return all(self.is_site(c) or self.kind(c) in (ops.ACTIVATION, ops.BATCHNORM, ops.NORM)
                   for c in self.consumers(node))

    def is_residual_add(self, node: fx.Node) -> bool:
        """An add ``x + f(x)`` where ``f`` runs at least one weight layer: a residual connection
        (not, say, rotary embedding's ``x·cos + rot(x)·sin``)."""
        if not ops.calls(node, ops.ADDITIONS):
            return False
        operands = [n for n in node.all_input_nodes if n in self.dynamic]
        if len(operands) != 2:
            return False
        for shortcut, branch in (operands, operands[::-1]):
            above = _ancestors(branch)
            if shortcut in above and any(self.kinds.get(n) == ops.WEIGHT and shortcut in _ancestors(n)
                                         for n in above):
                return True
        return False

    def to_output(self) -> set[fx.Node]:
        """Nodes whose values only reach the model's output through linear ops (the logits)."""
        found: set[fx.Node] = set()
        for node in reversed(self.gm.graph.nodes):
            if node.op == "output" or node.users and all(
                    u in found and self.kinds.get(u) in (*_REARRANGING, ops.LINEAR, "output") for u in node.users):
                found.add(node)
        return found


def _site(config: PrepareConfig, role: str, channel_axis: int | None = None, cap: float | None = None,
          signed: bool = False, levels: int | None = None) -> QCFS:
    return QCFS(levels or config.levels, config.threshold if cap is None else cap, channel_axis=channel_axis,
                cap=cap, role=role, signed=signed)


def _channel_axis(node: fx.Node, gm: fx.GraphModule, analysis: Analysis) -> int | None:
    """Channels of the tensor a layer produces: last for Linear / LayerNorm-like, 1 for Conv /
    BatchNorm2d, that of the operands for a sum; None when unknown (the site then takes one threshold)."""
    node = analysis.origin(node)
    if analysis.kind(node) == ops.LINEAR:
        axes = {_channel_axis(n, gm, analysis) for n in node.all_input_nodes if n in analysis.dynamic}
        return axes.pop() if len(axes) == 1 else None
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, (nn.Linear, ChannelBatchNorm, nn.LayerNorm)):
            return -1
        if isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)):
            return 1
        if isinstance(module, QCFS):
            return module.channel_axis
    if node.op == "call_function" and node.target is torch.nn.functional.linear:
        return -1
    return None


def _original(node: fx.Node, gm: fx.GraphModule) -> nn.Module:
    """The activation a node computes, as a module of one input."""
    if node.op == "call_module":
        return gm.get_submodule(node.target)
    fn = node.target if node.op == "call_function" else str(node.target)
    return _Bound(Call(fn), tuple(node.args[1:]), dict(node.kwargs))


class _Bound(nn.Module):
    """``call(x, *args, **kwargs)`` with the other arguments fixed."""

    def __init__(self, call: nn.Module, args: tuple, kwargs: dict):
        super().__init__()
        self.call, self.args, self.kwargs = call, args, kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.call(x, *self.args, **self.kwargs)


def activations_to_qcfs(gm: fx.GraphModule, config: PrepareConfig) -> dict[str, tuple[Activation, nn.Module]]:
    """Replace every activation on dynamic values (but the kept ones) by QCFS, in place.

    Returns ``{site path: (activation, the module it replaced)}``.
    """
    analysis = Analysis(gm)
    replaced = {}
    for node in list(gm.graph.nodes):
        if analysis.kinds.get(node) != ops.ACTIVATION:
            continue
        act = ops.activation_of(node, gm)
        if act is None or act.name in config.keep_activations:
            continue
        original = _original(node, gm)
        axis = _channel_axis(node.args[0], gm, analysis)
        path = node.target if node.op == "call_module" else join(owner(node), act.name)
        x = node.args[0]
        if not act.relu_family:
            site = replace_with_module(gm, node, path, _site(config, "activation", axis))
            replaced[site.target] = (act, original)
            continue
        with gm.graph.inserting_before(node):
            if act.shift:
                x = new_node(gm, node, "call_function", operator.add, (x, act.shift))
        site = replace_with_module(gm, node, path, _site(config, "activation", axis, cap=act.cap), (x,))
        users, end = list(site.users), site
        with gm.graph.inserting_before(site.next):
            if act.scale != 1.0:
                end = new_node(gm, site, "call_function", operator.mul, (end, act.scale))
            if act.offset:
                end = new_node(gm, site, "call_function", operator.add, (end, act.offset))
        for user in users:
            user.replace_input_with(site, end)
        replaced[site.target] = (act, _clip_module(act))
    return replaced


def _clip_module(act: Activation) -> nn.Module:
    """``clip(x, 0, cap)``: what a ReLU-family site computes inside its affine parts in the ANN."""
    return nn.ReLU() if act.cap is None else nn.Hardtanh(0.0, act.cap)


def insert_mst_sites(gm: fx.GraphModule, config: PrepareConfig) -> dict[str, str]:
    """Insert the MST recipe's QCFS sites (see the module docstring) in place; returns
    ``{site path: role}``."""
    inserted: dict[str, str] = {}
    analysis = Analysis(gm)
    for node in list(gm.graph.nodes):
        if analysis.kinds.get(node) == ops.PRODUCT:
            inserted.update(_product_sites(gm, node, config, analysis))
            analysis.refresh()
    for node in list(gm.graph.nodes):
        if analysis.kinds.get(node) in (ops.BATCHNORM, ops.NORM) and _opens_residual_branch(node, analysis) \
                and not analysis.settled(node):
            site = insert_after(gm, node, _after(node, gm), _site(config, "norm", _channel_axis(node, gm, analysis)))
            inserted[site.target] = "norm"
            analysis.refresh()
    logits = analysis.to_output()
    for node in list(gm.graph.nodes):
        if analysis.kinds.get(node) == ops.WEIGHT and node not in logits and not analysis.settled(node) \
                and any(analysis.is_residual_add(c) for c in analysis.consumers(node)):
            site = insert_after(gm, node, _after(node, gm),
                                _site(config, "projection", _channel_axis(node, gm, analysis)))
            inserted[site.target] = "projection"
            analysis.refresh()
    return inserted


#: why a model gets no probability sites
NO_PROBABILITIES = "has no softmax whose output a product reads: there are no attention probabilities to spike"


def insert_probability_sites(gm: fx.GraphModule, config: PrepareConfig) -> list[str]:
    """A QCFS with λ ≤ 1 after every softmax whose output a product of two dynamic tensors reads
    (attention probabilities), in place; returns the new sites' paths."""
    analysis, inserted = Analysis(gm), []
    for node in list(gm.graph.nodes):
        if analysis.kinds.get(node) == ops.SOFTMAX and not analysis.settled(node) and any(
                analysis.kinds.get(c) == ops.PRODUCT for c in analysis.consumers(node)):
            inserted.append(insert_after(gm, node, _after(node, gm), _site(config, "probabilities", cap=1.0)).target)
            analysis.refresh()
    return inserted


#: why a model gets no stream sites
NO_STREAMS = "has no real-valued stream into a weight layer: every weight layer reads spikes, sums of them or the input"


def insert_stream_sites(gm: fx.GraphModule, config: PrepareConfig) -> list[str]:
    """A signed QCFS on every value a weight layer reads that is not a sum of spikes, in place;
    returns the new sites' paths.

    A sum of spikes (:func:`_spike_sums`) drives a layer by accumulates; any other value (a linear
    bottleneck's residual stream, a kept norm's output) would cost a MAC per change and
    connection. The site sits on the edges into weight layers only, one per value (named
    ``<layer>_in``), so the stream itself, and the residual connections it feeds, stay exact."""
    analysis = Analysis(gm)
    sums = _spike_sums(gm, analysis)
    placed: dict[fx.Node, fx.Node] = {}
    for layer in list(gm.graph.nodes):
        if analysis.kinds.get(layer) != ops.WEIGHT:
            continue
        for value in [n for n in ops.data_inputs(layer) if n in analysis.dynamic and n not in sums]:
            if value in placed:
                layer.replace_input_with(value, placed[value])
                continue
            module = gm.get_submodule(layer.target) if layer.op == "call_module" else None
            conv = isinstance(module, nn.modules.conv._ConvNd) or "conv" in getattr(layer.target, "__name__", "")
            axis = 1 if conv else -1
            placed[value] = insert_before(gm, layer, value, _named(layer, gm, "in"),
                                          _site(config, "stream", axis, signed=True, levels=config.stream_levels))
    return [site.target for site in placed.values()]


def _spike_sums(gm: fx.GraphModule, analysis: Analysis) -> set[fx.Node]:
    """Values a layer can read as events after the first step: constants, the input and what is
    computed from it alone, QCFS outputs, and sums, rearrangements, scalings, averages of these,
    constants added (count coding presents the constants once), and BatchNorms of them that fold
    into the Linear they feed at conversion (any other is a per-channel ``s·x + t`` of real values)."""
    classes, kinds = events.classify(gm, sources=analysis.is_site)
    folding = folds_into_linear(gm)
    sums: set[fx.Node] = set()
    for node in gm.graph.nodes:
        inputs = [n for n in ops.data_inputs(node) if n in analysis.dynamic]
        if classes[node] != events.REAL or inputs and all(n in sums for n in inputs) and (
                (kinds[node] == ops.BATCHNORM and node in folding) or events.keeps_events(node, gm, kinds[node])):
            sums.add(node)
    return sums


def _after(node: fx.Node, gm: fx.GraphModule) -> str:
    """The name of a site after ``node``: ``<module>_act``, or ``<owner>.<op>_act`` for a function."""
    return _named(node, gm, "act")


def _named(node: fx.Node, gm: fx.GraphModule, suffix: str) -> str:
    """``<module>_<suffix>``, or ``<owner>.<op>_<suffix>`` for a function."""
    if node.op == "call_module":
        return f"{node.target}_{suffix}"
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    if node.op == "call_function" and isinstance(weight, fx.Node) and weight.op == "get_attr":
        return f"{weight.target.rpartition('.')[0]}_{suffix}"
    return join(owner(node), f"{getattr(node.target, '__name__', node.target)}_{suffix}")


def _opens_residual_branch(norm: fx.Node, analysis: Analysis) -> bool:
    """Pre-norm: the norm's input is also an operand of an add that the norm's output reaches."""
    inputs = [n for n in norm.all_input_nodes if n in analysis.dynamic]
    if len(inputs) != 1:
        return False
    below = _descendants(norm)
    return any(analysis.is_residual_add(add) and any(n in below for n in add.all_input_nodes)
               for add in analysis.consumers(inputs[0]) if add is not norm)


def _reachable(node: fx.Node, links) -> set[fx.Node]:
    """``node`` and every node reached by following ``links`` (inputs or users) from it."""
    found, frontier = {node}, [node]
    while frontier:
        for other in links(frontier.pop()):
            if other not in found:
                found.add(other)
                frontier.append(other)
    return found


def _ancestors(node: fx.Node) -> set[fx.Node]:
    return _reachable(node, lambda n: n.all_input_nodes)


def _descendants(node: fx.Node) -> set[fx.Node]:
    return _reachable(node, lambda n: n.users)


def _product_sites(gm: fx.GraphModule, product: fx.Node, config: PrepareConfig, analysis: Analysis) -> dict[str, str]:
    """Sites on a product's operands and output. Inside attention the operands are Q, K (of the
    product whose output goes to a softmax) and V (beside the softmax's output), and the outputs
    the scores and the attention output (named ``q_act`` … ``attn_act``, ``out_act`` as in MST)."""
    operands = [a for a in product.args[:2] if isinstance(a, fx.Node) and a in analysis.dynamic]
    scores = any(analysis.kind(c) == ops.SOFTMAX for c in _past_adds(product, analysis))
    weighted = [analysis.kind(analysis.origin(a)) == ops.SOFTMAX for a in operands]
    if scores:
        roles, output_role, output_name = ["q", "k"], "scores", "attn"
    elif any(weighted):
        roles, output_role, output_name = ["operand" if w else "v" for w in weighted], "attention", "out"
    else:
        name = product.target.rpartition(".")[2] if product.op == "call_module" else \
            getattr(product.target, "__name__", str(product.target)).strip("_")
        roles, output_role, output_name = ["operand", "operand"], "product", name
    where = owner(product)
    sites = {}
    for i, (operand, role) in enumerate(zip(operands, roles)):
        if analysis.spikes(operand) or analysis.kind(analysis.origin(operand)) in (
                ops.SOFTMAX, ops.NORM, ops.NONLINEAR, ops.ACTIVATION, ops.MAXPOOL):
            continue
        label = role if role != "operand" else f"{output_name}_in{i}"
        site = insert_before(gm, product, operand, join(where, f"{label}_act"), _site(config, role))
        sites[site.target] = role
    analysis.refresh()
    end = product
    while len(end.users) == 1 and analysis.is_scaling(next(iter(end.users))):
        end = next(iter(end.users))
    if end in analysis.to_output() or analysis.settled(end):
        return sites
    end, axis = _toward_weight(end, gm, analysis)
    site = insert_after(gm, end, join(where, f"{output_name}_act"), _site(config, output_role, axis))
    sites[site.target] = output_role
    return sites


def _toward_weight(node: fx.Node, gm: fx.GraphModule, analysis: Analysis) -> tuple[fx.Node, int | None]:
    """When ``node`` reaches a single weight layer through a chain of rearrangements only (the head
    merge before attention's projection), the end of that chain and the layer's channel axis; else
    ``node`` itself and no channel axis."""
    end = node
    while len(end.users) == 1 and analysis.kinds.get(next(iter(end.users))) in _REARRANGING:
        end = next(iter(end.users))
    if len(end.users) == 1 and analysis.kinds.get(next(iter(end.users))) == ops.WEIGHT:
        layer = next(iter(end.users))
        module = gm.get_submodule(layer.target) if layer.op == "call_module" else None
        return end, 1 if isinstance(module, nn.modules.conv._ConvNd) else -1
    return node, None


def _past_adds(node: fx.Node, analysis: Analysis) -> list[fx.Node]:
    """Consumers of ``node``, looking past additions of constants (a bias or mask on scores)."""
    found = []
    for consumer in analysis.consumers(node):
        if analysis.kind(consumer) == ops.LINEAR and sum(n in analysis.dynamic for n in consumer.all_input_nodes) == 1:
            found += _past_adds(consumer, analysis)
        else:
            found.append(consumer)
    return found


def add_mlp_batchnorms(gm: fx.GraphModule, sites: dict[str, str]) -> list[str]:
    """MST's MLP BatchNorms: after each Linear of a transformer MLP (``Linear → activation site →
    Linear → projection site``), a :class:`ChannelBatchNorm` before the site; returns their paths."""
    added = []
    calls = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    for path, role in sites.items():
        second_site = calls.get(path)
        if role != "projection" or second_site is None:
            continue
        fc2 = second_site.args[0]
        act = fc2.args[0] if fc2.op == "call_module" else None
        fc1 = act.args[0] if act is not None and act.op == "call_module" else None
        modules = [gm.get_submodule(n.target) if n is not None and n.op == "call_module" else None
                   for n in (fc1, act, fc2)]
        if not (isinstance(modules[0], nn.Linear) and isinstance(modules[1], QCFS)
                and modules[1].role == "activation" and isinstance(modules[2], nn.Linear)):
            continue
        for fc in (fc1, fc2):
            bn = insert_after(gm, fc, f"{fc.target}_bn", ChannelBatchNorm(gm.get_submodule(fc.target).out_features))
            added.append(bn.target)
    return added


def max_pools_to_average(gm: fx.GraphModule) -> dict[str, nn.Module]:
    """Replace max-pooling modules by average pooling of the same geometry, in place; returns
    ``{path: the max-pool it replaced}`` (functional max-pooling is kept)."""
    replaced = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        pool = gm.get_submodule(node.target)
        if isinstance(pool, nn.MaxPool2d):
            avg = nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)
        elif isinstance(pool, nn.AdaptiveMaxPool2d):
            avg = nn.AdaptiveAvgPool2d(pool.output_size)
        else:
            continue
        replaced[node.target] = pool
        replace_with_module(gm, node, node.target, avg)
    return replaced
