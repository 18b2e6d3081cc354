"""An exported SNN step run in onnxruntime, by the same simulation loop as the PyTorch model.

:class:`OnnxStep` holds the session and the state layout from the file's metadata;
:class:`OnnxExecution` is what :func:`~snnconvert.runtime.simulator.run_simulation` drives: it
carries the state from step to step and, from the spike counts and potentials the step returns,
keeps every layer's statistics with the PyTorch neurons' own
:class:`~snnconvert.runtime.statistics.NeuronRecord` (stand-ins: :class:`RecordedLayer`), so the
spikes per layer, the spiking statistics and the energy are counted as in PyTorch. Spike masks of a
masked model draw from onnxruntime's generator (a run is not repeatable, nor comparable step by
step with PyTorch's).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from snnconvert.errors import CheckpointError, SnnConvertError
from snnconvert.export.onnx import SNN_STEP, StateEntry, initial_state
from snnconvert.checkpoint import Job
from snnconvert.runtime.energy import EventCounts, OpTable
from snnconvert.runtime.monitors import SpikeMonitor
from snnconvert.runtime.simulator import Instruments, SimulationResult, Watch, run_simulation
from snnconvert.runtime.statistics import Recorder

#: where ``snnconvert simulate`` runs a model: PyTorch, or its exported step in onnxruntime
BACKENDS = ("torch", "onnxruntime")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``snnconvert.*`` metadata of an exported model (JSON values decoded), without its weights."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable ONNX model ({e}); export it again with "
                              "`snnconvert export MODEL --what snn --out FILE`") from e
    found = {}
    for prop in model.metadata_props:
        if prop.key.startswith("snnconvert."):
            key = prop.key.removeprefix("snnconvert.")
            try:
                found[key] = json.loads(prop.value)
            except json.JSONDecodeError:
                found[key] = prop.value
    return found


class RecordedLayer(Recorder):
    """The stand-in of an exported neuron (or other event source): its θ, and the record the
    monitors read."""

    def __init__(self, threshold: torch.Tensor, single: bool):
        self.threshold, self.single_spikes = threshold, single
        self.record = None

    def reset(self) -> None:
        self.record = None


class OnnxStep:
    """An exported SNN step (``snnconvert export --what snn``) in an onnxruntime session.

    Args:
        path: the ONNX file.
        threads: intra-op threads (None: torch's count, for like-for-like timings).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.metadata = read_metadata(path)
        if self.metadata.get("format") != SNN_STEP:
            raise SnnConvertError(f"{path} is not an exported SNN step (its format is "
                                  f"{self.metadata.get('format', 'not snnconvert')!r}): export one with "
                                  "`snnconvert export MODEL --what snn --out FILE`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.entries = [StateEntry(**{**e, "shape": tuple(e["shape"])}) for e in self.metadata["state"]]
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.input_shape = tuple(self.metadata["input"]["shape"])

    def initial_state(self, batch: int) -> dict[str, np.ndarray]:
        """The state at t = 0 for ``batch`` samples, by input name."""
        return initial_state(self.entries, batch)

    def check(self, x: np.ndarray) -> None:
        """Refuse an input batch of the wrong shape, naming the shape the step takes."""
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise SnnConvertError(f"{self.path.name} takes images [N, {', '.join(map(str, self.input_shape))}], got "
                                  f"{list(x.shape)}: fit the data to the model (snnconvert simulate does, from "
                                  "the recipe in the file's metadata)")

    def run(self, x: np.ndarray, t: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One step: every output by name (``y``, ``t.next``, ``<state>.next`` …)."""
        self.check(x)
        feed = {"x": x, "t": t, **state}
        return dict(zip(self.outputs, self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})))

    def fingerprint(self) -> str:
        """The SHA-256 of the file (what a progress file is tied to)."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class OnnxExecution:
    """The execution :func:`~snnconvert.runtime.simulator.run_simulation` drives, for an exported
    step: one step per call, the state kept here, each layer's record fed from the step's outputs."""

    def __init__(self, step: OnnxStep):
        self.step = step
        recorded = step.metadata["layers"]
        self.neurons = {n["name"]: RecordedLayer(torch.tensor(n["threshold"]).reshape(n["threshold_shape"]),
                                                 n["single"]) for n in recorded["neurons"]}
        self.left = {n["name"] for n in recorded["neurons"] if n["left"]}
        self.sources = {n: self.neurons.get(n) or RecordedLayer(torch.tensor(1.0), True) for n in recorded["sources"]}
        self._counted = {e.module: e.name for e in step.entries if e.key == "spikes"}
        self._t = np.array(0, dtype=np.int64)
        self._state: dict[str, np.ndarray] = {}

    def reset(self, batch: int = 0) -> None:
        self._state = {}
        self._t = np.array(0, dtype=np.int64)
        for layer in {**self.neurons, **self.sources}.values():
            layer.reset()

    def steps_per_call(self, images: torch.Tensor) -> int:
        return 1

    def inputs(self, images: torch.Tensor) -> tuple[np.ndarray]:
        x = images.detach().cpu().numpy().astype(np.float32)
        self._state = self.step.initial_state(len(x))
        return (x,)

    def run(self, inputs: tuple[np.ndarray], steps: int) -> torch.Tensor:
        """``steps`` steps: outputs ``[steps, N, …]``."""
        outputs = []
        for _ in range(steps):
            out = self.step.run(inputs[0], self._t, self._state)
            for name, layer in {**self.neurons, **self.sources}.items():
                counts = self._counted[name]
                sent = torch.from_numpy(out[counts + ".next"] - self._state[counts])
                v = torch.from_numpy(out[f"{name}.v.next"]) if name in self.neurons else sent
                left = torch.from_numpy(out[f"{name}.left"]) if name in self.left else None
                layer._record(sent, v, left)
            self._t = out["t.next"]
            self._state = {e.name: out[e.name + ".next"] for e in self.step.entries}
            outputs.append(torch.from_numpy(out["y"]))
        return torch.stack(outputs)

    def keep(self, inputs: tuple[np.ndarray], mask: torch.Tensor) -> tuple[np.ndarray]:
        """Drop the samples where ``mask`` is False from the batch (see ``Execution.keep``)."""
        rows = mask.cpu().numpy()
        self._state = {e.name: self._state[e.name].reshape(len(rows), -1, *e.shape)[rows].reshape(-1, *e.shape)
                       for e in self.step.entries}
        for layer in {**self.neurons, **self.sources}.values():
            if layer.record is not None:
                layer.record.keep(mask)
        return (inputs[0][rows],)

    def state(self) -> dict[str, np.ndarray]:
        """The state after the steps run so far, by input name."""
        return dict(self._state)

    def load(self, state: dict[str, np.ndarray], t: int) -> None:
        """Go on from ``state`` (by input name) after ``t`` steps (after :meth:`inputs`)."""
        self._state, self._t = dict(state), np.array(t, dtype=np.int64)


def simulate_onnx(path: str | Path, data, labels: torch.Tensor | None = None, timesteps: int | None = None,
                  metrics: str = "full", threads: int | None = None, watch: Watch = Watch(),
                  job: Job = Job()) -> SimulationResult:
    """:func:`~snnconvert.runtime.simulate` for an exported step in onnxruntime (CPU): accuracy
    at every t, spikes per layer and energy, counted as for the PyTorch model (``timesteps``
    None: the T in the file; ``metrics`` as in
    :class:`~snnconvert.runtime.execution.SimulationOptions`, ``watch`` without the quiet exit)."""
    step = OnnxStep(path, threads)
    execution = OnnxExecution(step)
    table = OpTable.from_dict(step.metadata["energy"])
    timesteps = timesteps or int(step.metadata.get("timesteps", 0))
    if not timesteps:
        raise SnnConvertError(f"{path} records no default T: pass timesteps")
    with SpikeMonitor(execution.neurons, metrics) as monitor, \
            EventCounts(execution.sources, table.mapped, table.marks) as events:
        instruments = Instruments(execution, monitor, events, table, {"onnx": step.fingerprint()})
        return run_simulation(instruments, data, labels, timesteps, "cpu", step.input_shape, watch, job)
