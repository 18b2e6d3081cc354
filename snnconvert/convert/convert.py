"""convert(model): a prepared (QCFS) graph → a single-step spiking graph.

Passes over the graph, in order:

1. BatchNorm folded into neighbouring Linear / Conv (:mod:`snnconvert.convert.fold`);
2. values computed from parameters alone (relative-position biases, continuous position MLPs,
   rotary tables) computed once and stored as buffers;
3. QCFS → IF neuron with reset by subtraction (θ = λ, or λ/L under count coding; v(0) = θ/2),
   taking a following random spike mask into the neuron (it masks the spikes the neuron sends); a
   signed site becomes a symmetric signed neuron whatever the neuron asked for (its value needs
   negative spikes);
4. in the ``compensated`` mode every op that does not commute with the running mean — products of
   two dynamic tensors, softmax, norms, kept activations, max-pooling, any other nonlinear op — is
   wrapped in :class:`~snnconvert.runtime.operators.ExpectationCompensated`: the running mean of
   its output is the op of the running means of its inputs. The ``mst`` mode keeps them per step
   (the Masked Spiking Transformer reference code: a biased estimate, for reproduction);
5. under count coding (:mod:`snnconvert.runtime.coding`) the input is presented once
   (:class:`~snnconvert.runtime.coding.InputOnce`) and every constant an affine op adds — biases,
   position embeddings, class tokens, unfolded BatchNorm shifts — is counted once
   (:class:`~snnconvert.runtime.coding.OnceOffset`).

The returned GraphModule processes one time step per call; :func:`snnconvert.runtime.simulate`
drives it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from snnconvert import checks
from snnconvert.convert.config import NeuronConfig
from snnconvert.convert.fold import fold_batchnorms
from snnconvert.prepare.rewrite import is_prepared
from snnconvert.prepare.qcfs import QCFS
from snnconvert.errors import ArgumentError, SnnConvertError
from snnconvert.graph import ops
from snnconvert.graph.edit import add_module, bypass, finish, insert_after, join, owner
from snnconvert.graph.shapes import annotate, example_input
from snnconvert.runtime.coding import InputOnce, OnceOffset
from snnconvert.runtime.masking import RandomSpikeMask
from snnconvert.runtime.neurons import NEURONS, SignedIFNeuron
from snnconvert.runtime.operators import Call, ExpectationCompensated
from snnconvert.runtime.state import reset_states

MODES = ("compensated", "mst")
_IMPURE = {"setitem", "_assert", "__setitem__"}


def convert(model: fx.GraphModule, mode: str = "compensated", neuron: str | NeuronConfig = "if",
            inplace: bool = False) -> fx.GraphModule:
    """Convert a prepared (QCFS) model into a single-step SNN (eval mode).

    Args:
        model: output of :func:`snnconvert.prepare.rewrite`, trained and/or calibrated.
        mode: ``"compensated"`` (default, exact in expectation) or ``"mst"`` (per-step ops; rate
            coding only).
        neuron: a :class:`NeuronConfig` (neuron model, spikes per step, coding), or a neuron name
            with the other settings at their defaults: ``"if"`` (IF, reset by subtraction, rate
            coding; default), ``"signed-if"`` (may also fire negative spikes to take back surplus
            ones) or ``"signed-burst-if"`` (signed, no bound on a step's spikes).
        inplace: modify ``model`` instead of a deep copy.
    """
    checks.module(model, "convert", call="convert(model, mode, neuron)")
    checks.expect(isinstance(mode, str), "convert", "mode", f"one of {', '.join(MODES)}", mode,
                  "the arguments may be swapped: call convert(model, mode, neuron)")
    checks.expect(isinstance(neuron, (str, dict, NeuronConfig)), "convert", "neuron",
                  "a neuron name or a NeuronConfig", neuron)
    neuron = NeuronConfig.of(neuron)
    if mode not in MODES:
        raise SnnConvertError(f"unknown attention mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "mst" and neuron.coding == "count":
        raise SnnConvertError("the mst mode multiplies each step's spikes, which has no meaning for count coding: "
                              "use --mode compensated with --coding count")
    if not isinstance(model, fx.GraphModule) or not is_prepared(model):
        raise ArgumentError("convert: the model has no QCFS activations: run snnconvert.prepare(model, example) "
                            "(and train or calibrate it) before convert()")
    snn = model if inplace else copy.deepcopy(model)
    snn.eval()
    example = example_input(snn)
    annotate(snn, example)
    fold_batchnorms(snn)
    _fold_constants(snn)
    snn.meta["levels"] = max((m.levels for m in snn.modules() if isinstance(m, QCFS)), default=None)
    _to_neurons(snn, neuron)
    if mode == "compensated":
        _compensate(snn, neuron.coding)
    if neuron.coding == "count":
        _count_once(snn, example)
    finish(snn)
    annotate(snn, example)
    reset_states(snn)
    return snn


def _to_neurons(gm: fx.GraphModule, neuron: NeuronConfig) -> None:
    count = neuron.coding == "count"
    for node in list(gm.graph.nodes):
        site = gm.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(site, QCFS):
            continue
        threshold = site.effective_threshold().detach() / (site.levels if count else 1)
        kind, signed = (SignedIFNeuron, {"symmetric": True}) if site.signed else (NEURONS[neuron.neuron], {})
        spiking = kind(threshold, initial_potential=site.shift, max_spikes=neuron.max_spikes,
                       levels=site.levels if count else None, **signed)
        setattr(gm.get_submodule(node.target.rpartition(".")[0]) if "." in node.target else gm,
                node.target.rpartition(".")[2], spiking)
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module":
            mask = gm.get_submodule(users[0].target)
            if isinstance(mask, RandomSpikeMask):
                spiking.mask = mask
                bypass(gm, users[0])


def _compensate(gm: fx.GraphModule, coding: str) -> None:
    dynamic = ops.dynamic_nodes(gm.graph)
    for node in list(gm.graph.nodes):
        kind = ops.kind(node, gm, dynamic.__contains__)
        if kind not in ops.COMPENSATED:
            continue
        positions = tuple(i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and a in dynamic)
        if any(isinstance(v, fx.Node) and v in dynamic for v in node.kwargs.values()):
            raise SnnConvertError(f"{node.name} ({ops.describe(node, gm)}) takes a dynamic keyword argument; "
                                  "pass it by position")
        bilinear = kind == ops.PRODUCT
        if node.op == "call_module":
            parent, _, attr = node.target.rpartition(".")
            holder = gm.get_submodule(parent) if parent else gm
            setattr(holder, attr, ExpectationCompensated(getattr(holder, attr), positions, bilinear, coding))
        else:
            name = getattr(node.target, "__name__", str(node.target)).strip("_")
            path = add_module(gm, join(owner(node), name),
                              ExpectationCompensated(Call(node.target), positions, bilinear, coding))
            node.op, node.target = "call_module", path


#: op kinds that are affine in their dynamic inputs: a constant they add is counted once under count coding
_AFFINE = (ops.STRUCTURAL, ops.LINEAR, ops.WEIGHT, ops.BATCHNORM)


@torch.no_grad()
def _count_once(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Count coding: the input once (:class:`InputOnce`), and the constant ``c = op(0)`` of every
    affine op once (:class:`OnceOffset`): a Linear / Conv loses its bias to an offset added at the
    first step; any other op keeps its output and the offset is subtracted after the first step."""
    offsets = _ConstantOffsets(gm).offsets(example)
    reset_states(gm)
    stripped = set()
    for node, offset in offsets.items():
        layer = gm.get_submodule(node.target) if node.op == "call_module" else None
        strip = layer is not None and type(layer).forward in _BIAS_LAST and layer.bias is not None
        if strip:
            offset = layer.bias.detach()
            if isinstance(layer, nn.modules.conv._ConvNd):  # [C] → [C, 1, …] over the spatial dims
                offset = offset.reshape(-1, *[1] * (len(node.meta["shape"]) - 2))
            stripped.add(layer)
        path = node.target if layer is not None else join(owner(node), node.name)
        insert_after(gm, node, f"{path}_offset", OnceOffset(offset, included=not strip))
    for layer in stripped:
        layer.bias = None
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    insert_after(gm, placeholder, "input_once", InputOnce())


#: forwards that add ``self.bias`` last (torch's Linear and Conv): their bias can be taken out
_BIAS_LAST = {nn.Linear.forward, nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward,
              nn.ConvTranspose1d.forward, nn.ConvTranspose2d.forward, nn.ConvTranspose3d.forward}


class _ConstantOffsets(fx.Interpreter):
    """One run on the example that also evaluates, on zero dynamic inputs, every affine op that
    may add a constant (by structure, not value: a reloaded model must get the same graph): its
    offset, at batch size 1."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.dynamic = ops.dynamic_nodes(gm.graph)
        self.found: dict[fx.Node, torch.Tensor] = {}

    def offsets(self, example: torch.Tensor) -> dict[fx.Node, torch.Tensor]:
        self.run(example)
        return self.found

    def _adds_constant(self, node: fx.Node, kind: str) -> bool:
        """Whether an affine op has a constant term: a bias, a BatchNorm's shift, a constant operand
        it adds (a tensor or a number: hard sigmoid's ``x + 3``) or concatenates, a padding value;
        not a constant it multiplies by."""
        if node.op == "call_module":
            module = self.module.get_submodule(node.target)
            return getattr(module, "bias", None) is not None or kind == ops.BATCHNORM
        if kind == ops.WEIGHT:
            return (node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")) is not None
        if ops.calls(node, ops.ADDITIONS | ops.SUBTRACTIONS) and \
                any(isinstance(a, (int, float)) for a in node.args[:2]):
            return True
        if node.target is F.pad:
            return bool(node.args[3] if len(node.args) > 3 else node.kwargs.get("value"))
        if ops.calls(node, ops.SCALINGS | ops.NEGATIONS | ops.MATRIX_PRODUCTS) or node.target is torch.einsum:
            return False
        return any(n not in self.dynamic and isinstance(self.env[n], torch.Tensor) for n in node.all_input_nodes)

    def run_node(self, node: fx.Node):
        value = super().run_node(node)
        kind = ops.kind(node, self.module, self.dynamic.__contains__) if node in self.dynamic else None
        if kind in _AFFINE and isinstance(value, torch.Tensor) and self._adds_constant(node, kind):
            zeroed = fx.node.map_arg((node.args, node.kwargs),
                                     lambda n: _zeros(self.env[n]) if n in self.dynamic else self.env[n])
            self.found[node] = getattr(self, node.op)(node.target, *zeroed)
        return value


def _zeros(value):
    """Zeros in the place of every tensor of a value (a tensor, or a tuple or list of them)."""
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value)
    return type(value)(_zeros(v) for v in value) if isinstance(value, (tuple, list)) else value


@torch.no_grad()
def _fold_constants(gm: fx.GraphModule) -> None:
    """Compute once the values that depend on parameters and literals alone (not on the input or
    its shape) and store them as buffers ``<owner>.constant``, ``constant_1`` …"""
    values, constant = {}, set()
    interpreter = fx.Interpreter(gm)
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            values[node] = interpreter.fetch_attr(node.target)
            constant.add(node)
        elif node.op.startswith("call") and all(n in constant for n in node.all_input_nodes) \
                and getattr(node.target, "__name__", str(node.target)) not in _IMPURE \
                and not isinstance(gm.get_submodule(node.target) if node.op == "call_module" else None,
                                   (RandomSpikeMask, QCFS)):
            args = fx.node.map_arg(node.args, values.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
            values[node] = getattr(interpreter, node.op)(node.target, args, kwargs)
            constant.add(node)
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" or node not in constant or not isinstance(values[node], torch.Tensor) \
                or all(u in constant for u in node.users):
            continue
        path = add_module(gm, join(owner(node), "constant"), _Constant(values[node]))
        with gm.graph.inserting_before(node):
            value = gm.graph.get_attr(f"{path}.value")
        node.replace_all_uses_with(value)


class _Constant(nn.Module):
    """A value computed from parameters once at conversion, kept with the model's state."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value.detach().clone())


@dataclass(frozen=True)
class FloatOp:
    """An op of a converted model that is not spike-driven."""

    name: str
    kind: str
    why: str


def float_operations(snn: fx.GraphModule) -> list[FloatOp]:
    """Every op of a converted model that runs in floating point, by name: compensated (or
    per-step) nonlinear ops and BatchNorms that could not fold."""
    dynamic = ops.dynamic_nodes(snn.graph)
    found = []
    for node in snn.graph.nodes:
        kind = ops.kind(node, snn, dynamic.__contains__)
        module = snn.get_submodule(node.target) if node.op == "call_module" else None
        name = node.target if node.op == "call_module" else node.name
        if isinstance(module, ExpectationCompensated):
            inner = module.fn
            op = inner.extra_repr() if isinstance(inner, Call) else type(inner).__name__
            found.append(FloatOp(name, op, "expectation-compensated product" if module.bilinear
                                 else "expectation-compensated nonlinearity"))
        elif kind in ops.COMPENSATED:
            found.append(FloatOp(name, ops.describe(node, snn), "nonlinearity applied to each step"))
        elif kind == ops.BATCHNORM:
            found.append(FloatOp(name, ops.describe(node, snn), "unfolded BatchNorm: per-channel multiply-add each step"))
    return found
