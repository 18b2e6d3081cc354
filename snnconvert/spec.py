"""The typed specification of a run of the whole pipeline (``snnconvert MODEL``): the model and its
weights, the data, and the configs of every stage. Built once from the command line (or read from
a file), it is what :func:`snnconvert.workflow.run` runs; the run resolves what the weights decide
(T and the fine-tuning epochs from the recipe) and stores the resolved spec in its report, so that
``snnconvert run --config report.json`` (or a spec of one's own in YAML or JSON) reruns it exactly.
"""
from __future__ import annotations

from functools import cached_property
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from snnconvert.calibrate import CalibrationConfig, CorrectionConfig
from snnconvert.convert import NeuronConfig
from snnconvert.direct import DirectConfig
from snnconvert.errors import ArgumentError
from snnconvert.export.session import BACKENDS
from snnconvert.prepare import MaskConfig, PrepareConfig
from snnconvert.record import Record
from snnconvert.runtime.early_exit import ExitRule
from snnconvert.runtime.energy import EnergyCosts
from snnconvert.runtime.execution import SimulationOptions
from snnconvert.train import TrainConfig


#: the fields of :class:`ModelSource` that say how the model's inputs are preprocessed
PREPROCESSING = ("mean", "std", "input_scale", "channel_order", "interpolation", "crop_pct")


def over_recipe(**kwargs: Any) -> Any:
    """A config field that may be given as a mapping of some of the config's fields: the spec
    fills in the others from the model's recipe when it is made (a file gives such a mapping)."""
    return field(metadata={"over_recipe": True}, **kwargs)


def _over(kind: type, given: Any, base: dict[str, Any], where: str) -> Any:
    """``given`` as a ``kind`` config: as it is, or a mapping of some of its fields over ``base``
    (a recipe's settings)."""
    if isinstance(given, kind):
        return given
    _check_mapping(kind, given, where)
    return kind(**{**base, **given})


def _check_mapping(kind: type, data: Any, where: str) -> None:
    """Refuse ``data`` unless it is a mapping of some of ``kind``'s fields (an unknown one named)."""
    if not isinstance(data, dict):
        raise ArgumentError(f"{where} must be a mapping of {kind.__name__}'s fields, got {data!r}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ArgumentError(f"{where}: unknown field(s) {', '.join(unknown)}; {kind.__name__} has "
                            f"{', '.join(sorted(known))}")


@dataclass(frozen=True)
class ModelSource:
    """Where the model and its weights come from.

    Attributes:
        name: a zoo recipe, a timm architecture, or a model of one's own: ``pkg.module:factory``,
            ``path/file.py:factory`` or ``file.onnx`` (:mod:`snnconvert.model_zoo.sources`).
        checkpoint: an snnconvert checkpoint or a state dict (None: the recipe's shipped checkpoint
            or timm's pretrained weights, unless ``pretrained`` is False: random weights; one's
            own model: its own weights).
        num_classes, input_size, classes: the model built for other data (a new head, other input).
        remap: ``order``: the checkpoint's tensors are the model's in order under other names.
        model_args: keyword arguments of one's own factory (an ONNX file's: ``input_layout``).
        mean, std, input_scale, channel_order, interpolation, crop_pct: the preprocessing the
            model was trained with, ``(pixel · input_scale − mean) / std`` (None: the recipe's).
    """

    name: str
    checkpoint: str | None = None
    pretrained: bool = True
    num_classes: int | None = None
    input_size: tuple[int, ...] | None = None
    classes: tuple[str, ...] | None = None
    remap: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_scale: float | None = None
    channel_order: str | None = None
    interpolation: str | None = None
    crop_pct: float | None = None

    def __post_init__(self) -> None:
        for name in ("input_size", "classes", "mean", "std"):  # lists, from a file
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.channel_order not in (None, "rgb", "bgr"):
            raise ArgumentError(f"channel order must be rgb or bgr, got {self.channel_order!r}")

    def loading(self) -> dict[str, Any]:
        """:func:`snnconvert.workflow.load`'s ``adapt`` and ``remap``."""
        preprocessing = {k: getattr(self, k) for k in PREPROCESSING}
        return {"adapt": {"num_classes": self.num_classes, "input_size": self.input_size, "classes": self.classes,
                          "model_args": self.model_args or None, **preprocessing},
                "remap": self.remap}


@dataclass(frozen=True)
class DataSpec:
    """The data: a dataset name or folder (its training split calibrates and trains, its test split
    is simulated), the first ``limit`` test images (None: all), ``batch_size`` simulated together."""

    name: str = "embedded"
    limit: int | None = None
    batch_size: int = 256


class Spec(Record):
    """A frozen dataclass of configs that reads and writes itself as JSON-able data; a report
    stores the spec it ran, so :meth:`read` of the report reruns it."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """A spec from :meth:`to_dict`'s form; an unknown or missing field is named."""
        return _build(cls, data, f"the {cls.__name__}")

    @classmethod
    def read(cls, path: str | Path):
        """The spec a file holds: a YAML or JSON spec, or a report (``report.json``, ``sweep.json``: its ``spec``)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ArgumentError(f"cannot read the spec {path}: {error}") from None
        if isinstance(data, dict) and ("simulations" in data or "rows" in data):  # a report
            if "spec" not in data:
                raise ArgumentError(f"{path} is a report written before reports stored their spec: "
                                    "run the command line again")
            data = data["spec"]
        if not isinstance(data, dict):
            raise ArgumentError(f"{path} holds no spec (a mapping of {cls.__name__}'s fields)")
        return cls.from_dict(data)


@dataclass(frozen=True)
class RunSpec(Spec):
    """One run of the whole pipeline: load → prepare + calibrate (+ masks) (+ fine-tune) → convert
    (+ correct) → simulate → report.

    Attributes:
        model: the model and its weights.
        data: the data.
        timesteps: T (None: the recipe's).
        prepare: how an ANN is prepared, and the event-driven route's sites for a prepared model
            (None: the recipe's levels, the rest at their defaults but for the route's sites: with
            ``simulation.event_driven`` True, looked for where the model has them, as
            ``--event-driven`` does).
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", tuple(self.modes))  # a list, from a file


@dataclass(frozen=True)
class SweepSpec(Spec):
    """A Random Spike Masking sweep of a prepared model (``snnconvert mask-sweep``): every target
    at every ratio on every block and, with ``block_ratio``, at that ratio on the first k blocks
    for every k; each simulated for T steps (None: the recipe's) against the unmasked SNN. With
    ``finetune`` (a config, or some of its fields over the recipe's fine-tuning settings), every
    masked model is also fine-tuned with distillation from the unmasked one and simulated again;
    ``seed`` is the first mask's."""

    model: ModelSource
    data: DataSpec = DataSpec()
    timesteps: int | None = None
    targets: tuple[str, ...] = ("attn", "mlp")
    ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9)
    block_ratio: float | None = None
    neuron: NeuronConfig = NeuronConfig()
    seed: int = 0
    finetune: TrainConfig | dict[str, Any] | None = over_recipe(default=None)
    simulation: SimulationOptions = field(default_factory=SimulationOptions)
    costs: EnergyCosts = EnergyCosts()

    def __post_init__(self) -> None:
        for name in ("targets", "ratios"):  # lists, from a file
            object.__setattr__(self, name, tuple(getattr(self, name)))
        MaskConfig({t: 0.0 for t in self.targets})  # names the unknown targets
        if self.finetune is not None and not isinstance(self.finetune, TrainConfig):
            object.__setattr__(self, "finetune", _over(TrainConfig, self.finetune,
                                                       _recipe(self.model.name).finetune_settings,
                                                       "the SweepSpec.finetune"))


@dataclass(frozen=True)
class DirectSpec(Spec):
    """Direct training of a spiking recipe (``snnconvert direct-train``): ``direct`` the model's
    neurons, surrogate, encoding and T, ``train`` the hyper-parameters (each a config, or some of
    its fields over the recipe's direct-training settings), then simulated on the data's test
    split (its first ``limit`` images also validate the training)."""

    model: str
    direct: DirectConfig | dict[str, Any] = over_recipe(default_factory=dict)
    train: TrainConfig | dict[str, Any] = over_recipe(default_factory=dict)
    data: DataSpec = DataSpec()
    costs: EnergyCosts = EnergyCosts()

    def __post_init__(self) -> None:
        if not isinstance(self.direct, DirectConfig) or not isinstance(self.train, TrainConfig):
            from snnconvert.model_zoo import direct_settings

            recipe = _recipe(self.model)
            settings = direct_settings(recipe)  # refused for a recipe that is not a spiking network
            object.__setattr__(self, "direct", _over(DirectConfig, self.direct, settings, "the DirectSpec.direct"))
            object.__setattr__(self, "train", _over(TrainConfig, self.train, recipe.direct.get("train", {}),
                                                    "the DirectSpec.train"))
        if self.train.distill_alpha > 0:
            raise ArgumentError("direct training has no teacher to distill from: leave the distillation weight "
                                f"(--alpha, distill_alpha) at 0, not {self.train.distill_alpha}")


@dataclass(frozen=True)
class TrainSpec(Spec):
    """Training (``snnconvert train``) or fine-tuning (``snnconvert finetune``) of one model.

    Attributes:
        model: the model and the weights it starts from.
        train: the hyper-parameters: a config, or some of its fields over the defaults (fine-tuning:
            over the recipe's fine-tuning settings, ``snnconvert zoo show MODEL``).
        data: the data (its first ``limit`` test images validate after each epoch).
        prepare: how an ANN is prepared for QCFS training, and the route's sites added to a
            prepared one; None: the original ANN is trained as it is (``train --ann``).
        calibration: the prepared model's initial thresholds and BatchNorm statistics.
        masks: Random Spike Masks added to the student (fine-tuning).
        finetune: the MST recipe: a trained model fine-tuned with distillation from itself as it
            came, so it must be an ANN unless masks or the route's sites are added.
    """

    model: ModelSource
    train: TrainConfig | dict[str, Any] = over_recipe()
    data: DataSpec = DataSpec("fashion-mnist")
    prepare: PrepareConfig | None = None
    calibration: CalibrationConfig = CalibrationConfig()
    masks: MaskConfig | None = None
    finetune: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            base = _recipe(self.model.name).finetune_settings if self.finetune else {}
            object.__setattr__(self, "train", _over(TrainConfig, self.train, base, "the TrainSpec.train"))


@dataclass(frozen=True)
class CalibrateSpec(Spec):
    """Calibration of a model's thresholds (``snnconvert calibrate``), and optionally of its SNN.

    Attributes:
        model: the model (an ANN is prepared first, as ``prepare`` says) and its weights.
        data: the data (its training split's sample images calibrate).
        calibration: the threshold rule and the number of sample images.
        batchnorm: also re-estimate every BatchNorm's statistics of a prepared model.
        prepare: how an ANN is prepared.
        timesteps: T of the SNN's correction and its error report (None: the recipe's).
        neuron: what QCFS becomes in that SNN.
        correction: convert the model and remove each layer's mean conversion error at T.
        reference: what the SNN is compared with, ``ann`` or ``qcfs`` (None: ``ann`` for an ANN
            checkpoint, ``qcfs`` for a prepared one).
        error_at: the steps the per-layer error report is measured at (empty: T); None: no report.
    """

    model: ModelSource
    data: DataSpec = DataSpec()
    calibration: CalibrationConfig = CalibrationConfig()
    batchnorm: bool = False
    prepare: PrepareConfig | None = None
    timesteps: int | None = None
    neuron: NeuronConfig = NeuronConfig()
    correction: CorrectionConfig | None = None
    reference: str | None = None
    error_at: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.error_at is not None:  # a list, from a file
            object.__setattr__(self, "error_at", tuple(self.error_at))


@dataclass(frozen=True)
class SimulateSpec(Spec):
    """A simulation of a converted model (``snnconvert simulate``).

    Attributes:
        model: a recipe and its converted or prepared checkpoint, or an SNN step exported to ONNX
            by ``snnconvert export`` (``name`` ends in ``.onnx``).
        data: the data (its test split is simulated).
        timesteps: T (None: the recipe's, or the one in the ONNX file).
        mode: the attention mode a prepared checkpoint is converted with.
        neuron: what a prepared checkpoint's QCFS becomes.
        backend: ``torch`` or ``onnxruntime`` (None: onnxruntime for an ONNX file, else torch).
        exit_rule: stop each image once it holds.
        exit_curve: rules evaluated offline on one pass of T steps.
        simulation: how the simulation runs and what it measures.
        costs: energy per operation.
    """

    model: ModelSource
    data: DataSpec = DataSpec()
    timesteps: int | None = None
    mode: str = "compensated"
    neuron: NeuronConfig = NeuronConfig()
    backend: str | None = None
    exit_rule: ExitRule | None = None
    exit_curve: tuple[ExitRule, ...] = ()
    simulation: SimulationOptions = field(default_factory=SimulationOptions)
    costs: EnergyCosts = EnergyCosts()

    def __post_init__(self) -> None:
        curve = tuple(r if isinstance(r, ExitRule) else ExitRule(**r) for r in self.exit_curve)  # dicts, from a file
        object.__setattr__(self, "exit_curve", curve)
        if self.exit_rule is not None and self.exit_curve:
            raise ArgumentError("an early-exit curve (--early-exit, exit_curve) runs every image T steps to evaluate "
                                "its rules offline; an exit rule (--exit, exit_rule) stops them: pick one")
        if self.backend not in (None, *BACKENDS):
            raise ArgumentError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.exported and self.backend == "torch":
            raise ArgumentError(f"{self.model.name} is an ONNX step: it runs with the onnxruntime backend")

    @cached_property
    def exported(self) -> bool:
        """Whether the model is an SNN step exported to ONNX (its metadata says so; an ONNX ANN of
        one's own is a model like any other, simulated from its converted or prepared checkpoint)."""
        from snnconvert.model_zoo.onnx_import import is_snnconvert_step

        return self.model.name.endswith(".onnx") and is_snnconvert_step(self.model.name)

    @property
    def resolved_backend(self) -> str:
        """The backend: as given, else onnxruntime for an ONNX file and torch for a checkpoint."""
        return self.backend or ("onnxruntime" if self.exported else "torch")

    def torch_only(self, device: str) -> list[str]:
        """The options set here (as command-line options) that only the torch backend has: the
        onnxruntime backend runs the exported float32 step on the CPU, one step per call."""
        if self.resolved_backend != "onnxruntime":
            return []
        options = self.simulation
        given = {"--device": device != "cpu", "--chunk": options.chunk is not None,
                 "--precision": options.precision != "fp32", "--compile": bool(options.compile),
                 "--event-driven": bool(options.event_driven)}
        return [name for name, on in given.items() if on]


def _build(kind: type, data: Any, where: str):
    """``kind`` (a dataclass) from JSON-able ``data``, its dataclass fields built in turn."""
    _check_mapping(kind, data, where)
    missing = [f.name for f in fields(kind) if f.name not in data and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise ArgumentError(f"{where} has no {', '.join(missing)}")
    hints = typing.get_type_hints(kind)
    over = {f.name for f in fields(kind) if f.metadata.get("over_recipe")}
    values = {}
    for name, value in data.items():
        if name in over:  # some of a config's fields: the spec fills in the recipe's
            values[name] = value
            continue
        hint = hints[name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)  # X | None
        part = next((t for t in (hint, *(typing.get_args(hint) if union else ())) if is_dataclass(t)), None)
        values[name] = _build(part, value, f"{where}.{name}") if part is not None and value is not None else value
    try:
        return kind(**values)
    except TypeError as error:
        raise ArgumentError(f"{where}: {error}") from None


def _recipe(name: str):
    from snnconvert.model_zoo import get_recipe

    return get_recipe(name)
