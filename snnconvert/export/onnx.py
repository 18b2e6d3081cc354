"""ONNX export: an ANN as it is, a converted SNN as one time step whose state is its inputs and outputs.

The SNN's step is a stateless graph ``(x, t, state…) → (y, t + 1, state′…)``:

* ``x`` ``[N, C, H, W]``: the (normalized) image, given at every step (a count-coded model uses it
  at the first step only); ``t``: int64, the steps done (0 at the start).
* the state, one input ``<module>.<key>`` and one output ``<module>.<key>.next`` each, batch first:
  every membrane potential ``v`` (and the net spikes sent ``net`` of neurons that track them), the
  running totals ``sum0``, ``sum1`` … and last emitted total ``previous`` of every
  expectation-compensated op, and ``<source>.spikes``, the spikes each event source has sent so
  far, per element (what the spike and energy counts read).
* ``y``: the step's output; the prediction after step t is the argmax of ``Σ_{τ≤t} y_τ``.
* ``<layer>.left``, for neurons that report it (direct-trained ones): the potential left by
  firing, which a hard reset discards (the residual-potential statistic).

A step runs exactly the PyTorch module's own step code, traced with the state loaded into it
(:meth:`~snnconvert.runtime.state.StatefulModule.load_state`), so nothing is written twice; the
export then runs a few steps in onnxruntime against it on another batch size before it is kept.

``metadata_props`` (keys ``snnconvert.*``, JSON values) say what the model is: ``format``
(``snn-step/1`` or ``ann/1``), ``version``, ``what``, ``model`` (the recipe), ``input`` (shape,
layout, normalization), ``classes``, ``timesteps`` (the default T), ``weights``; for a step also
``neuron``, ``attention``, ``thresholds`` (layer / channel), ``state`` (every entry and its value
at t = 0: a fill, or values that broadcast over its shape, repeated over the batch:
:func:`initial_state`), ``layers`` (the neurons: θ, single spikes; the other event sources),
``energy`` (the op table, :class:`~snnconvert.runtime.energy.OpTable`) and ``float_operations``.
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import fx, nn

from snnconvert import __version__, checks
from snnconvert.convert.convert import float_operations
from snnconvert.errors import SnnConvertError
from snnconvert.runtime.energy import OpAccounting
from snnconvert.runtime.state import StatefulModule, reset_states
from snnconvert.runtime.statistics import Recorder

OPSET = 17

#: the ``format`` metadata of an SNN step written by :func:`export_snn`
SNN_STEP = "snn-step/1"


@dataclass(frozen=True)
class StateEntry:
    """One state tensor of an exported step.

    Attributes:
        name: its input name (the output is ``name + ".next"``).
        module: the module that holds it (for ``spikes``: the event source).
        key: its name in the module's :meth:`~snnconvert.runtime.state.StatefulModule.state`, or
            ``spikes`` (spikes sent per element).
        shape: after the leading dimension, which holds ``rows`` rows per sample (Swin's windows
            are ``[N·windows, …]``), sample after sample.
        init: the value at t = 0 of one sample's ``[rows, *shape]``: ``{"fill": c}`` or
            ``{"shape": s, "values": [...]}`` (row-major, broadcast over ``[rows, *shape]``).
        rows: rows of the leading dimension per sample.
    """

    name: str
    module: str
    key: str
    shape: tuple[int, ...]
    init: dict[str, Any]
    rows: int = 1

    @property
    def batch_axis(self) -> str:
        """The name of its leading dimension in the graph."""
        return "batch" if self.rows == 1 else f"batch*{self.rows}"


def _compact(value: torch.Tensor) -> dict[str, Any]:
    """``value`` (one sample's) as a fill, or as the smallest tensor that broadcasts to it."""
    flat = value.reshape(-1)
    if flat.numel() == 0 or bool((flat == flat[0]).all()):
        return {"fill": float(flat[0]) if flat.numel() else 0.0}
    for dim in range(value.dim()):
        first = value.narrow(dim, 0, 1)
        if bool((value == first).all()):
            value = first
    return {"shape": list(value.shape), "values": value.reshape(-1).tolist()}


def initial_state(entries: list[StateEntry], batch: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """The state at t = 0 of a batch of ``batch`` samples, by input name."""
    state = {}
    for entry in entries:
        one = (entry.rows, *entry.shape)
        if "fill" in entry.init:
            state[entry.name] = np.full((batch * entry.rows, *entry.shape), entry.init["fill"], dtype=dtype)
        else:
            values = np.asarray(entry.init["values"], dtype=dtype).reshape(entry.init["shape"])
            full = np.broadcast_to(values, (batch, *one)).reshape(batch * entry.rows, *entry.shape)
            state[entry.name] = np.ascontiguousarray(full)
    return state


class _TracedRecord:
    """Stands in for a neuron's :class:`~snnconvert.runtime.statistics.NeuronRecord` in an exported
    step: adds the spikes sent to a count carried as state, and keeps the potential left by firing."""

    def __init__(self, counts: torch.Tensor | None):
        self.counts, self.left = counts, None

    def add(self, sent: torch.Tensor, v: torch.Tensor, left: torch.Tensor | None = None) -> None:
        self.counts = sent if self.counts is None else self.counts + sent
        self.left = left


class StepFunction(nn.Module):
    """One step of ``snn`` as a function of its state: ``(x, t, *state) → (y, t + 1, *state′, *left)``
    in the order of ``entries`` (``left`` for the neurons named in ``left``)."""

    def __init__(self, snn: nn.Module, entries: list[StateEntry], left: list[str]):
        super().__init__()
        self.snn, self.entries, self.left = snn, entries, left
        self._counts: dict[str, torch.Tensor | None] = {}
        self._modules_by_name = dict(snn.named_modules())
        self._hooks = [self._modules_by_name[e.module].register_forward_hook(self._counter(e.module))
                       for e in entries if e.key == "spikes" and not isinstance(self._modules_by_name[e.module], Recorder)]

    def _counter(self, name: str):
        def count(_module, _inputs, out: torch.Tensor) -> None:
            events = (out != 0).to(out.dtype)
            self._counts[name] = events if self._counts[name] is None else self._counts[name] + events
        return count

    def close(self) -> None:
        """Remove the counting hooks from the model."""
        for hook in self._hooks:
            hook.remove()

    def count_from(self, state: list[torch.Tensor | None]) -> None:
        """Start every spike count at its entry of ``state`` (one tensor or None, from zero, per entry)."""
        for entry, value in zip(self.entries, state):
            if entry.key == "spikes":
                module = self._modules_by_name[entry.module]
                if isinstance(module, Recorder):
                    module.record, module.recording = _TracedRecord(value), "basic"
                else:
                    self._counts[entry.module] = value

    def load(self, t: torch.Tensor, state: list[torch.Tensor]) -> None:
        """Put ``state`` (one tensor per entry) into the modules, after ``t`` steps."""
        self.count_from(state)
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for entry, value in zip(self.entries, state):
            if entry.key != "spikes":  # a copy: the step updates it in place
                grouped.setdefault(entry.module, {})[entry.key] = value.clone()
        for name, module in self._modules_by_name.items():
            if isinstance(module, StatefulModule):
                module.load_state(grouped.get(name, {}), t)

    def read(self) -> list[torch.Tensor]:
        """The state after the step, in the order of the entries, then the ``left`` potentials."""
        out = []
        for entry in self.entries:
            module = self._modules_by_name[entry.module]
            if entry.key != "spikes":
                out.append(module.state()[entry.key])
            else:
                out.append(module.record.counts if isinstance(module, Recorder) else self._counts[entry.module])
        return out + [self._modules_by_name[name].record.left for name in self.left]

    def forward(self, x: torch.Tensor, t: torch.Tensor, *state: torch.Tensor):
        self.load(t, list(state))
        y = self.snn(x)
        return (y, t + 1, *self.read())


def _probe(snn: nn.Module, example: torch.Tensor, sources: list[str]) -> tuple[list[StateEntry], list[str]]:
    """The state entries of ``snn`` (and the neurons that report a left potential), from one step on ``example``."""
    modules = dict(snn.named_modules())
    spiking = [n for n, m in modules.items() if isinstance(m, Recorder)]
    counted = spiking + [n for n in sources if n not in spiking]
    step = StepFunction(snn, [StateEntry(f"{n}.spikes", n, "spikes", (), {}) for n in counted], [])
    reset_states(snn)
    step.count_from([None] * len(counted))
    with torch.no_grad():
        snn(example)
    batch, entries = len(example), []

    def entry(name: str, module: str, key: str, value: torch.Tensor, initial: torch.Tensor) -> StateEntry:
        if value.dim() == 0 or value.shape[0] % batch:
            raise SnnConvertError(f"the state {name} {tuple(value.shape)} does not grow with the batch "
                                  f"({batch} samples): it cannot be exported as a batched state")
        rows = value.shape[0] // batch
        return StateEntry(name, module, key, tuple(value.shape[1:]), _compact(initial[:rows]), rows)

    for name, module in modules.items():
        if isinstance(module, StatefulModule):
            initial = module.initial_state()
            entries += [entry(f"{name}.{key}", name, key, value, initial[key]) for key, value in module.state().items()]
    for name, counts in zip(counted, step.read()):
        entries.append(entry(f"{name}.spikes", name, "spikes", counts, torch.zeros_like(counts)))
    left = [n for n in spiking if modules[n].record.left is not None]
    step.close()
    reset_states(snn)
    for module in modules.values():
        if isinstance(module, Recorder):
            module.stop_recording()
    return entries, left


def _threshold_kind(layers: dict[str, Recorder]) -> str:
    kinds = {"layer" if m.threshold.numel() == 1 else "channel" for m in layers.values()}
    return "none" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"


def _torch_export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                  axes: dict[str, str], what: str) -> None:
    """``torch.onnx.export`` with the leading dimension of each name in ``axes`` dynamic (named)."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # what they warn of, _verify checks
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: it traces module state
            torch.onnx.export(module, args, str(path), opset_version=OPSET, dynamo=False, input_names=inputs,
                              output_names=outputs, dynamic_axes={n: {0: axis} for n, axis in axes.items()})
    except torch.onnx.errors.OnnxExporterError as e:
        reason = str(e).strip().splitlines()[0]
        raise SnnConvertError(f"cannot export {what} to ONNX: {reason}. Replace that op in the model (or "
                              f"export --what ann, which has fewer ops) and try again") from e


def _verify(path: Path, step: StepFunction, entries: list[StateEntry], example: torch.Tensor, steps: int = 3) -> None:
    """Run the exported step in onnxruntime against ``step`` for a few steps on a batch of another
    size than the traced one: a shape or a branch the trace fixed shows up here, not in a user's run
    (values are compared only for a graph without random draws: masks, spike encoders)."""
    import onnxruntime as ort

    random = any(node.op_type.startswith("Random") or node.op_type in ("Bernoulli", "Multinomial")
                 for node in onnx.load(str(path)).graph.node)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = {i.name for i in session.get_inputs()}, [o.name for o in session.get_outputs()]
    x = torch.cat([example, example[:1]])
    state = initial_state(entries, len(x))
    t = torch.tensor(0)
    for _ in range(steps):
        feed = {"x": x.numpy(), "t": t.numpy(), **state}
        got = dict(zip(outputs, session.run(None, {k: v for k, v in feed.items() if k in inputs})))
        with torch.no_grad():
            y, t, *after = step(x, t, *(torch.from_numpy(state[e.name]) for e in entries))
        expected = {"y": y, **{e.name + ".next": value for e, value in zip(entries, after)}}
        for name, value in expected.items():
            value = value.numpy()
            if got[name].shape != value.shape or not random and not np.allclose(got[name], value, rtol=1e-4,
                                                                                 atol=1e-5):
                raise SnnConvertError(f"the exported step differs from the model at {name} "
                                      f"({list(got[name].shape)} against {list(value.shape)}): the trace fixed a "
                                      "shape or a branch; please report it with the model")
        state = {e.name: got[e.name + ".next"] for e in entries}


def _write_metadata(path: Path, metadata: dict[str, Any]) -> onnx.ModelProto:
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"snnconvert.{key}", value if isinstance(value, str) else json.dumps(value)
    model.producer_name, model.producer_version = "snnconvert", __version__
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


def _input(example: torch.Tensor, metadata: dict[str, Any]) -> dict[str, Any]:
    """The input's description: what ``metadata`` says of it, over what the example shows."""
    return {"name": "x", "shape": list(example.shape[1:]), "dtype": "float32", **metadata.get("input", {})}


def _check_arguments(function: str, model: nn.Module, path: str | Path, example: torch.Tensor,
                     metadata: dict[str, Any]) -> None:
    call = f"{function}(model, path, example, metadata)"
    checks.module(model, function, call=call)
    checks.expect(isinstance(path, (str, Path)), function, "path", "a file path (str or Path)", path, f"call {call}")
    checks.batch(example, function, "example", getattr(model, "meta", {}).get("input_shape"), call)
    checks.expect(isinstance(metadata, dict), function, "metadata", "a dict", metadata)


def export_ann(model: nn.Module, path: str | Path, example: torch.Tensor, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Write ``model`` (an ANN: the original or its QCFS model) as ONNX: ``x [N, C, H, W] → y``,
    dynamic batch; ``metadata`` is added as ``snnconvert.*`` metadata_props."""
    _check_arguments("export_ann", model, path, example, metadata)
    path = Path(path)
    model = copy.deepcopy(model).eval()
    _torch_export(model, (example,), path, ["x"], ["y"], {"x": "batch", "y": "batch"}, "the ANN")
    return _write_metadata(path, {"format": "ann/1", "version": __version__, **metadata,
                                  "input": _input(example, metadata)})


def export_snn(snn: fx.GraphModule, path: str | Path, example: torch.Tensor, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Write one time step of the converted model ``snn`` as ONNX (see the module docstring),
    traced on ``example`` (an input batch; two samples are used).

    ``metadata`` (the model's neurons, mode, T, input, classes …) is added to what the export
    itself records: the state entries, the spiking layers, the op table and the float ops."""
    _check_arguments("export_snn", snn, path, example, metadata)
    if not isinstance(snn, fx.GraphModule) or "input_shape" not in snn.meta:
        raise SnnConvertError("export_snn takes a converted model (snnconvert.convert) or a directly trained "
                              "model's for_inference() graph")
    example = example[:2].float().cpu() if len(example) >= 2 else example.float().cpu().expand(2, *example.shape[1:])
    table = OpAccounting(snn)
    model = copy.deepcopy(snn).eval().float().cpu()
    entries, left = _probe(model, example, table.sources)
    step = StepFunction(model, entries, left).eval()
    state = initial_state(entries, len(example))
    args = (example, torch.tensor(0), *(torch.from_numpy(state[e.name]) for e in entries))
    path = Path(path)
    names = [e.name for e in entries]
    axes = {"x": "batch", "y": "batch", **{e.name + suffix: e.batch_axis for e in entries for suffix in ("", ".next")},
            **{e.module + ".left": e.batch_axis for e in entries if e.key == "spikes" and e.module in left}}
    _torch_export(step, args, path, ["x", "t", *names], ["y", "t.next", *(n + ".next" for n in names),
                                                         *(n + ".left" for n in left)], axes, "the SNN step")
    _verify(path, step, entries, example)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, Recorder)}
    recorded = {"neurons": [{"name": n, "single": bool(m.single_spikes), "left": n in left,
                             "threshold": m.threshold.reshape(-1).tolist(), "threshold_shape": list(m.threshold.shape)}
                            for n, m in layers.items()],
                "sources": table.sources}
    return _write_metadata(path, {"format": SNN_STEP, "version": __version__,
                                  "thresholds": _threshold_kind(layers), **metadata, "input": _input(example, metadata),
                                  "state": [asdict(e) for e in entries], "layers": recorded,
                                  "energy": table.to_dict(),
                                  "float_operations": [asdict(op) for op in float_operations(snn)]})
