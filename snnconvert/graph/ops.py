"""The role of every op of a traced model in conversion.

Rate coding carries an ANN activation as the running mean of a spike train, so what conversion
does with an op depends only on how the op relates to running means:

* ``structural`` / ``identity`` ops move values without arithmetic (reshape, permute, getitem,
  cat, pad, roll; dropout in evaluation) and ``linear`` ops are linear in their dynamic inputs (add,
  scaling by constants, mean, average pooling, interpolation, frozen BatchNorm): all commute with
  the running mean and run on each step's values unchanged. ``weight`` ops (Linear, Conv, also
  functional) are linear too; they are where synaptic operations happen.
* ``activation`` ops become QCFS (an IF neuron after conversion) or stay as float ops;
  ``product`` ops (two dynamic operands) and every other nonlinear op (``softmax``, ``norm``,
  ``maxpool``, ``nonlinear``) are expectation-compensated; ``attention`` (fused SDPA) is first
  decomposed into products and a softmax.
* ``static`` ops have no dynamic input (shapes, guards, parameters): they run as they are;
  ``spiking`` ops are snnconvert's own (QCFS, neurons, masks, compensated operators).

Classification needs to know which inputs are *dynamic* (depend on the input image): ``x * w``
is linear for a constant ``w`` but a product when both factors are dynamic.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

STRUCTURAL, IDENTITY, LINEAR, BATCHNORM, WEIGHT = "structural", "identity", "linear", "batchnorm", "weight"
ACTIVATION, SOFTMAX, NORM, PRODUCT, ATTENTION = "activation", "softmax", "norm", "product", "attention"
MAXPOOL, NONLINEAR, STATIC, SPIKING, UNKNOWN = "maxpool", "nonlinear", "static", "spiking", "unknown"
#: kinds an SNN computes in floating point by expectation compensation
COMPENSATED = (SOFTMAX, NORM, PRODUCT, MAXPOOL, NONLINEAR, ACTIVATION)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation as ``offset + scale·clip(x + shift, 0, cap)`` where it has that form.

    Attributes:
        name: canonical name (``relu``, ``relu6``, ``gelu``, ``silu``, ``hardsigmoid`` …).
        relu_family: True when the activation *is* ``offset + scale·clip(x + shift, 0, cap)``, so
            QCFS reproduces it up to quantization; False when QCFS only approximates it (GELU, SiLU …).
        cap: upper clip (ReLU6: 6), None when unbounded.
        shift, scale, offset: the affine parts around the clip (hard sigmoid: ``relu6(x + 3)/6``).
    """

    name: str
    relu_family: bool = False
    cap: float | None = None
    shift: float = 0.0
    scale: float = 1.0
    offset: float = 0.0


#: every activation name :func:`activation_of` gives
ACTIVATION_NAMES = ("relu", "relu6", "hardtanh", "hardsigmoid", "clamp", "gelu", "silu", "hardswish", "leaky_relu",
                    "elu", "celu", "selu", "mish", "softplus", "prelu", "sigmoid", "tanh", "softsign")
#: the activations that are a clip (``clamp(x·scale + shift, low, cap)`` up to an affine map): QCFS
#: computes them exactly up to quantization
RELU_FAMILY = ("relu", "relu6", "hardtanh", "hardsigmoid", "clamp")


def _clip_activation(name: str, low: float | None, high: float | None) -> Activation:
    """``clamp(x, low, high)`` with a finite lower bound as a ReLU-family activation."""
    if low is None:
        return Activation(name)
    return Activation(name, True, None if high is None else high - low, shift=-low, offset=low)


_RELU = Activation("relu", True)
_ACTIVATION_MODULES: dict[type, Callable[[nn.Module], Activation]] = {
    nn.ReLU: lambda m: _RELU,
    nn.ReLU6: lambda m: Activation("relu6", True, 6.0),
    nn.Hardtanh: lambda m: _clip_activation("hardtanh", m.min_val, m.max_val),
    nn.Hardsigmoid: lambda m: Activation("hardsigmoid", True, 6.0, shift=3.0, scale=1 / 6),
    nn.GELU: lambda m: Activation("gelu"),
    nn.SiLU: lambda m: Activation("silu"),
    nn.Hardswish: lambda m: Activation("hardswish"),
    nn.LeakyReLU: lambda m: Activation("leaky_relu"),
    nn.ELU: lambda m: Activation("elu"),
    nn.CELU: lambda m: Activation("celu"),
    nn.SELU: lambda m: Activation("selu"),
    nn.Mish: lambda m: Activation("mish"),
    nn.Softplus: lambda m: Activation("softplus"),
    nn.PReLU: lambda m: Activation("prelu"),
    nn.Sigmoid: lambda m: Activation("sigmoid"),
    nn.Tanh: lambda m: Activation("tanh"),
    nn.Softsign: lambda m: Activation("softsign"),
}


def _clamp_args(node: fx.Node) -> Activation:
    low = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
    high = node.kwargs.get("max", node.args[2] if len(node.args) > 2 else None)
    if isinstance(low, fx.Node) or isinstance(high, fx.Node):
        return Activation("clamp")
    return _clip_activation("clamp", low, high)


def _hardtanh_args(node: fx.Node) -> Activation:
    low = node.kwargs.get("min_val", node.args[1] if len(node.args) > 1 else -1.0)
    high = node.kwargs.get("max_val", node.args[2] if len(node.args) > 2 else 1.0)
    return _clip_activation("hardtanh", low, high)


_ACTIVATION_FUNCTIONS: dict[Callable, Callable[[fx.Node], Activation]] = {
    F.relu: lambda n: _RELU, torch.relu: lambda n: _RELU, torch.relu_: lambda n: _RELU,
    F.relu6: lambda n: Activation("relu6", True, 6.0),
    F.hardtanh: _hardtanh_args,
    F.hardsigmoid: lambda n: Activation("hardsigmoid", True, 6.0, shift=3.0, scale=1 / 6),
    torch.clamp: _clamp_args, torch.clip: _clamp_args,
    torch.clamp_min: lambda n: _clip_activation("clamp", n.args[1], None),
    F.gelu: lambda n: Activation("gelu"), F.silu: lambda n: Activation("silu"),
    F.hardswish: lambda n: Activation("hardswish"), F.leaky_relu: lambda n: Activation("leaky_relu"),
    F.elu: lambda n: Activation("elu"), F.celu: lambda n: Activation("celu"), F.selu: lambda n: Activation("selu"),
    F.mish: lambda n: Activation("mish"), F.softplus: lambda n: Activation("softplus"),
    F.prelu: lambda n: Activation("prelu"),
    torch.sigmoid: lambda n: Activation("sigmoid"), F.sigmoid: lambda n: Activation("sigmoid"),
    torch.tanh: lambda n: Activation("tanh"), F.tanh: lambda n: Activation("tanh"),
    F.softsign: lambda n: Activation("softsign"),
}
_ACTIVATION_METHODS: dict[str, Callable[[fx.Node], Activation]] = {
    "relu": lambda n: _RELU, "relu_": lambda n: _RELU,
    "clamp": _clamp_args, "clip": _clamp_args, "clamp_min": lambda n: _clip_activation("clamp", n.args[1], None),
    "sigmoid": lambda n: Activation("sigmoid"), "tanh": lambda n: Activation("tanh"),
}

_STRUCTURAL_METHODS = {
    "view", "reshape", "reshape_as", "view_as", "permute", "transpose", "flatten", "unflatten", "contiguous",
    "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "chunk", "split", "unbind", "flip", "roll", "narrow",
    "select", "t", "movedim", "clone", "detach", "to", "type_as", "float", "double", "half", "bfloat16", "tile",
    "index_select", "__getitem__",
}
_STRUCTURAL_FUNCTIONS = {
    operator.getitem, torch.reshape, torch.flatten, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    torch.cat, torch.concat, torch.stack, torch.chunk, torch.split, torch.unbind, torch.roll, torch.flip,
    torch.narrow, torch.movedim, torch.clone, torch.tile, torch.index_select, F.pixel_shuffle, F.pixel_unshuffle,
    F.unfold,
}
_LINEAR_METHODS = {"add", "sub", "neg", "mean", "sum", "add_", "sub_", "cumsum"}
_LINEAR_FUNCTIONS = {
    operator.add, operator.sub, operator.iadd, operator.isub, operator.neg, torch.add, torch.sub, torch.neg,
    torch.mean, torch.sum, torch.cumsum, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.interpolate, F.upsample, F.fold,
}


@dataclass(frozen=True)
class Algebra:
    """How an op combines its operands, by position (for a method: the tensor is position 0):
    ``factors`` are multiplied together, each a sum of the operands it names, ``divisors``
    divide, ``addends`` are added. The op is linear in its dynamic operands when at most one
    factor holds a dynamic operand and no divisor is dynamic: ``β + α·x`` (``addcmul``) is linear
    in ``x`` for constant α and β, a product when α streams too; ``lerp(a, b, w) = a + w·(b − a)``
    is a product when ``w`` and ``a`` or ``b`` stream."""

    factors: tuple[tuple[int, ...], ...]
    divisors: tuple[int, ...] = ()
    addends: tuple[int, ...] = ()


_ELEMENTWISE_PRODUCT, _QUOTIENT = Algebra(((0,), (1,))), Algebra(((0,),), (1,))
#: ops whose linearity depends on which operands stream (functions, and method names)
ALGEBRA: dict = {
    **{f: _ELEMENTWISE_PRODUCT for f in (operator.mul, operator.imul, torch.mul, "mul", "mul_", operator.matmul,
                                          torch.matmul, torch.bmm, "matmul", "bmm")},
    **{f: _QUOTIENT for f in (operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_",
                               "true_divide")},
    **{f: Algebra(((1,), (2,)), addends=(0,)) for f in (torch.addcmul, "addcmul", "addcmul_")},
    **{f: Algebra(((1,),), (2,), addends=(0,)) for f in (torch.addcdiv, "addcdiv", "addcdiv_")},
    **{f: Algebra(((0, 1), (2,)), addends=(0,)) for f in (torch.lerp, "lerp", "lerp_")},
}
#: matrix products: with a constant matrix, a weight layer
MATRIX_PRODUCTS = {operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm"}
#: linear ops that scale and add in one (a multiply and an add per output element)
SCALED_ADDITIONS = {torch.addcmul, "addcmul", "addcmul_", torch.addcdiv, "addcdiv", "addcdiv_", torch.lerp, "lerp",
                    "lerp_"}
_WEIGHT_FUNCTIONS = {F.linear, F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d,
                     F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d}
_NORM_FUNCTIONS = {F.layer_norm, F.group_norm, F.normalize, F.instance_norm, F.local_response_norm,
                   getattr(F, "rms_norm", F.layer_norm)}
_SOFTMAX_FUNCTIONS = {F.softmax, torch.softmax, F.log_softmax, torch.log_softmax}
_SOFTMAX_METHODS = {"softmax", "log_softmax"}
_MAXPOOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                      F.adaptive_max_pool3d}
#: elementwise functions of one tensor (and torch's functions of a tensor and a number, such as
#: pow): each has the compensated form ``f(running mean)``. Named once: the torch function, the
#: ``torch.special`` one, the method and the in-place method of each name are looked up from here
ELEMENTWISE = (
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "square", "reciprocal", "abs",
    "absolute", "sin", "cos", "tan", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh", "arcsin",
    "arccos", "arctan", "erf", "erfc", "erfinv", "floor", "ceil", "round", "trunc", "fix", "frac", "sign", "sgn",
    "signbit", "logit", "lgamma", "digamma", "sinc", "i0", "nan_to_num", "pow", "float_power", "deg2rad",
    "rad2deg", "ndtr", "ndtri", "log_ndtr", "expit", "erfcx", "entr", "xlogy", "xlog1py", "exprel",
)
_ELEMENTWISE_FUNCTIONS = {getattr(module, name) for name in ELEMENTWISE for module in (torch, torch.special)
                          if callable(getattr(module, name, None))} | {operator.pow, operator.abs}
_ELEMENTWISE_METHODS = {m for name in ELEMENTWISE for m in (name, name + "_") if hasattr(torch.Tensor, m)}
_NONLINEAR_FUNCTIONS = _ELEMENTWISE_FUNCTIONS | {
    torch.amax, torch.amin, torch.max, torch.min, torch.std, torch.var, torch.norm, torch.linalg.vector_norm,
    torch.where, torch.maximum, torch.minimum, torch.logsumexp,
}
_NONLINEAR_METHODS = _ELEMENTWISE_METHODS | {"amax", "amin", "max", "min", "std", "var", "norm", "logsumexp"}
#: ops that read only a tensor's shape, dtype or device: their results are static whatever the input
SHAPE_METHODS = {"size", "dim", "numel", "new_zeros", "new_ones", "new_full", "new_empty"}
SHAPE_FUNCTIONS = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like}
SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device"}

_MODULE_KINDS: list[tuple[tuple[type, ...], str]] = [
    ((nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout), IDENTITY),
    ((nn.Flatten, nn.Unflatten, nn.PixelShuffle, nn.PixelUnshuffle, nn.ZeroPad2d, nn.ConstantPad1d,
      nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ChannelShuffle), STRUCTURAL),
    ((nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
     WEIGHT),
    ((nn.modules.batchnorm._BatchNorm,), BATCHNORM),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
      nn.Upsample), LINEAR),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
     MAXPOOL),
    ((nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.instancenorm._InstanceNorm,
      getattr(nn, "RMSNorm", nn.LayerNorm)), NORM),
    ((nn.Softmax, nn.LogSoftmax), SOFTMAX),
    (tuple(_ACTIVATION_MODULES), ACTIVATION),
]
_REGISTERED_MODULES: dict[type, str] = {}
_REGISTERED_FUNCTIONS: dict[Callable, str] = {}


#: linear ops by what they do (functions and method names), for passes that treat them apart
ADDITIONS = {operator.add, operator.iadd, torch.add, "add", "add_"}
SUBTRACTIONS = {operator.sub, operator.isub, torch.sub, "sub", "sub_"}
SCALINGS = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div, "mul", "div",
            "mul_", "div_"}
NEGATIONS = {operator.neg, torch.neg, "neg"}
#: reductions and average pools (functions and method names); their modules are POOL_MODULES
AVERAGES = {torch.mean, torch.sum, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, "mean", "sum"}
POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveAvgPool3d)


def calls(node: fx.Node, targets: set) -> bool:
    """Whether ``node`` calls one of ``targets`` (functions, or method names)."""
    return node.op in ("call_function", "call_method") and node.target in targets


def register_module_kind(cls: type, kind: str) -> None:
    """Declare the role of a module type whose instances are traced as leaves (e.g. snnconvert's
    own modules, or a library's module that does not trace)."""
    _REGISTERED_MODULES[cls] = kind


def register_function_kind(fn: Callable, kind: str) -> None:
    """Declare the role of a function the tracer keeps opaque (``torch.fx.wrap``-ed helpers)."""
    _REGISTERED_FUNCTIONS[fn] = kind


def module_kind(module: nn.Module) -> str | None:
    """The role of a leaf module by type (registered types first, then torch.nn's), or None."""
    for cls in type(module).__mro__:
        if cls in _REGISTERED_MODULES:
            return _REGISTERED_MODULES[cls]
    for types, kind in _MODULE_KINDS:
        if isinstance(module, types):
            return kind
    return None


def is_known_leaf(module: nn.Module) -> bool:
    """Leaves for the tracer: modules with a registered kind, subclasses of Linear and Conv
    (whatever their forward does, linear maps with constant weights), and BatchNorms that keep
    torch's forward."""
    cls = type(module)
    return (any(c in _REGISTERED_MODULES for c in cls.__mro__)
            or isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))
            or isinstance(module, nn.modules.batchnorm._BatchNorm)
            and cls.forward is nn.modules.batchnorm._BatchNorm.forward)


def activation_of(node: fx.Node, gm: fx.GraphModule) -> Activation | None:
    """The activation a node computes, if it is one."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        for cls, make in _ACTIVATION_MODULES.items():
            if isinstance(module, cls):
                return make(module)
        return None
    if node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS:
        return _ACTIVATION_FUNCTIONS[node.target](node)
    if node.op == "call_method" and node.target in _ACTIVATION_METHODS:
        return _ACTIVATION_METHODS[node.target](node)
    return None


def kind(node: fx.Node, gm: fx.GraphModule, dynamic: Callable[[fx.Node], bool]) -> str:
    """The role of ``node`` (one of the kinds above); ``dynamic(n)`` says whether node ``n``
    depends on the input image."""
    if node.op in ("placeholder", "get_attr", "output"):
        return node.op
    target = node.target
    dynamic_args = [n for n in data_inputs(node) if dynamic(n)]
    if not dynamic_args:
        return STATIC
    if node.op == "call_module":
        found = module_kind(gm.get_submodule(node.target))
        return found if found is not None else UNKNOWN
    if node.op == "call_function" and target in _REGISTERED_FUNCTIONS:
        return _REGISTERED_FUNCTIONS[target]
    if node.op in ("call_function", "call_method") and target in ALGEBRA:
        return _by_algebra(node, ALGEBRA[target], dynamic)
    if node.op == "call_function":
        if target is torch.einsum:
            return PRODUCT if len(dynamic_args) > 1 else LINEAR
        for table, found in ((_STRUCTURAL_FUNCTIONS, STRUCTURAL), (_LINEAR_FUNCTIONS, LINEAR),
                             (_WEIGHT_FUNCTIONS, WEIGHT), (_NORM_FUNCTIONS, NORM), (_SOFTMAX_FUNCTIONS, SOFTMAX),
                             (_MAXPOOL_FUNCTIONS, MAXPOOL), (_NONLINEAR_FUNCTIONS, NONLINEAR)):
            if target in table:
                return found
        if target in _ACTIVATION_FUNCTIONS:
            return ACTIVATION
        if target is F.pad:
            return STRUCTURAL if _argument(node, 3, "value", None) in (0, None) else LINEAR
        if target is F.batch_norm:
            return BATCHNORM if not _argument(node, 5, "training", False) else UNKNOWN
        if target is F.scaled_dot_product_attention:
            return ATTENTION
        if target is F.dropout:
            return IDENTITY if not _argument(node, 2, "training", True) else UNKNOWN
    elif node.op == "call_method":
        for table, found in ((_STRUCTURAL_METHODS, STRUCTURAL), (_LINEAR_METHODS, LINEAR),
                             (_SOFTMAX_METHODS, SOFTMAX), (_NONLINEAR_METHODS, NONLINEAR)):
            if target in table:
                return found
        if target in _ACTIVATION_METHODS:
            return ACTIVATION
    return UNKNOWN


_CASTS = {"float", "double", "half", "bfloat16", "to", "type", "type_as"}


def is_precision_cast(node: fx.Node) -> bool:
    """A cast from one floating-point dtype to another (``x.float()``, ``x.to(torch.float16)``,
    ``x.to(dtype)``): it changes only the precision (needs ``annotate``'s dtypes)."""
    if node.op != "call_method" or node.target not in _CASTS or not node.args:
        return False
    source = node.args[0]
    dtypes = (source.meta.get("dtype"), node.meta.get("dtype")) if isinstance(source, fx.Node) else (None, None)
    if not all(d is not None and d.is_floating_point for d in dtypes):
        return False
    others = [a for a in (*node.args[1:], *node.kwargs.values()) if not isinstance(a, (torch.dtype, bool))]
    return node.target == "type_as" or not others or all(
        isinstance(a, fx.Node) and isinstance(a.meta.get("value"), torch.dtype) for a in others)


def reads_shape(node: fx.Node) -> bool:
    """Whether ``node`` reads a tensor's shape, dtype or device (a static value)."""
    return (node.op == "call_method" and node.target in SHAPE_METHODS
            or node.op == "call_function" and node.target in SHAPE_FUNCTIONS
            or node.op == "call_function" and node.target is getattr and node.args[1] in SHAPE_ATTRIBUTES)


def _argument(node: fx.Node, position: int, name: str, default):
    """A call's argument given by position or keyword."""
    return node.args[position] if len(node.args) > position else node.kwargs.get(name, default)


#: keyword names of the operands :class:`Algebra` numbers, by position
_OPERAND_NAMES = ("input", "other", "tensor2")
_KEYWORDS = {torch.addcmul: ("input", "tensor1", "tensor2"), "addcmul": ("self", "tensor1", "tensor2"),
             torch.addcdiv: ("input", "tensor1", "tensor2"), "addcdiv": ("self", "tensor1", "tensor2"),
             torch.lerp: ("input", "end", "weight"), "lerp": ("self", "end", "weight")}


def _operand(node: fx.Node, position: int):
    names = _KEYWORDS.get(node.target, _OPERAND_NAMES)
    return _argument(node, position, names[position] if position < len(names) else "", None)


def _by_algebra(node: fx.Node, algebra: Algebra, dynamic: Callable[[fx.Node], bool]) -> str:
    """The kind of an op of known :class:`Algebra` from which of its operands stream."""
    def streams(i: int) -> bool:
        operand = _operand(node, i)
        return isinstance(operand, fx.Node) and dynamic(operand)

    if any(streams(i) for i in algebra.divisors):
        return NONLINEAR
    streaming_factors = sum(any(streams(i) for i in factor) for factor in algebra.factors)
    if streaming_factors > 1:
        return PRODUCT
    if node.target in MATRIX_PRODUCTS and streaming_factors:
        return WEIGHT  # times a constant matrix
    return LINEAR


def describe(node: fx.Node, gm: fx.GraphModule) -> str:
    """A short name of the op a node runs: the module type, function or method name."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return f".{node.target}()"
    return getattr(node.target, "__name__", str(node.target))


#: methods whose tensor argument after the first contributes only its shape or dtype
_SHAPE_ARGUMENT_METHODS = {"reshape_as", "view_as", "expand_as", "type_as"}


def data_inputs(node: fx.Node) -> list[fx.Node]:
    """The inputs whose values flow into ``node``'s value (``a.reshape_as(b)`` reads only b's shape)."""
    if reads_shape(node):
        return []
    if node.op == "call_method" and node.target in _SHAPE_ARGUMENT_METHODS:
        return [node.args[0]] if isinstance(node.args[0], fx.Node) else []
    return node.all_input_nodes


def dynamic_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose values depend on the input's values (not only on its shape): the input, and
    every node computed from the value of a dynamic node."""
    dynamic: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(n in dynamic for n in data_inputs(node)):
            dynamic.add(node)
    return dynamic


def _is_last(dim, node: fx.Node) -> bool:
    rank = len(node.meta.get("shape", ()))
    return isinstance(dim, int) and rank > 0 and dim in (-1, rank - 1)


def recomputed_by(fn, node: fx.Node) -> str | None:
    """What one changed input element makes op ``fn`` (a module, function or method name, called
    at ``node``) recompute: ``elements`` (the outputs it broadcasts to: an elementwise op),
    ``rows`` (its row: a softmax or a norm over the last dimension only), or None (more: a
    reduction, a pool, a norm or softmax over other dimensions)."""
    def argument(position: int, name: str, default):
        return node.kwargs.get(name, node.args[position] if len(node.args) > position else default)

    if isinstance(fn, (nn.Softmax, nn.LogSoftmax)):
        return "rows" if _is_last(fn.dim, node) else None
    if fn in _SOFTMAX_FUNCTIONS or fn in _SOFTMAX_METHODS:
        return "rows" if _is_last(argument(1, "dim", None), node) else None
    if isinstance(fn, nn.LayerNorm):
        return "rows" if len(fn.normalized_shape) == 1 else None
    if fn is F.normalize:
        return "rows" if _is_last(argument(2, "dim", 1), node) else None
    if isinstance(fn, nn.Module):
        return "elements" if module_kind(fn) in (ACTIVATION, BATCHNORM) else None
    elementwise = (_ACTIVATION_FUNCTIONS, _ELEMENTWISE_FUNCTIONS, _ACTIVATION_METHODS, _ELEMENTWISE_METHODS, SCALINGS)
    return "elements" if any(fn in table for table in elementwise) else None
