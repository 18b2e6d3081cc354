"""Per-sample early exit: a sample stops once a rule holds on its running output, and leaves the batch.

After step t a sample's prediction is the argmax of its running output total ``Σ_{τ≤t} y_τ``.
A rule says when that prediction is final:

* ``confidence c``: the largest softmax probability of the running mean ``Σ_{τ≤t} y_τ / t`` is ≥ c;
* ``stable k``: the prediction is the same as at each of the k steps before (k + 1 equal in a row).

A sample that stops keeps its prediction for every later t and leaves the batch: the model's state
loses its rows (:meth:`~snnconvert.runtime.execution.Execution.keep`), so its later steps cost
nothing. (A model with random spike masks draws other masks for a smaller batch, so its exits are
not those of a full run.) :class:`ExitTrace` records, on a run without exits, what every rule would give
(:func:`exit_curve`): one pass for the whole accuracy-against-mean-steps curve.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconvert.errors import SnnConvertError

EXIT_RULES = ("confidence", "stable")


@dataclass(frozen=True)
class ExitRule:
    """When a sample stops (see the module docstring): ``kind`` ``confidence`` (``value`` c in
    (0, 1]) or ``stable`` (``value`` k ≥ 1 steps)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in EXIT_RULES:
            raise SnnConvertError(f"unknown exit rule {self.kind!r}; choose one of {', '.join(EXIT_RULES)}")
        if self.kind == "confidence" and not 0 < self.value <= 1:
            raise SnnConvertError(f"an exit confidence is a probability in (0, 1], got {self.value}")
        if self.kind == "stable" and (self.value < 1 or self.value != int(self.value)):
            raise SnnConvertError(f"an exit after k unchanged steps needs a whole k >= 1, got {self.value}")

    def holds(self, total: torch.Tensor, t: int, unchanged: torch.Tensor) -> torch.Tensor:
        """Per sample, whether it stops after step ``t``: ``total`` its running output total,
        ``unchanged`` the steps its prediction has not changed for."""
        if self.kind == "confidence":
            return confidence(total, t) >= self.value
        return unchanged >= self.value

    def describe(self) -> str:
        return f"confidence ≥ {self.value:g}" if self.kind == "confidence" else f"prediction unchanged for {int(self.value)} steps"


def confidence(total: torch.Tensor, t: int) -> torch.Tensor:
    """The largest softmax probability of the running mean ``total / t``, per sample."""
    return torch.softmax(total.double() / t, -1).amax(-1)


class ExitTrace:
    """What a run without exits shows of every sample at every step: its confidence, and its
    prediction (filled batch after batch with :meth:`add`)."""

    def __init__(self):
        self.confidences: list[torch.Tensor] = []  # per batch, [N, T]
        self.predictions: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, confidences: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """One batch: ``[N, T]`` confidences and predictions, ``[N]`` labels."""
        self.confidences.append(confidences.cpu())
        self.predictions.append(predictions.cpu())
        self.labels.append(labels.cpu())

    def state(self) -> dict[str, list[torch.Tensor]]:
        """What was traced so far (for a progress file)."""
        return {"confidences": list(self.confidences), "predictions": list(self.predictions),
                "labels": list(self.labels)}

    def load(self, state: dict[str, list[torch.Tensor]]) -> None:
        """Start from an earlier :meth:`state` (a resumed run)."""
        self.confidences, self.predictions = list(state["confidences"]), list(state["predictions"])
        self.labels = list(state["labels"])


@dataclass
class ExitPoint:
    """What a rule gives: accuracy (%) at exit and the mean steps run per sample."""

    rule: ExitRule
    accuracy: float
    mean_steps: float


def exit_steps(rule: ExitRule, confidences: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """Per sample, the step (1-based) a rule stops it at, from ``[N, T]`` traces (T if never)."""
    timesteps = predictions.shape[1]
    if rule.kind == "confidence":
        holds = confidences >= rule.value
    else:
        same = torch.cat([torch.zeros_like(predictions[:, :1], dtype=torch.bool),
                          predictions[:, 1:] == predictions[:, :-1]], 1)
        run = torch.zeros_like(predictions[:, 0])
        holds = torch.zeros_like(same)
        for t in range(timesteps):
            run = torch.where(same[:, t], run + 1, torch.zeros_like(run))
            holds[:, t] = run >= rule.value
    holds[:, -1] = True
    return holds.int().argmax(1) + 1


def exit_curve(trace: ExitTrace, rules: list[ExitRule]) -> list[ExitPoint]:
    """Accuracy and mean steps of each rule, from a traced run (see the module docstring)."""
    confidences, predictions = torch.cat(trace.confidences), torch.cat(trace.predictions)
    labels = torch.cat(trace.labels)
    points = []
    for rule in rules:
        steps = exit_steps(rule, confidences, predictions)
        final = predictions.gather(1, (steps - 1).unsqueeze(1)).squeeze(1)
        points.append(ExitPoint(rule, 100.0 * float((final == labels).double().mean()), float(steps.double().mean())))
    return points
