"""Calibration of a converted SNN against its ANN, layer by layer (Li et al. 2021, "A free lunch
from ANN: towards efficient, accurate spiking neural networks calibration").

After T steps a neuron's output stands for ``ŷ`` (its running mean under rate coding, its total
under count coding; :func:`snnconvert.runtime.coding.estimate`), where the ANN computes ``y``. The
mean conversion error per channel ``μ = E[y − ŷ]`` over sample images is removed by

* **bias correction**: ``b ← b + μ`` added to the neuron's input (every step under rate coding,
  once under count coding);
* **potential correction**: ``v(0) ← v(0) + T·μ`` (rate coding); under count coding ``v(0) + μ``,
  the same as a bias counted once.

Sites are corrected in graph order, each on the spikes of the sites before it, already corrected:
the SNN runs up to the site for T steps, once per site. The reference ``y`` is the ANN
(``ann``: every site as the ReLU-family activation it replaced, unquantized) or the QCFS ANN
(``qcfs``).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from snnconvert import checks
from snnconvert.checks import check_fields
from snnconvert.calibrate.observers import channel_rows
from snnconvert.prepare.rewrite import qcfs_modules
from snnconvert.prepare.qcfs import QCFS
from snnconvert.errors import SnnConvertError
from snnconvert.runtime.coding import estimate
from snnconvert.runtime.neurons import IFNeuron
from snnconvert.runtime.state import reset_states

CORRECTIONS = ("bias", "potential")
REFERENCES = ("ann", "qcfs")


@dataclass(frozen=True)
class CorrectionConfig:
    """A correction of a converted model: ``bias`` or ``potential`` (:data:`CORRECTIONS`),
    ``iterations`` passes per site (see :func:`correct`)."""

    method: str = "bias"
    iterations: int = 1

    def __post_init__(self) -> None:
        check_fields(self)
        if self.method not in CORRECTIONS:
            raise SnnConvertError(f"unknown correction {self.method!r}; choose one of {', '.join(CORRECTIONS)}")
        if self.iterations < 1:
            raise SnnConvertError(f"correction iterations must be >= 1, got {self.iterations}")


@dataclass(frozen=True)
class SiteError:
    """Conversion error ``ŷ − y`` of one site after t steps, over the sample images.

    Attributes:
        mean: its mean (what a correction removes), in the site's units.
        rms: its root mean square relative to that of ``y``.
    """

    mean: float
    rms: float


@dataclass
class SiteCalibration:
    """What calibration did at one site: λ (min, mean, max over channels; one value layer-wise),
    the cap it keeps, the correction applied (min, mean, max of μ) and the errors before and
    after it at the steps asked for."""

    name: str
    role: str
    threshold: tuple[float, ...]
    cap: float | None = None
    correction: tuple[float, ...] | None = None
    errors_before: dict[int, SiteError] = field(default_factory=dict)
    errors_after: dict[int, SiteError] = field(default_factory=dict)


def _spread(value: torch.Tensor) -> tuple[float, ...]:
    value = value.detach().float()
    return (float(value),) if value.numel() == 1 else (float(value.min()), float(value.mean()), float(value.max()))


def _coding(snn: nn.Module) -> str:
    neurons = [m for m in snn.modules() if isinstance(m, IFNeuron)]
    if not neurons:
        raise SnnConvertError("the model has no IF neurons to calibrate: convert a prepared model first")
    return "rate" if neurons[0].levels is None else "count"


def _batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    yield from images.split(batch_size)


@torch.no_grad()
def _reference(prepared: nn.Module, images: torch.Tensor, reference: str) -> dict[str, torch.Tensor]:
    """Every site's output in the reference ANN on ``images``."""
    if reference not in REFERENCES:
        raise SnnConvertError(f"unknown reference {reference!r}; choose one of {', '.join(REFERENCES)}")
    outputs: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(site: QCFS, inputs, output):
            outputs[name] = site.relu_form(inputs[0]) if reference == "ann" else output
            return outputs[name]
        return hook

    handles = [q.register_forward_hook(record(n)) for n, q in qcfs_modules(prepared).items()]
    training = prepared.training
    try:
        prepared.eval()
        prepared(images)
    finally:
        for h in handles:
            h.remove()
        prepared.train(training)
    return outputs


@torch.no_grad()
def _snn_totals(snn: nn.Module, images: torch.Tensor, steps: list[int], names: list[str]
                ) -> dict[int, dict[str, torch.Tensor]]:
    """The running totals of the outputs of neurons ``names`` after each step in ``steps``."""
    totals: dict[str, torch.Tensor] = {}
    neurons = {n: snn.get_submodule(n) for n in names}

    def record(name):
        def hook(_module, _inputs, output):
            totals[name] = output.clone() if name not in totals else totals[name] + output
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in neurons.items()]
    found = {}
    try:
        reset_states(snn)
        for t in range(1, max(steps) + 1):
            snn(images)
            if t in steps:
                found[t] = dict(totals)
    finally:
        for h in handles:
            h.remove()
        reset_states(snn)
    return found


@torch.no_grad()
def conversion_errors(snn: fx.GraphModule, prepared: nn.Module, images: torch.Tensor, steps: list[int],
                      reference: str = "ann", batch_size: int = 64) -> dict[str, dict[int, SiteError]]:
    """The error ``ŷ_t − y`` of every site of ``snn`` (converted from ``prepared``) after each step
    in ``steps``, over ``images``."""
    coding, names = _coding(snn), list(_sites(snn, prepared))
    sums = {(n, t): torch.zeros(4, dtype=torch.float64) for n in names for t in steps}
    for batch in _batches(images, batch_size):
        wanted = _reference(prepared, batch, reference)
        for t, totals in _snn_totals(snn, batch, steps, names).items():
            for name in names:
                y = wanted[name].double()
                difference = estimate(totals[name].double(), t, coding) - y
                sums[name, t] += torch.stack([difference.sum(), difference.square().sum(), y.square().sum(),
                                              torch.tensor(float(y.numel()), dtype=torch.float64)])
    return {n: {t: SiteError(float(sums[n, t][0] / sums[n, t][3]),
                             math.sqrt(float(sums[n, t][1])) / max(math.sqrt(float(sums[n, t][2])), 1e-12))
                for t in steps} for n in names}


def _sites(snn: fx.GraphModule, prepared: nn.Module) -> dict[str, fx.Node]:
    """The neuron nodes of ``snn`` that replaced a QCFS of ``prepared``, in graph order."""
    sites = qcfs_modules(prepared)
    return {n.target: n for n in snn.graph.nodes
            if n.op == "call_module" and n.target in sites and isinstance(snn.get_submodule(n.target), IFNeuron)}


def _up_to(snn: fx.GraphModule, node: fx.Node) -> fx.GraphModule:
    """The part of ``snn`` that computes ``node`` (sharing its modules and their state)."""
    graph, env = fx.Graph(), {}
    for n in snn.graph.nodes:
        env[n] = graph.node_copy(n, env.__getitem__)
        if n is node:
            break
    graph.output(env[node])
    part = fx.GraphModule(snn, graph)
    part.graph.eliminate_dead_code()
    part.recompile()
    return part


class _ChannelMean:
    """The running mean per channel (along ``axis``; None: one mean) of the tensors added."""

    def __init__(self, axis: int | None):
        self.axis, self.total, self.count, self.shape = axis, 0.0, 0, ()

    def add(self, value: torch.Tensor) -> None:
        rows, self.shape = channel_rows(value.double(), self.axis)
        self.total, self.count = self.total + rows.sum(1), self.count + rows.shape[1]

    def value(self) -> torch.Tensor:
        return (self.total / self.count).reshape(self.shape).float()


@torch.no_grad()
def correct(snn: fx.GraphModule, prepared: nn.Module, images: torch.Tensor, timesteps: int,
            config: CorrectionConfig = CorrectionConfig(), reference: str = "ann", batch_size: int = 64,
            progress: bool = False) -> dict[str, torch.Tensor]:
    """Remove the mean conversion error after ``timesteps`` steps at every site of ``snn`` (in
    place), layer by layer: by a bias on the neuron's input or by its initial potential.

    Args:
        snn: the output of :func:`snnconvert.convert.convert` on ``prepared``.
        prepared: the QCFS model it was converted from (the reference ANN).
        images: sample images (a batch; run ``batch_size`` at a time).
        timesteps: T, the step the correction is for.
        config: the method, ``bias`` or ``potential`` (:data:`CORRECTIONS`), and the iterations:
            corrections per site, each on the error left by the ones before (a shift of the input
            moves the mean output less than itself where the neuron is silent or saturated, so
            one pass leaves part of the error).
        reference: ``ann`` or ``qcfs`` (:data:`REFERENCES`).

    Returns:
        μ per site (per channel where the site has channels), in the units of the site's input.
    """
    call = "correct(snn, prepared, images, timesteps)"
    checks.module(snn, "correct", "snn", call)
    checks.module(prepared, "correct", "prepared", call)
    checks.batch(images, "correct", "images", getattr(snn, "meta", {}).get("input_shape"), call)
    checks.count(timesteps, "correct", "timesteps")
    checks.count(batch_size, "correct", "batch_size")
    method, iterations = config.method, config.iterations
    coding, qcfs, sites = _coding(snn), qcfs_modules(prepared), _sites(snn, prepared)
    wanted = {n: _ChannelMean(qcfs[n].channel_axis) for n in sites}
    for batch in _batches(images, batch_size):
        for name, value in _reference(prepared, batch, reference).items():
            if name in wanted:
                wanted[name].add(value)
    applied = {}
    for name, node in tqdm(sites.items(), desc=f"{method} correction", unit="layer", disable=not progress):
        part = _up_to(snn, node)
        for _ in range(iterations):
            got = _ChannelMean(qcfs[name].channel_axis)
            for batch in _batches(images, batch_size):
                got.add(estimate(_snn_totals(part, batch, [timesteps], [name])[timesteps][name], timesteps, coding))
            mu = wanted[name].value() - got.value()
            _apply(snn.get_submodule(name), mu, method, timesteps if coding == "rate" else 1)
            applied[name] = mu if name not in applied else applied[name] + mu
    return applied


def _apply(neuron: IFNeuron, mu: torch.Tensor, method: str, steps: int) -> None:
    """Add ``mu`` to the neuron's input: as a bias, or as ``steps·mu`` of initial potential."""
    if method == "bias":
        neuron.bias = mu.clone() if neuron.bias is None else neuron.bias + mu
    else:
        neuron.initial_potential = neuron.initial_potential + steps * mu / neuron.threshold


def site_calibrations(prepared: nn.Module, corrections: dict[str, torch.Tensor] | None = None,
                      errors_before: dict[str, dict[int, SiteError]] | None = None,
                      errors_after: dict[str, dict[int, SiteError]] | None = None) -> list[SiteCalibration]:
    """Per site of ``prepared``: λ, cap, the correction and the errors before and after it."""
    corrections, errors_before, errors_after = corrections or {}, errors_before or {}, errors_after or {}
    sites = qcfs_modules(prepared)
    in_order = [n.target for n in prepared.graph.nodes if n.op == "call_module" and n.target in sites] \
        if isinstance(prepared, fx.GraphModule) else list(sites)
    return [SiteCalibration(n, sites[n].role, _spread(sites[n].effective_threshold()), sites[n].cap,
                            _spread(corrections[n]) if n in corrections else None,
                            errors_before.get(n, {}), errors_after.get(n, {}))
            for n in in_order]
