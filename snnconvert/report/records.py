"""What each workflow stage returns: typed records (:class:`~snnconvert.record.Record`), written
as report.json / sweep.json / training records by ``to_dict()`` and rendered for the console by
:mod:`snnconvert.report.console`. Tables of detail (per layer, per op, per site, per epoch) stay
JSON-able mappings inside them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snnconvert.direct import DirectConfig
from snnconvert.record import Record, optional
from snnconvert.runtime.energy import EnergyCosts
from snnconvert.spec import DirectSpec, RunSpec, SimulateSpec, SweepSpec
from snnconvert.train import TrainConfig

Table = list[dict[str, Any]]


@dataclass(frozen=True)
class Simulation(Record):
    """One simulation of T steps: accuracy (and the gap to the ANN, the agreement with the
    reference ANN's predictions) per step, spikes, the ops per sample by kind and the energy
    ``E_AC·(SOPs + additions) + E_MAC·(MACs + float ops)`` under ``energy_accounting``
    (``dense`` or ``event-driven``); ``notes`` say what the route did not apply."""

    timesteps: int
    samples: int
    seconds: float
    accuracy_per_step: list[float]
    accuracy_at: dict[str, float]
    gap_to_ann_at: dict[str, float] | None
    agreement_with: str | None
    agreement_per_step: list[float] | None
    agreement_at: dict[str, float] | None
    resumed_from_batch: int
    exit_rule: str | None
    mean_steps: float
    spikes_per_sample: float
    spike_rate: float
    layers: Table
    sops_per_sample: float
    macs_per_sample: float
    float_ops_per_sample: float
    adds_per_sample: float
    energy_uj_per_sample: float
    energy_accounting: str
    ops: Table
    notes: list[str] | None = optional()
    energy_conventions: dict[str, Any] | None = optional()
    float_operations: Table | None = optional()
    early_exit: Table | None = optional()


@dataclass(frozen=True)
class TrainingRecord(Record):
    """A training run (``train``; written as JSON beside its checkpoint): what trained on what, the
    hyper-parameters, the history per epoch, where it resumed. ``loading`` (not written): what
    loading the starting weights did."""

    checkpoint: str
    stage: str
    command: str
    data: str
    train_samples: int
    val_samples: int
    processes: int
    torch_threads: int
    config: TrainConfig
    distilled: bool
    history: Table
    resumed_from: dict[str, int] | None
    seconds: float
    loading: dict[str, Any] | None = optional(kw_only=True)


@dataclass(frozen=True)
class FinetuneRecord(TrainingRecord):
    """A fine-tuning (the MST recipe): the training record, the teacher and the accuracies before
    it, and what preparing the student changed."""

    started_from: str
    teacher: str | None
    teacher_accuracy: float | None
    accuracy_before_training: float
    preparation: dict[str, Any] | None
    prepare: dict[str, Any]


@dataclass(frozen=True)
class CalibrationRecord(Record):
    """``snnconvert calibrate``: the weights' ``stage``, what loading and preparing them did, the
    SNN's calibration record (None without a correction or an error report), T and whether the
    checkpoint written is converted."""

    stage: str
    loading: dict[str, Any]
    preparation: dict[str, Any] | None
    snn: dict[str, Any] | None
    timesteps: int
    converted: bool


@dataclass(frozen=True)
class Exported(Record):
    """A model written to ONNX: the file, what it holds, the opset, its inputs and outputs, its size."""

    out: str
    what: str
    opset: int
    inputs: int
    outputs: int
    bytes: int


@dataclass(frozen=True)
class Header(Record):
    """The fields every report starts with."""

    model: str
    timm_name: str
    weights: str
    data: str
    levels: int | None
    timesteps: int
    neuron: str
    processes: int
    torch_threads: int


@dataclass(frozen=True)
class RunReport(Header):
    """The whole pipeline (``snnconvert MODEL``): the loading, preparation, masks, training and
    correction done, the ANN accuracies and energy, one simulation per attention mode, the spec
    as it ran (T and epochs resolved) and the wall time."""

    weights_loading: dict[str, Any] | None
    preparation: dict[str, Any] | None
    masks: str | None
    route: str | None
    training: FinetuneRecord | None
    ann_accuracy: dict[str, float]
    snn_calibration: dict[str, dict[str, Any]] | None
    energy_costs_pj: EnergyCosts
    ann_energy_uj_per_sample: float
    simulations: dict[str, Simulation]
    spec: RunSpec
    seconds: float


@dataclass(frozen=True)
class SimulateReport(Header):
    """``snnconvert simulate``: the backend, one simulation (by attention mode), the spec as it ran."""

    backend: str
    ann_accuracy: dict[str, float]
    energy_costs_pj: EnergyCosts
    simulations: dict[str, Simulation]
    spec: SimulateSpec


@dataclass(frozen=True)
class SweepRow(Record):
    """One variant of a mask sweep, against the unmasked SNN (the first row): accuracy at T and
    its change, spikes (the MST power ratio is their ratio), SOPs and energy."""

    sweep: str
    target: str
    ratio: float
    blocks: int | str
    fine_tuned: bool
    qcfs_accuracy: float
    accuracy: float
    spikes_per_sample: float
    sops_per_sample: float
    energy_uj_per_sample: float
    resumed_from_batch: int
    accuracy_change: float
    power_ratio: float
    energy_ratio: float


@dataclass(frozen=True)
class SweepReport(Header):
    """``snnconvert mask-sweep``: the test images, costs, first seed, fine-tuning and the rows."""

    samples: int
    energy_costs_pj: EnergyCosts
    seed: int
    finetune: TrainConfig | None
    rows: list[SweepRow]
    spec: SweepSpec


@dataclass(frozen=True)
class DirectReport(Header):
    """``snnconvert direct-train``: the model's spiking config, its training, its simulation, its
    learned time steps per layer (dynamic time steps) and its size."""

    method: str
    direct: DirectConfig
    training: TrainingRecord
    ann_accuracy: dict[str, float]
    energy_costs_pj: EnergyCosts
    simulations: dict[str, Simulation]
    dynamic_timesteps: dict[str, Any] | None
    parameters: int
    spec: DirectSpec
    seconds: float
