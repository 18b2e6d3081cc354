"""An ONNX ANN (from Keras, TensorFlow, JAX, PyTorch …) as a traceable PyTorch module.

The file is read into a small graph of nodes and constants and cleaned up before any module is
made, so that the result looks like a PyTorch model the converter knows:

1. casts to float, identities and dropouts go; shape arithmetic (``Shape → Gather → Concat →
   Reshape``) is evaluated with the batch size kept symbolic; ops of constants alone are folded;
2. transposes meet their inverse across elementwise ops (a channels-last model's layout flips
   around every convolution) and cancel, the constants between them put into the other layout;
   a transpose before a flatten into a matrix product becomes a permutation of the matrix's rows;
3. a convolution or matrix product followed by the addition of a constant takes it as its bias;
   a chain of per-channel ``Sub`` / ``Mul`` / ``Add`` / ``Div`` by constants (a BatchNorm as
   inference exporters write it) becomes one BatchNorm; a softmax on the output is left out (it
   does not change the prediction; the import's notes say so);
4. every node becomes a module (``Conv2d``, ``Linear``, ``BatchNorm2d``, ``ReLU``, ``MaxPool2d`` …)
   or a torch function in an ``fx.GraphModule``.

Every op left that has no PyTorch form here is listed at once, with its node name. A channels-last
model (input ``[N, H, W, C]``) takes ``[N, C, H, W]`` images like every other model: its input
transpose is added in front and cancels with the model's own.

We wrote the importer instead of depending on onnx2torch: onnx2torch maps ops one by one into its
own module types (``OnnxTranspose``, ``OnnxReshape`` with shapes computed at run time, Keras'
decomposed BatchNorms as separate ``Sub`` / ``Mul`` / ``Add`` modules), which the converter would
have to learn one by one, and it keeps a channels-last model's transposes around every layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from snnconvert.errors import CheckpointError, SnnConvertError, UnsupportedLayersError

#: the ops the importer has a PyTorch form for (besides those it folds away)
SUPPORTED = ("Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh",
             "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Add", "Sub", "Mul", "Div", "Flatten",
             "Reshape", "Transpose", "Softmax", "LayerNormalization", "Gelu", "Concat", "Squeeze", "Unsqueeze",
             "ReduceMean")
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")
_UNARY = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "Gelu")


class _Batch:
    """The batch size in shape arithmetic: unknown at import, kept as a symbol."""

    def __repr__(self) -> str:
        return "N"


BATCH = _Batch()


@dataclass
class _Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Imported:
    """What :func:`import_onnx` made: the module, the input it takes ``(C, H, W)``, its class
    count, and notes on what the import changed beyond a one-to-one translation."""

    module: fx.GraphModule
    input_size: tuple[int, int, int]
    num_classes: int
    notes: list[str]


def is_snnconvert_step(path: str | Path) -> bool:
    """Whether the file's own metadata says it is an SNN step that ``snnconvert export`` wrote."""
    from snnconvert.export.session import SNN_STEP, read_metadata

    return read_metadata(path).get("format") == SNN_STEP


def import_onnx(path: str | Path, input_layout: str = "auto") -> Imported:
    """The ANN in the ONNX file ``path`` as an ``fx.GraphModule`` taking ``[N, C, H, W]`` images.

    Args:
        input_layout: ``nchw`` or ``nhwc`` (channels last), the layout of the file's input;
            ``auto``: from its static shape where that is unambiguous (a last dimension of 1 or 3
            and a second one that is not).

    Raises:
        CheckpointError: the file is not a readable ONNX model, or is an SNN step.
        UnsupportedLayersError: ops the importer cannot translate, all of them, by node name.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable ONNX model ({e})") from e
    if is_snnconvert_step(path):
        raise CheckpointError(f"{path} is an SNN step exported by snnconvert (its metadata says so), not an ANN: "
                              f"simulate it with `snnconvert simulate {path}`")
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise SnnConvertError(f"{path} has {len(inputs)} inputs and {len(graph.output)} outputs; an image "
                              "classifier has one of each")
    layout, size = input_of(model, input_layout, path)
    shapes = _shapes(shape_inference.infer_shapes(model).graph)
    nodes = [_Node(n.op_type, n.name or f"{n.op_type}_{i}", list(n.input), list(n.output),
                   {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
             for i, n in enumerate(graph.node)]
    x = "snnconvert_input"
    if layout == "nhwc":
        nodes.insert(0, _Node("Transpose", "input_layout", [x], [inputs[0].name], {"perm": [0, 2, 3, 1]}))
    else:
        x = inputs[0].name
    output = graph.output[0].name
    nodes, aliases = _fold(nodes, consts, shapes)
    output = aliases.get(output, output)
    unsupported = [(n.name, n.op, "no PyTorch form in the ONNX importer (supported: " + ", ".join(SUPPORTED) + ")")
                   for n in nodes if n.op not in SUPPORTED]
    if unsupported:
        raise UnsupportedLayersError(unsupported)
    notes: list[str] = []
    nodes = _cancel_transposes(nodes, consts, output)
    nodes = _permute_flattened_rows(nodes, consts, shapes)
    nodes, output = _drop_output_softmax(nodes, output, notes)
    nodes = _fuse_bias(nodes, consts)
    nodes = _fuse_affine(nodes, consts, shapes)
    module = _build(nodes, consts, x, output, shapes)
    with torch.no_grad():
        out = module(torch.zeros(1, *size))
    if out.dim() != 2:
        raise SnnConvertError(f"{path} outputs {list(out.shape)}, not [N, classes]")
    return Imported(module.eval(), size, out.shape[1], notes)


def input_of(model, layout: str = "auto", path: str | Path = "the model") -> tuple[str, tuple[int, int, int]]:
    """The layout (``nchw`` / ``nhwc``, see :func:`import_onnx`) and ``(C, H, W)`` of an ONNX model's input."""
    initialized = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in initialized)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]
    layout = _layout(dims, layout, path)
    size = tuple(dims[1:]) if layout == "nchw" else (dims[3], dims[1], dims[2])
    if len(dims) != 4 or None in size:
        raise SnnConvertError(f"{path}'s input has shape {dims}: an image model takes [N, C, H, W] or [N, H, W, C] "
                              "with fixed C, H, W")
    return layout, size


def _layout(dims: list, asked: str, path) -> str:
    if asked in ("nchw", "nhwc"):
        return asked
    if asked != "auto":
        raise SnnConvertError(f"unknown input layout {asked!r}; choose auto, nchw or nhwc")
    if len(dims) == 4 and dims[3] in (1, 3) and dims[1] not in (1, 3):
        return "nhwc"
    if len(dims) == 4 and dims[1] in (1, 3) and dims[3] not in (1, 3):
        return "nchw"
    raise SnnConvertError(f"cannot tell the layout of {path}'s input {dims}: pass --input-layout nchw or nhwc")


def _shapes(graph) -> dict[str, list]:
    found = {}
    for info in [*graph.value_info, *graph.input, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        found[info.name] = [d.dim_value if d.HasField("dim_value") else BATCH for d in dims]
    return found


def _fold(nodes: list[_Node], consts: dict, shapes: dict) -> tuple[list[_Node], dict[str, str]]:
    """Drop casts and identities, evaluate shape arithmetic and ops of constants alone."""
    kept, alias, values = [], {}, {}  # values: shape arithmetic results (lists, BATCH for the batch size)

    def known(name):
        return name in consts or name in values

    def value(name):
        return values[name] if name in values else consts[name]

    for node in nodes:
        node.inputs = [alias.get(i, i) for i in node.inputs]
        op, ins = node.op, [i for i in node.inputs if i]
        if op in ("Identity", "Dropout") or (op == "Cast" and node.attrs.get("to") == 1):
            alias[node.outputs[0]] = ins[0]
        elif op == "Constant":
            from onnx import numpy_helper
            consts[node.outputs[0]] = numpy_helper.to_array(node.attrs["value"])
        elif op == "Shape" and ins[0] in shapes:
            values[node.outputs[0]] = list(shapes[ins[0]])
        elif ins and all(known(i) for i in ins) and op in ("Gather", "Unsqueeze", "Concat", "Squeeze", *_ELEMENTWISE,
                                                           "Reshape", "Transpose", "Cast"):
            result = _evaluate(node, [value(i) for i in ins])
            (values if isinstance(result, list) else consts)[node.outputs[0]] = result
        elif op == "Reshape" and ins[1] in values:
            consts[ins[1]] = values[ins[1]]
            kept.append(node)
        else:
            kept.append(node)
    return kept, alias


def _evaluate(node: _Node, args: list):
    """A node of constants (numpy arrays) or shape lists; a shape list stays a list."""
    symbolic = any(isinstance(a, list) for a in args)
    if symbolic:
        as_list = [list(a) if isinstance(a, list) else np.atleast_1d(a).tolist() for a in args]
        if node.op == "Gather":
            data, index = as_list
            picked = [data[int(i)] for i in np.atleast_1d(args[1]).tolist()]
            return picked if np.ndim(args[1]) else picked[0:1]
        if node.op in ("Unsqueeze", "Squeeze", "Cast"):
            return as_list[0]
        if node.op == "Concat":
            return [v for a in as_list for v in a]
        raise SnnConvertError(f"cannot evaluate the shape arithmetic of node {node.name} ({node.op})")
    a = args[0]
    if node.op == "Gather":
        return np.take(a, args[1], axis=node.attrs.get("axis", 0))
    if node.op == "Unsqueeze":
        axes = node.attrs.get("axes", args[1] if len(args) > 1 else [0])
        return np.expand_dims(a, tuple(int(v) for v in np.atleast_1d(axes)))
    if node.op == "Squeeze":
        return np.squeeze(a)
    if node.op == "Concat":
        return np.concatenate(args, axis=node.attrs.get("axis", 0))
    if node.op == "Reshape":
        return a.reshape([int(v) for v in args[1]])
    if node.op == "Transpose":
        return a.transpose(node.attrs.get("perm"))
    if node.op == "Cast":
        return a
    return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[node.op](*args)


def _consumers(nodes: list[_Node], name: str) -> list[_Node]:
    return [n for n in nodes if name in n.inputs]


def _with_constant(node: _Node, consts: dict) -> bool:
    """An elementwise op of one tensor and one constant (the tensor first for Sub and Div)."""
    return node.op in _ELEMENTWISE and len(node.inputs) == 2 and (
        node.inputs[1] in consts or (node.op in ("Add", "Mul") and node.inputs[0] in consts))


def _cancel_transposes(nodes: list[_Node], consts: dict, output: str) -> list[_Node]:
    """Remove each transpose whose inverse follows it through a chain of elementwise ops (each
    the only reader of the one before), the constants in between put in the other layout."""
    changed = True
    while changed:
        changed = False
        for first in [n for n in nodes if n.op == "Transpose"]:
            perm, chain, current = list(first.attrs["perm"]), [], first
            while True:
                readers = _consumers(nodes, current.outputs[0])
                if len(readers) != 1 or current.outputs[0] == output:
                    break
                reader = readers[0]
                if reader.op == "Transpose":
                    if [perm[i] for i in reader.attrs["perm"]] == list(range(len(perm))):
                        _remove_pair(nodes, first, reader, chain, consts, perm)
                        changed = True
                    break
                if reader.op in _UNARY or _with_constant(reader, consts):
                    chain.append(reader)
                    current = reader
                    continue
                break
            if changed:
                break
    return nodes


def _remove_pair(nodes, first, second, chain, consts, perm) -> None:
    inverse = list(np.argsort(perm))
    for node in chain:
        for k, name in enumerate(node.inputs):
            if name in consts and np.ndim(consts[name]) > 0:
                value = consts[name]
                value = value.reshape((1,) * (len(perm) - value.ndim) + value.shape)
                new = f"{name}__{node.name}_layout"
                consts[new] = value.transpose(inverse)
                node.inputs[k] = new
    source = first.inputs[0]
    for node in nodes:
        node.inputs = [source if i == first.outputs[0] else i for i in node.inputs]
    last = chain[-1].outputs[0] if chain else source
    for node in nodes:
        node.inputs = [last if i == second.outputs[0] else i for i in node.inputs]
    nodes.remove(first)
    nodes.remove(second)


def _permute_flattened_rows(nodes: list[_Node], consts: dict, shapes: dict) -> list[_Node]:
    """``Transpose(0,2,3,1) → flatten → MatMul W`` (a channels-last model's classifier) as
    ``flatten → MatMul W'``, W's rows permuted from channels-last order to channels-first."""
    for first in [n for n in nodes if n.op == "Transpose" and list(n.attrs["perm"]) == [0, 2, 3, 1]]:
        readers = _consumers(nodes, first.outputs[0])
        if len(readers) != 1 or not _flattens(readers[0], consts):
            continue
        flatten = readers[0]
        products = _consumers(nodes, flatten.outputs[0])
        shape = shapes.get(first.outputs[0])  # [N, H, W, C]: the transpose's own output, never relaid out
        if not products or shape is None or len(shape) != 4 or BATCH in shape[1:] or not all(
                p.op in ("MatMul", "Gemm") and p.inputs[1] in consts and not p.attrs.get("transB") for p in products):
            continue
        h, w, c = shape[1:]
        rows = np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        for product in products:
            new = f"{product.inputs[1]}__channels_first"
            consts[new] = consts[product.inputs[1]][rows]
            product.inputs[1] = new
        flatten.inputs[0] = first.inputs[0]
        nodes.remove(first)
    return nodes


def _flattens(node: _Node, consts: dict) -> bool:
    """A Flatten at axis 1, or a Reshape to ``[N, -1]``."""
    if node.op == "Flatten":
        return node.attrs.get("axis", 1) == 1
    return node.op == "Reshape" and _reshape_target(consts[node.inputs[1]]) == "flatten"


def _reshape_target(shape) -> str | list[int]:
    """``flatten`` for a reshape to ``[N, -1]`` (or ``[0, -1]``), else the target with -1 for the batch."""
    dims = list(shape) if isinstance(shape, list) else np.atleast_1d(shape).tolist()
    if len(dims) == 2 and (dims[0] is BATCH or dims[0] == 0) and dims[1] == -1:
        return "flatten"
    rest = [int(d) for d in dims[1:]]
    if dims[0] is BATCH or dims[0] in (0, -1):
        return [-1, *rest]
    return [int(d) for d in dims]


def _drop_output_softmax(nodes: list[_Node], output: str, notes: list[str]) -> tuple[list[_Node], str]:
    last = next((n for n in nodes if output in n.outputs), None)
    if last is not None and last.op == "Softmax":
        nodes.remove(last)
        notes.append(f"left out the softmax on the output ({last.name}): it does not change the prediction, and the "
                     "SNN's output is its logits' running total")
        return nodes, last.inputs[0]
    return nodes, output


def _fuse_bias(nodes: list[_Node], consts: dict) -> list[_Node]:
    """A Conv or MatMul whose only reader adds a constant of one value per output channel takes it as its bias."""
    for node in [n for n in nodes if n.op in ("Conv", "MatMul") and len(n.inputs) == 2 and n.inputs[1] in consts]:
        readers = _consumers(nodes, node.outputs[0])
        if len(readers) != 1 or readers[0].op != "Add" or not _with_constant(readers[0], consts):
            continue
        add = readers[0]
        bias = consts[next(i for i in add.inputs if i in consts)]
        channels = consts[node.inputs[1]].shape[0 if node.op == "Conv" else 1]
        per = _per_channel(bias, 4 if node.op == "Conv" else 2, channels) if bias.size == channels else None
        if per is None:
            continue
        name = f"{node.name}__bias"
        consts[name] = per.astype(np.float32)
        node.inputs.append(name)
        node.outputs = add.outputs
        nodes.remove(add)
    return nodes


def _fuse_affine(nodes: list[_Node], consts: dict, shapes: dict) -> list[_Node]:
    """A chain of per-channel Sub / Mul / Add / Div by constants as one ``BatchNormalization``
    (``y = s·x + t`` with ``s``, ``t`` per channel of a [N, C, …] tensor)."""
    done: set[int] = set()
    for start in list(nodes):
        if id(start) in done or not _with_constant(start, consts) or start.inputs[0] in consts:
            continue
        chain, current = [start], start
        while True:
            readers = _consumers(nodes, current.outputs[0])
            if len(readers) != 1 or not _with_constant(readers[0], consts) or readers[0].inputs[0] in consts:
                break
            chain.append(readers[0])
            current = readers[0]
        rank = len(shapes.get(start.inputs[0], ()))  # a rank does not change with the layout
        shaped = [consts[n.inputs[1]] for n in chain if np.size(consts[n.inputs[1]]) > 1]
        if rank < 2 or not shaped:
            continue
        full = shaped[0].reshape((1,) * (rank - shaped[0].ndim) + shaped[0].shape)
        channels = full.shape[1]
        shape = [BATCH, channels, *([1] * (rank - 2))]
        scale, shift = np.ones(channels), np.zeros(channels)
        fits = True
        for node in chain:
            value = np.asarray(consts[node.inputs[1]], dtype=np.float64)
            per = _per_channel(value, len(shape), channels)
            if per is None:
                fits = False
                break
            if node.op == "Add":
                shift = shift + per
            elif node.op == "Sub":
                shift = shift - per
            elif node.op == "Mul":
                scale, shift = scale * per, shift * per
            else:
                scale, shift = scale / per, shift / per
        if not fits or len(chain) < 2:
            continue
        name = f"{start.name}__affine"
        for part, v in (("scale", scale), ("shift", shift), ("mean", np.zeros(channels)),
                        ("var", np.ones(channels))):
            consts[f"{name}_{part}"] = v.astype(np.float32)
        fused = _Node("BatchNormalization", name, [start.inputs[0], *(f"{name}_{p}" for p in
                                                                    ("scale", "shift", "mean", "var"))],
                      chain[-1].outputs, {"epsilon": 0.0, "rank": rank})
        index = nodes.index(start)
        for node in chain:
            nodes.remove(node)
            done.add(id(node))
        nodes.insert(index, fused)
    return nodes


def _per_channel(value: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """A constant broadcast over a rank-``rank`` [N, C, …] tensor as one value per channel (None: it is not one)."""
    if value.size == 1:
        return np.full(channels, float(value.reshape(())))
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if full.shape[1] == channels and all(d == 1 for i, d in enumerate(full.shape) if i != 1):
        return full.reshape(channels)
    return None


def _build(nodes: list[_Node], consts: dict, x: str, output: str, shapes: dict) -> fx.GraphModule:
    """The nodes as modules and functions of an ``fx.GraphModule``."""
    root, graph, env = nn.Module(), fx.Graph(), {}
    env[x] = graph.placeholder("x")
    names: set[str] = set()

    def unique(base: str) -> str:
        name = re.sub(r"\W+", "_", base).strip("_").lower() or "op"
        name = f"n_{name}" if name[0].isdigit() else name
        candidate, k = name, 1
        while candidate in names:
            candidate, k = f"{name}_{k}", k + 1
        names.add(candidate)
        return candidate

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(consts[name], dtype=np.float32))

    def operand(name: str) -> fx.Node:
        if name in env:
            return env[name]
        if name not in consts:
            raise SnnConvertError(f"the ONNX graph reads {name!r}, which no node writes")
        target = unique(f"const_{name}")
        root.register_buffer(target, tensor(name))
        env[name] = graph.get_attr(target)
        return env[name]

    def module(node: _Node, layer: nn.Module, *args) -> fx.Node:
        target = unique(node.name)
        root.add_module(target, layer)
        return graph.call_module(target, args)

    for node in nodes:
        a, op = node.attrs, node.op
        ins = node.inputs
        if op == "Conv":
            layer = _conv(node, tensor(ins[1]), tensor(ins[2]) if len(ins) > 2 and ins[2] else None)
            out = module(node, layer, operand(ins[0]))
        elif op in ("Gemm", "MatMul") and ins[1] in consts and consts[ins[1]].ndim == 2:
            out = module(node, _linear(node, tensor(ins[1]), tensor(ins[2]) if len(ins) > 2 and ins[2] else None),
                         operand(ins[0]))
        elif op == "MatMul":
            out = graph.call_function(torch.matmul, (operand(ins[0]), operand(ins[1])))
        elif op == "BatchNormalization":
            weight, bias, mean, var = (tensor(i) for i in ins[1:5])
            rank = a.get("rank", len(shapes.get(ins[0], [0] * 4)))
            norm = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(
                len(weight), eps=float(a.get("epsilon", 1e-5)))
            norm.weight.data, norm.bias.data, norm.running_mean.data, norm.running_var.data = weight, bias, mean, var
            out = module(node, norm.eval(), operand(ins[0]))
        elif op in ("Relu", "Sigmoid", "Tanh", "Gelu", "LeakyRelu", "Clip"):
            out = module(node, _activation(node, consts), operand(ins[0]))
        elif op in ("MaxPool", "AveragePool"):
            out = module(node, _pool(node), operand(ins[0]))
        elif op in ("GlobalAveragePool", "GlobalMaxPool"):
            layer = nn.AdaptiveAvgPool2d(1) if op == "GlobalAveragePool" else nn.AdaptiveMaxPool2d(1)
            out = module(node, layer, operand(ins[0]))
        elif op in _ELEMENTWISE:
            function = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[op]
            out = graph.call_function(function, (operand(ins[0]), operand(ins[1])))
        elif op == "Flatten":
            out = graph.call_function(torch.flatten, (operand(ins[0]), int(a.get("axis", 1))))
        elif op == "Reshape":
            target = _reshape_target(consts[ins[1]])
            out = graph.call_function(torch.flatten, (operand(ins[0]), 1)) if target == "flatten" else \
                graph.call_method("reshape", (operand(ins[0]), *target))
        elif op == "Transpose":
            out = graph.call_method("permute", (operand(ins[0]), *a["perm"]))
        elif op == "Softmax":
            out = module(node, nn.Softmax(int(a.get("axis", -1))), operand(ins[0]))
        elif op == "LayerNormalization":
            weight = tensor(ins[1])
            norm = nn.LayerNorm(weight.shape, eps=float(a.get("epsilon", 1e-5)))
            norm.weight.data = weight
            norm.bias.data = tensor(ins[2]) if len(ins) > 2 and ins[2] else torch.zeros_like(weight)
            out = module(node, norm, operand(ins[0]))
        elif op == "Concat":
            out = graph.call_function(torch.cat, ([operand(i) for i in ins], int(a.get("axis", 0))))
        elif op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes") or np.atleast_1d(consts[ins[1]]).tolist()
            out = operand(ins[0])
            for axis in sorted(axes, reverse=op == "Squeeze"):
                out = graph.call_method(op.lower(), (out, int(axis)))
        elif op == "ReduceMean":
            axes = a.get("axes") or np.atleast_1d(consts[ins[1]]).tolist()
            out = graph.call_method("mean", (operand(ins[0]), [int(v) for v in axes]), {"keepdim": bool(a.get("keepdims", 1))})
        else:  # the supported list and this function disagree
            raise SnnConvertError(f"the ONNX importer cannot build node {node.name} ({op})")
        env[node.outputs[0]] = out
    graph.output(env[output] if output in env else operand(output))
    return fx.GraphModule(root, graph, class_name="ImportedOnnx")


def _conv(node: _Node, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    a = node.attrs
    if weight.dim() != 4:
        raise SnnConvertError(f"{node.name}: only 2-D convolutions are imported, its weight is {list(weight.shape)}")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or pads[:2] != pads[2:]:
        raise SnnConvertError(f"{node.name}: asymmetric or automatic padding ({a.get('auto_pad')}, {pads}) is not "
                              "imported; export with explicit symmetric pads")
    groups = int(a.get("group", 1))
    layer = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                      stride=tuple(a.get("strides", [1, 1])), padding=tuple(pads[:2]),
                      dilation=tuple(a.get("dilations", [1, 1])), groups=groups, bias=bias is not None)
    layer.weight.data = weight
    if bias is not None:
        layer.bias.data = bias
    return layer


def _linear(node: _Node, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    a = node.attrs
    if node.op == "Gemm":
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise SnnConvertError(f"{node.name}: a Gemm with transA, alpha or beta is not imported")
        weight = weight if a.get("transB", 0) else weight.T
    else:
        weight = weight.T
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data = weight.contiguous()
    if bias is not None:
        layer.bias.data = bias.reshape(-1)
    return layer


def _activation(node: _Node, consts: dict) -> nn.Module:
    a, op = node.attrs, node.op
    if op == "Clip":
        low = a.get("min", float(consts[node.inputs[1]]) if len(node.inputs) > 1 and node.inputs[1] else None)
        high = a.get("max", float(consts[node.inputs[2]]) if len(node.inputs) > 2 and node.inputs[2] else None)
        if low == 0 and high == 6:
            return nn.ReLU6()
        if low == 0 and high is None:
            return nn.ReLU()
        return nn.Hardtanh(-np.inf if low is None else low, np.inf if high is None else high)
    if op == "LeakyRelu":
        return nn.LeakyReLU(float(a.get("alpha", 0.01)))
    if op == "Gelu":
        approximate = a.get("approximate", b"none")
        return nn.GELU(approximate=approximate.decode() if isinstance(approximate, bytes) else approximate)
    return {"Relu": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}[op]()


def _pool(node: _Node) -> nn.Module:
    a = node.attrs
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise SnnConvertError(f"{node.name}: asymmetric pooling pads {pads} are not imported")
    args = dict(kernel_size=tuple(a["kernel_shape"]), stride=tuple(a.get("strides", a["kernel_shape"])),
                padding=tuple(pads[:2]), ceil_mode=bool(a.get("ceil_mode", 0)))
    if node.op == "MaxPool":
        return nn.MaxPool2d(**args, dilation=tuple(a.get("dilations", [1, 1])))
    return nn.AvgPool2d(**args, count_include_pad=bool(a.get("count_include_pad", 0)))
