"""Per-sample early exit: a sample stops once a rule holds on its running output, and leaves the batch.

After step t a sample's prediction is the argmax of its running output total ``Σ_{τ≤t} y_τ``.
A rule says when that prediction is final:

* ``quiet``: after step t no neuron of the sample would fire on zero input, and its input is
  presented once (count coding, :mod:`snnconvert.runtime.coding`). Exact: the spikes of step t
  reached their targets within it, so step t+1 feeds every op zeros (a compensated op emits
  ``g(A_t) − g(A_{t−1}) = 0`` on unchanged totals, constants are counted at the first step only),
  no membrane changes and nothing fires, at that step or any later one: the output total is
  final (:class:`Quiescence`). It needs every neuron count-coded, the image presented once and
  no random spike masks or encoders (they send new draws every step);
* ``confidence c``: the largest softmax probability of the output's estimate is ≥ c: the running
  mean ``Σ_{τ≤t} y_τ / t`` under rate coding, the total itself under count coding (where the
  total, not a sum to divide by t, stands for the ANN's output);
* ``stable k``: the prediction is the same as at each of the k steps before (k + 1 equal in a
  row), counted from the output's first event: the first step after the first at which the output
  received something (an output stream ``y_t`` that differs from its value on silence: zero under
  count coding, the previous step's under rate coding). Steps before it, where only the constants
  reached the output, do not count.

A sample that stops keeps its prediction for every later t and leaves the batch: the model's state
loses its rows (:meth:`~snnconvert.runtime.execution.Execution.keep`), so its later steps cost
nothing. (A model with random spike masks draws other masks for a smaller batch, so its exits are
not those of a full run.) :class:`ExitTrace` records, on a run without exits, what every rule would give
(:func:`exit_curve`): one pass for the whole accuracy-against-mean-steps curve.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from snnconvert.errors import ArgumentError, SnnConvertError
from snnconvert.runtime.coding import estimate
from snnconvert.runtime.neurons import SpikingNeuron

EXIT_RULES = ("quiet", "confidence", "stable")


@dataclass(frozen=True)
class ExitRule:
    """When a sample stops (see the module docstring): ``kind`` ``quiet`` (no value),
    ``confidence`` (``value`` c in (0, 1]) or ``stable`` (``value`` k ≥ 1 steps)."""

    kind: str
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in EXIT_RULES:
            raise SnnConvertError(f"unknown exit rule {self.kind!r}; choose one of {', '.join(EXIT_RULES)}")
        if self.kind == "confidence" and not 0 < self.value <= 1:
            raise SnnConvertError(f"an exit confidence is a probability in (0, 1], got {self.value}")
        if self.kind == "stable" and (self.value < 1 or self.value != int(self.value)):
            raise SnnConvertError(f"an exit after k unchanged steps needs a whole k >= 1, got {self.value}")

    def holds(self, total: torch.Tensor, t: int, unchanged: torch.Tensor, coding: str = "rate",
              silent: torch.Tensor | None = None) -> torch.Tensor:
        """Per sample, whether it stops after step ``t``: ``total`` its running output total,
        ``unchanged`` the steps its prediction has not changed for (since the output's first
        event), ``silent`` whether it sends nothing after step ``t`` (:class:`Quiescence`)."""
        if self.kind == "quiet":
            if silent is None:
                raise ArgumentError("the quiet exit needs the model's spike sources watched (Quiescence)")
            return silent
        if self.kind == "confidence":
            return confidence(total, t, coding) >= self.value
        return unchanged >= self.value

    def describe(self) -> str:
        if self.kind == "quiet":
            return "quiet (no neuron left to fire)"
        return f"confidence ≥ {self.value:g}" if self.kind == "confidence" else f"prediction unchanged for {int(self.value)} steps"


def confidence(total: torch.Tensor, t: int, coding: str = "rate") -> torch.Tensor:
    """The largest softmax probability of the output's estimate after ``t`` steps (``total / t``
    under rate coding, ``total`` under count coding), per sample."""
    return torch.softmax(estimate(total.double(), t, coding), -1).amax(-1)


def output_silent(out: torch.Tensor, previous: torch.Tensor | None, coding: str) -> torch.Tensor:
    """Per sample, whether the output stream ``out`` of one step ``[N, classes]`` holds nothing new:
    zero under count coding, the previous step's ``previous`` under rate coding."""
    if coding == "count":
        return (out == 0).flatten(1).all(1)
    if previous is None:
        return torch.zeros(len(out), dtype=torch.bool, device=out.device)
    return (out == previous).flatten(1).all(1)


def coding_of(snn: nn.Module) -> str:
    """``count`` when ``snn`` presents its image once (count coding's input gate), else ``rate``."""
    return "count" if any(getattr(m, "presents_once", False) for m in snn.modules()) else "rate"


def quiet_problems(snn: nn.Module) -> list[str]:
    """Why the ``quiet`` exit is not exact on ``snn`` (empty: it is)."""
    problems = []
    if coding_of(snn) != "count":
        problems.append("the image is presented at every step (rate coding), so the first neurons never fall "
                        "silent: convert with count coding (--coding count)")
    neurons = [(n, m) for n, m in snn.named_modules() if isinstance(m, SpikingNeuron)]
    rate = [n for n, m in neurons if getattr(m, "levels", 0) is None]
    if rate:
        problems.append(f"{len(rate)} neurons are rate-coded (at most t spikes by step t: their room grows "
                        f"with t), e.g. {rate[0]}: convert with count coding")
    masked = [n for n, m in snn.named_modules() if getattr(m, "emits_spikes", False)
              and (not isinstance(m, SpikingNeuron) or getattr(m, "mask", None) is not None)]
    if masked:
        problems.append(f"{len(masked)} random spike masks or spike encoders send new draws every step, "
                        f"e.g. {masked[0]}: a silent step is not final (drop the masks, use direct input encoding)")
    return problems


class Quiescence:
    """Which samples of a count-coded model are quiet: after step t (t ≥ 1) the image is not
    presented again, and every spike fired in step t reached its targets within it, so step t+1
    feeds every neuron zeros; a sample none of whose neurons would fire on zero input
    (:meth:`~snnconvert.runtime.neurons.IFNeuron.pending`) sends nothing at any later step, and
    its output total is final (the ``quiet`` exit).

    Raises:
        ArgumentError: ``snn`` is not one the quiet exit is exact on (every reason listed).
    """

    def __init__(self, snn: nn.Module):
        problems = quiet_problems(snn)
        if problems:
            raise ArgumentError("the quiet exit is not exact on this model: " + "; ".join(problems))
        self.neurons = [m for m in snn.modules() if isinstance(m, SpikingNeuron)]

    def settled(self, samples: int) -> torch.Tensor:
        """Per sample (of ``samples``, whose rows each neuron's state holds in turn, as Swin's
        windows: ``[samples·rows, …]``), whether no neuron would fire at the next step."""
        busy = None
        for neuron in self.neurons:
            pending = neuron.pending()
            if pending is not None:
                pending = pending.reshape(samples, -1).any(1)
                busy = pending if busy is None else busy | pending
                if busy.device.type == "cpu" and bool(busy.all()):  # no sample can be quiet: the other
                    break  # neurons need not be asked (on a GPU the check would cost a sync per neuron)
        return torch.ones(samples, dtype=torch.bool) if busy is None else ~busy


class ExitTrace:
    """What a run without exits shows of every sample at every step: its confidence, and its
    prediction (filled batch after batch with :meth:`add`)."""

    def __init__(self):
        self.confidences: list[torch.Tensor] = []  # per batch, [N, T]
        self.predictions: list[torch.Tensor] = []
        self.counted: list[torch.Tensor] = []  # whether a step counts towards stability
        self.silences: list[torch.Tensor] = []  # whether nothing is sent after a step (where quiet applies)
        self.labels: list[torch.Tensor] = []
        self.quiet_problems: list[str] = []  # why the quiet rule does not apply (set by the simulator)

    def add(self, confidences: torch.Tensor, predictions: torch.Tensor, counted: torch.Tensor,
            silences: torch.Tensor | None, labels: torch.Tensor) -> None:
        """One batch: ``[N, T]`` confidences, predictions, steps counted towards stability and
        quiet steps (None where the quiet rule does not apply), ``[N]`` labels."""
        self.confidences.append(confidences.cpu())
        self.predictions.append(predictions.cpu())
        self.counted.append(counted.cpu())
        if silences is not None:
            self.silences.append(silences.cpu())
        self.labels.append(labels.cpu())

    def state(self) -> dict[str, list[torch.Tensor]]:
        """What was traced so far (for a progress file)."""
        return {"confidences": list(self.confidences), "predictions": list(self.predictions),
                "counted": list(self.counted), "silences": list(self.silences), "labels": list(self.labels)}

    def load(self, state: dict[str, list[torch.Tensor]]) -> None:
        """Start from an earlier :meth:`state` (a resumed run)."""
        self.confidences, self.predictions = list(state["confidences"]), list(state["predictions"])
        self.counted, self.silences = list(state["counted"]), list(state["silences"])
        self.labels = list(state["labels"])


@dataclass
class ExitPoint:
    """What a rule gives: accuracy (%) at exit and the mean steps run per sample."""

    rule: ExitRule
    accuracy: float
    mean_steps: float


def unchanged_steps(unchanged: torch.Tensor, same: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """The steps a prediction has not changed for, after one more step: one more where it is the
    ``same`` as before and the step is ``counted`` (the output's first event has come), 0 where it
    changed, unchanged before the first event."""
    return torch.where(~counted, unchanged, torch.where(same, unchanged + 1, torch.zeros_like(unchanged)))


def exit_steps(rule: ExitRule, confidences: torch.Tensor, predictions: torch.Tensor, counted: torch.Tensor,
               silences: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample, the step (1-based) a rule stops it at, from ``[N, T]`` traces (T if never)."""
    timesteps = predictions.shape[1]
    if rule.kind == "quiet":
        holds = silences.clone()
    elif rule.kind == "confidence":
        holds = confidences >= rule.value
    else:
        same = torch.cat([torch.zeros_like(predictions[:, :1], dtype=torch.bool),
                          predictions[:, 1:] == predictions[:, :-1]], 1)
        run = torch.zeros_like(predictions[:, 0])
        holds = torch.zeros_like(same)
        for t in range(timesteps):
            run = unchanged_steps(run, same[:, t], counted[:, t])
            holds[:, t] = run >= rule.value
    holds[:, -1] = True
    return holds.int().argmax(1) + 1


def exit_curve(trace: ExitTrace, rules: list[ExitRule]) -> list[ExitPoint]:
    """Accuracy and mean steps of each rule, from a traced run (see the module docstring).

    Raises:
        ArgumentError: a ``quiet`` rule on a run it does not apply to (the reasons listed).
    """
    confidences, predictions = torch.cat(trace.confidences), torch.cat(trace.predictions)
    counted, labels = torch.cat(trace.counted), torch.cat(trace.labels)
    silences = torch.cat(trace.silences) if trace.silences else None
    if any(r.kind == "quiet" for r in rules) and silences is None:
        raise ArgumentError("the quiet exit is not exact on this model: " + "; ".join(trace.quiet_problems
                                                                                     or ["its neurons were not watched"]))
    points = []
    for rule in rules:
        steps = exit_steps(rule, confidences, predictions, counted, silences)
        final = predictions.gather(1, (steps - 1).unsqueeze(1)).squeeze(1)
        points.append(ExitPoint(rule, 100.0 * float((final == labels).double().mean()), float(steps.double().mean())))
    return points
