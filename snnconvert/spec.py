"""The typed specification of a run of the whole pipeline (``snnconvert MODEL``): the model and its
weights, the data, and the configs of every stage. Built once from the command line (or read from
a file), it is what :func:`snnconvert.workflow.run` runs; the run resolves what the weights decide
(T and the fine-tuning epochs from the recipe) and stores the resolved spec in its report, so that
``snnconvert run --config report.json`` (or a spec of one's own in YAML or JSON) reruns it exactly.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from snnconvert.calibrate import CalibrationConfig, CorrectionConfig
from snnconvert.convert import NeuronConfig
from snnconvert.errors import ArgumentError
from snnconvert.prepare import MaskConfig, PrepareConfig
from snnconvert.runtime.energy import EnergyCosts
from snnconvert.runtime.execution import SimulationOptions


@dataclass(frozen=True)
class ModelSource:
    """Where the model and its weights come from.

    Attributes:
        name: a zoo recipe, or a timm architecture.
        checkpoint: an snnconvert checkpoint or a state dict (None: the recipe's shipped checkpoint
            or timm's pretrained weights, unless ``pretrained`` is False: random weights).
        num_classes, input_size, classes: the model built for other data (a new head, other input).
        remap: ``order``: the checkpoint's tensors are the model's in order under other names.
    """

    name: str
    checkpoint: str | None = None
    pretrained: bool = True
    num_classes: int | None = None
    input_size: tuple[int, ...] | None = None
    classes: tuple[str, ...] | None = None
    remap: str | None = None

    def __post_init__(self) -> None:
        for name in ("input_size", "classes"):  # lists, from a file
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

    def loading(self) -> dict[str, Any]:
        """:func:`snnconvert.workflow.load`'s ``adapt`` and ``remap``."""
        return {"adapt": {"num_classes": self.num_classes, "input_size": self.input_size, "classes": self.classes},
                "remap": self.remap}


@dataclass(frozen=True)
class DataSpec:
    """The data: a dataset name or folder (its training split calibrates and trains, its test split
    is simulated), the first ``limit`` test images (None: all), ``batch_size`` simulated together."""

    name: str = "embedded"
    limit: int | None = None
    batch_size: int = 256


@dataclass(frozen=True)
class RunSpec:
    """One run of the whole pipeline: load → prepare + calibrate (+ masks) (+ fine-tune) → convert
    (+ correct) → simulate → report.

    Attributes:
        model: the model and its weights.
        data: the data.
        timesteps: T (None: the recipe's).
        prepare: how an ANN is prepared, and the event-driven route's sites for a prepared model
            (None: the recipe's levels, the rest at their defaults).
        calibration: thresholds (and BatchNorm statistics) from sample images.
        neuron: what QCFS becomes and how values are coded.
        epochs: fine-tuning epochs before converting (None: the recipe's for an ANN with real
            weights, else 0).
        modes: the attention modes simulated (``compensated``, ``mst``).
        masks: random spike masks added to the prepared model.
        correction: the converted model's layer-by-layer correction.
        simulation: how the simulation runs and what it measures.
        costs: energy per operation.
    """

    model: ModelSource
    data: DataSpec = DataSpec()
    timesteps: int | None = None
    prepare: PrepareConfig | None = None
    calibration: CalibrationConfig = CalibrationConfig()
    neuron: NeuronConfig = NeuronConfig()
    epochs: int | None = None
    modes: tuple[str, ...] = ("compensated",)
    masks: MaskConfig | None = None
    correction: CorrectionConfig | None = None
    simulation: SimulationOptions = field(default_factory=SimulationOptions)
    costs: EnergyCosts = EnergyCosts()

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data (what a report stores)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """A spec from :meth:`to_dict`'s form; an unknown or missing field is named."""
        return _build(cls, data, "the run spec")

    @classmethod
    def read(cls, path: str | Path) -> RunSpec:
        """The spec a file holds: a YAML or JSON spec, or a report (``report.json``: its ``spec``)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ArgumentError(f"cannot read the run spec {path}: {error}") from None
        if isinstance(data, dict) and "simulations" in data:  # a report
            if "spec" not in data:
                raise ArgumentError(f"{path} is a report written before reports stored their run spec: "
                                    "run the command line again")
            data = data["spec"]
        if not isinstance(data, dict):
            raise ArgumentError(f"{path} holds no run spec (a mapping with 'model', 'data', …)")
        return cls.from_dict(data)


#: the configs a spec is made of, by field
_PARTS = {"model": ModelSource, "data": DataSpec, "prepare": PrepareConfig, "calibration": CalibrationConfig,
          "neuron": NeuronConfig, "masks": MaskConfig, "correction": CorrectionConfig,
          "simulation": SimulationOptions, "costs": EnergyCosts}


def _build(kind: type, data: Any, where: str):
    if not isinstance(data, dict):
        raise ArgumentError(f"{where} must be a mapping of {kind.__name__}'s fields, got {data!r}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ArgumentError(f"{where}: unknown field(s) {', '.join(unknown)}; {kind.__name__} has "
                            f"{', '.join(sorted(known))}")
    values = {}
    for name, value in data.items():
        part = _PARTS.get(name) if kind is RunSpec else None
        values[name] = _build(part, value, f"{where}.{name}") if part is not None and value is not None else value
    if kind is RunSpec:
        values["modes"] = tuple(values.get("modes", ("compensated",)))
        if "model" not in values:
            raise ArgumentError(f"{where} has no model: give model.name at least")
    try:
        return kind(**values)
    except TypeError as error:
        raise ArgumentError(f"{where}: {error}") from None
