"""prepare(model, example): the ANN as a traced graph in its QCFS form, ready to train, calibrate
and convert (the ``prepare`` of torch.ao's prepare → calibrate → convert).

Passes, in order (each listed in the :class:`PrepareReport`):

1. exact rewrites: module rules (fused norm + activation split, ``nn.MultiheadAttention`` as
   explicit layers, timm attention in its fused form), tracing, dropout / identities removed, fused
   attention decomposed into products and a softmax: checked to compute the ANN's function;
2. LayerNorm → BatchNorm over channels (``layernorm="batchnorm"``, the MST recipe);
3. activations → QCFS (ReLU family: up to quantization; others approximated; kept ones stay);
4. the MST recipe's QCFS sites (``sites="mst"``), MLP BatchNorms (``mlp_batchnorm``), the
   event-driven route's sites (:data:`ROUTE_SITES`: attention probabilities, real-valued streams
   into weight layers), max-pool → average pool (``max_pool="avg"``), random spike masks (``masks``).

Every op left on dynamic values must have a role conversion knows (:mod:`snnconvert.graph.ops`);
the rest is refused all at once, naming each op and, for a module that did not trace, the line
that stopped the tracer.
"""
from __future__ import annotations

import contextlib
import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from snnconvert import checks
from snnconvert.prepare.attention import decompose_attention
from snnconvert.prepare.config import PrepareConfig
from snnconvert.prepare.norm import layernorms_to_batchnorms
from snnconvert.prepare.qcfs import QCFS
from snnconvert.prepare.rsm import add_spike_masks
from snnconvert.prepare.sites import NO_PROBABILITIES, NO_STREAMS, activations_to_qcfs, add_mlp_batchnorms, \
    insert_mst_sites, insert_probability_sites, insert_stream_sites, max_pools_to_average
from snnconvert.errors import ArgumentError, SnnConvertError, UnsupportedLayersError, first_line
from snnconvert.graph import ops
from snnconvert.graph.edit import bypass, finish, unshare_stateless
from snnconvert.graph.rules import apply_module_rules
from snnconvert.graph.shapes import annotate
from snnconvert.graph.trace import TraceFailure, trace


@dataclass
class Change:
    """One kind of rewrite ``prepare`` made.

    Attributes:
        what: the rewrite (``GELU → QCFS``).
        sites: the module paths it touched.
        exact: True when the ANN's function is unchanged (up to float rounding).
        detail: what it does to the function.
        originals: ``{path: module}`` that computes the ANN's op at each site again (see
            :meth:`PrepareReport.only`).
    """

    what: str
    sites: list[str]
    exact: bool
    detail: str = ""
    originals: dict[str, nn.Module] = field(default_factory=dict, repr=False, compare=False)

    def describe(self) -> str:
        return f"{self.what} ({len(self.sites)} site{'s' * (len(self.sites) != 1)}): {self.detail}"


@dataclass
class PrepareReport:
    """Every change ``prepare`` made and every op that will run in floating point after conversion.

    Attributes:
        changes: exact rewrites first, then the ones that change the ANN's function.
        float_ops: ``(node, op)`` of the nonlinear ops kept in floating point (softmax, kept
            activations, products of real values …): expectation-compensated after conversion.
        leaves: modules traced as leaves because their forward did not trace.
        notes: options that did not apply to the model, each with the reason.
    """

    changes: list[Change] = field(default_factory=list)
    float_ops: list[tuple[str, str]] = field(default_factory=list)
    leaves: dict[str, TraceFailure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def function_changes(self) -> list[Change]:
        return [c for c in self.changes if not c.exact]

    def new_batchnorms(self, identity: bool = False) -> list[str]:
        """Paths of the BatchNorms prepare added: from LayerNorm, or (``identity``) MST's MLP ones."""
        what = "BatchNorm after MLP Linears" if identity else "LayerNorm → BatchNorm"
        return [p for c in self.changes if c.what == what for p in c.sites]

    @contextlib.contextmanager
    def only(self, model: nn.Module, changes: list[Change]):
        """Within the block, ``model`` (the prepared model) computes its ANN with only ``changes``
        of the function-changing ones applied: every other site runs the ANN's op again."""
        restore = {}
        for change in self.function_changes:
            if change not in changes:
                for path, module in change.originals.items():
                    restore[path] = _swap(model, path, module)
        try:
            yield model
        finally:
            for path, module in restore.items():
                _swap(model, path, module)

    def lines(self) -> list[str]:
        out = [("exact  " if c.exact else "changes ") + c.describe() for c in self.changes]
        out += [f"not applied: {note}" for note in self.notes]
        if self.float_ops:
            counts = Counter(op for _, op in self.float_ops)
            out.append("floating-point ops after conversion: " + ", ".join(f"{op} ×{n}" for op, n in counts.items()))
        return out


def _swap(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    parent, _, attr = path.rpartition(".")
    holder = model.get_submodule(parent) if parent else model
    old = getattr(holder, attr)
    setattr(holder, attr, module)
    return old


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def prepare_with_report(model: nn.Module, example: torch.Tensor, config: PrepareConfig | None = None,
                        inplace: bool = False) -> tuple[fx.GraphModule, PrepareReport]:
    """:func:`prepare`, also returning the :class:`PrepareReport` of what it did."""
    call = "prepare(model, example, config)"
    checks.module(model, "prepare", call=call)
    checks.batch(example, "prepare", "example", call=call)
    checks.instance(config, PrepareConfig, "prepare", "config")
    cfg = config or PrepareConfig()
    training = model.training
    if not inplace:
        model = copy.deepcopy(model)
    device = _device_of(model)
    example = example.to(device)
    report = PrepareReport()
    rules = apply_module_rules(model)
    if rules:
        report.changes.append(Change("module rewritten before tracing", list(rules), True,
                                     "; ".join(sorted(set(rules.values())))))
    with torch.no_grad():
        try:
            expected = model.eval()(example)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise ArgumentError(f"prepare: the model does not run on the example batch of shape {tuple(example.shape)} "
                                f"({first_line(e, 160)}); pass a batch of the input size the model takes") from e
    gm, report.leaves = trace(model, example)
    if gm.meta["dropped_contexts"]:
        report.changes.append(Change("precision contexts dropped", gm.meta["dropped_contexts"], True,
                                     "torch.autocast blocks traced as plain code: their ops run in the model's "
                                     "dtype (the same function up to rounding)"))
    unshare_stateless(gm)
    annotate(gm, example)
    _remove_identities(gm, report)
    _remove_precision_casts(gm, report)
    attention = decompose_attention(gm)
    if attention:
        report.changes.append(Change("fused attention → products and a softmax", attention, True,
                                     "Q·Kᵀ·scale (+ mask), softmax, ·V as explicit ops"))
    finish(gm)
    _check_same(gm, example, expected)
    _function_changes(gm, cfg, report)
    _refuse_unknown(gm, report)
    if cfg.masks is not None:
        add_spike_masks(gm, cfg.masks)
    finish(gm)
    annotate(gm, example)
    report.float_ops = _float_ops(gm)
    gm.meta["input_shape"] = tuple(example.shape[1:])
    return gm.to(device).train(training), report


def prepare(model: nn.Module, example: torch.Tensor, config: PrepareConfig | None = None,
            inplace: bool = False) -> fx.GraphModule:
    """Rewrite an ANN into its QCFS form, ready for training, calibration and conversion.

    Args:
        model: any single-input model that traces (timm / torchvision / your own), with its weights.
        example: an input batch ``[N, C, H, W]`` of the size the model will see; branches on shapes
            are specialized to it.
        config: where QCFS goes, levels, initial thresholds, what to keep, spike masks (added last).
        inplace: allow ``model``'s modules to be rewritten instead of a deep copy's.

    Returns:
        A ``torch.fx.GraphModule`` holding the model's modules (same names, e.g.
        ``blocks.0.attn.qkv``) and the new ones (``blocks.0.norm1_act`` …).

    Raises:
        UnsupportedLayersError: listing every op that has no spiking equivalent.
    """
    return prepare_with_report(model, example, config, inplace)[0]


def _remove_identities(gm: fx.GraphModule, report: PrepareReport) -> None:
    dynamic = ops.dynamic_nodes(gm.graph)
    removed = [n for n in gm.graph.nodes if ops.kind(n, gm, dynamic.__contains__) == ops.IDENTITY]
    names = Counter(ops.describe(n, gm) for n in removed)
    for node in removed:
        bypass(gm, node)
    if removed:
        report.changes.append(Change("identities removed", [n.name for n in removed], True,
                                     ", ".join(f"{op} ×{k}" for op, k in names.items())
                                     + " (dropout and drop-path are the identity in evaluation)"))


@torch.no_grad()
def _remove_precision_casts(gm: fx.GraphModule, report: PrepareReport) -> None:
    """Drop casts between floating-point dtypes (EfficientViT's attention sums in float32): the
    SNN runs in one dtype, the model's."""
    casts = [n for n in gm.graph.nodes if ops.is_precision_cast(n)]
    for node in casts:
        bypass(gm, node)
    if casts:
        report.changes.append(Change("precision casts dropped", [n.name for n in casts], True,
                                     ", ".join(f"{op} ×{k}" for op, k in Counter(ops.describe(n, gm) for n in casts)
                                               .items()) + " (the graph runs in the model's dtype)"))


def _check_same(gm: fx.GraphModule, example: torch.Tensor, expected: torch.Tensor) -> None:
    got = gm.eval()(example)
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()) + 1e-6):
        raise SnnConvertError(f"internal error: the exact rewrites changed the model's output (max difference "
                              f"{float((got - expected).abs().max()):.3g}); please report this model")


def _function_changes(gm: fx.GraphModule, cfg: PrepareConfig, report: PrepareReport) -> None:
    if cfg.layernorm == "batchnorm":
        layernorms = layernorms_to_batchnorms(gm, ops.dynamic_nodes(gm.graph))
        if layernorms:
            report.changes.append(Change(
                "LayerNorm → BatchNorm", list(layernorms), False,
                "per-token statistics become fixed per-channel statistics (γ/β kept; calibrate the statistics, "
                "then fine-tune)", layernorms))
    activations = activations_to_qcfs(gm, cfg)
    by_name: dict[str, dict[str, tuple]] = {}
    for path, (act, original) in activations.items():
        by_name.setdefault(act.name, {})[path] = (act, original)
    for name, sites in by_name.items():
        act = next(iter(sites.values()))[0]
        detail = (f"exact up to quantization to {cfg.levels} levels" + (f", cap {act.cap:g} kept" if act.cap else "")
                  if act.relu_family else f"approximated: QCFS clips {name} to [0, λ] and quantizes it (fine-tune)")
        report.changes.append(Change(f"{name} → QCFS", list(sites), False, detail,
                                     {p: original for p, (_, original) in sites.items()}))
    if cfg.sites == "mst":
        inserted = insert_mst_sites(gm, cfg)
        if inserted:
            roles = Counter(inserted.values())
            report.changes.append(Change(
                "QCFS inserted (MST sites)", list(inserted), False,
                ", ".join(f"{role} ×{n}" for role, n in roles.items()) + ": clips to [0, λ] and quantizes values the "
                "ANN passes on unbounded", {p: nn.Identity() for p in inserted}))
        if cfg.mlp_batchnorm:
            added = add_mlp_batchnorms(gm, inserted)
            report.changes.append(Change("BatchNorm after MLP Linears", added, True,
                                         "MST's variant; the identity until trained, then folded at conversion"))
    for kind in ROUTE_SITES:
        kind.add(gm, cfg, report)
    if cfg.max_pool == "avg":
        pools = max_pools_to_average(gm)
        if pools:
            report.changes.append(Change("max-pool → average pool", list(pools), False,
                                         "average instead of maximum over each window", pools))


@dataclass(frozen=True)
class RouteSites:
    """A kind of QCFS site the event-driven route adds so that a weight layer or product is driven
    by spikes instead of MACs on real values (:data:`ROUTE_SITES`).

    Attributes:
        option: the :class:`PrepareConfig` field that asks for it (True: required; None: where the
            model has such values, the event-driven route's default; False: not asked for).
        what: the sites, for the records (``spiking attention probabilities``).
        insert: the pass that inserts them (``(graph, config) → site paths``).
        missing: why a model gets none (``has no softmax …``).
        detail: what they do to the function.
    """

    option: str
    what: str
    insert: Callable[[fx.GraphModule, PrepareConfig], list[str]]
    missing: str
    detail: str

    def asked(self, config: PrepareConfig | None) -> bool | None:
        return False if config is None else getattr(config, self.option)

    def add(self, gm: fx.GraphModule, config: PrepareConfig, report: PrepareReport) -> list[str]:
        """Insert the sites if ``config`` asks for them and record the change in ``report``, or why
        there are none (a note; refused where they are required)."""
        asked = self.asked(config)
        sites = [] if asked is False else self.insert(gm, config)
        if sites:
            report.changes.append(Change(f"QCFS on {self.what}", sites, False, self.detail,
                                         {p: nn.Identity() for p in sites}))
        elif asked:
            raise SnnConvertError(f"the model {self.missing}; drop --{self.option.replace('_', '-')} "
                                  f"({self.option}=True)")
        elif asked is None:
            report.notes.append(f"QCFS on {self.what}: the model {self.missing}")
        return sites


#: the event-driven route's sites, in the order prepare inserts them
ROUTE_SITES = (
    RouteSites("spike_probabilities", "attention probabilities", insert_probability_sites, NO_PROBABILITIES,
               "softmax outputs quantized to L levels of [0, λ ≤ 1]: attention·V becomes spike-driven"),
    RouteSites("spike_streams", "real-valued streams into weight layers", insert_stream_sites, NO_STREAMS,
               "signed: quantized to L levels each side of [−λ, λ]: the layers they feed become spike-driven"),
)


def route_choices(event_driven: bool, asked: dict[str, bool | None] | None = None) -> dict[str, bool | None]:
    """Each kind of the route's sites as :class:`PrepareConfig` takes it: as ``asked`` (by its
    option name) where that says True or False, else looked for where the model has them (None)
    on the event-driven route and not asked for (False) off it."""
    asked = asked or {}
    return {kind.option: asked[kind.option] if asked.get(kind.option) is not None else None if event_driven else False
            for kind in ROUTE_SITES}


def _refuse_unknown(gm: fx.GraphModule, report: PrepareReport) -> None:
    dynamic = ops.dynamic_nodes(gm.graph)
    problems = []
    for node in gm.graph.nodes:
        if ops.kind(node, gm, dynamic.__contains__) != ops.UNKNOWN:
            continue
        name = node.target if node.op == "call_module" else node.name
        failure = report.leaves.get(node.target) if node.op == "call_module" else None
        why = failure.describe() if failure else "no spiking equivalent is known for this op"
        problems.append((name, ops.describe(node, gm), why))
    if problems:
        raise UnsupportedLayersError(problems)


def _float_ops(gm: fx.GraphModule) -> list[tuple[str, str]]:
    dynamic = ops.dynamic_nodes(gm.graph)
    return [(n.target if n.op == "call_module" else n.name, ops.describe(n, gm)) for n in gm.graph.nodes
            if ops.kind(n, gm, dynamic.__contains__) in ops.COMPENSATED]


@torch.no_grad()
def change_effects(report: PrepareReport, ann: nn.Module, prepared: nn.Module, images: torch.Tensor,
                   labels: torch.Tensor) -> list[tuple[str, float]]:
    """Top-1 accuracy (%) on ``images`` of the ANN, then of the prepared model with the function
    changes applied one more at a time, in the order ``prepare`` made them: what each costs
    (measure after calibrating, so every QCFS and new BatchNorm has its values)."""
    def accuracy(model: nn.Module) -> float:
        return 100.0 * float((model.eval()(images).argmax(-1) == labels).float().mean())

    training = (ann.training, prepared.training)
    results = [("original ANN", accuracy(ann))]
    changes = report.function_changes
    for k, change in enumerate(changes):
        with report.only(prepared, changes[: k + 1]):
            results.append((f"+ {change.what}", accuracy(prepared)))
    ann.train(training[0])
    prepared.train(training[1])
    return results


def qcfs_modules(model: nn.Module) -> dict[str, QCFS]:
    """Every QCFS activation of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QCFS)}


def is_prepared(model: nn.Module) -> bool:
    """True when ``model`` holds QCFS activations (it went through :func:`prepare`)."""
    return any(isinstance(m, QCFS) for m in model.modules())


__all__ = ["prepare", "prepare_with_report", "PrepareReport", "Change", "change_effects", "qcfs_modules",
           "is_prepared"]
