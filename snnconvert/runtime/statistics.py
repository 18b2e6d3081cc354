"""Spiking statistics, kept by each neuron in its own step (fused: no hooks, no host syncs).

A recording neuron adds, every step: the spikes it sent (per element too where the energy
accounting multiplies them by a fan-out map), and, with every metric on, the neuron-steps that
fired, those that ended with a negative potential, and the potential left over after firing.
Totals are float64 on the neuron's device, read once per batch: exact for counts below 2⁵³.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass
class LayerSpikes:
    """Spikes of one IF layer, summed over every step and sample it saw.

    Attributes:
        name: qualified module name.
        spikes: number of spikes sent (negative spikes and every spike of a burst included; spikes
            a random spike mask removes are not).
        neuron_steps: neurons × steps × samples (every chance to spike).
        firing: neuron-steps with at least one spike.
        negative: neuron-steps that ended with a negative membrane potential.
        residual: Σ of the potential over threshold left by firing, in θ, over the firing
            neuron-steps (kept by reset by subtraction, discarded by a hard reset).

    ``firing``, ``negative`` and ``residual`` (and what is computed from them) are None when
    they were not recorded (basic metrics).
    """

    name: str
    spikes: int
    neuron_steps: int
    firing: int | None = 0
    negative: int | None = 0
    residual: float | None = 0.0

    @property
    def rate(self) -> float:
        """Firing rate: spikes per neuron per step."""
        return self.spikes / max(1, self.neuron_steps)

    @property
    def spike_percent(self) -> float | None:
        """Percent of neuron-steps that fired (the survey's spike percent)."""
        return None if self.firing is None else 100.0 * self.firing / max(1, self.neuron_steps)

    @property
    def negative_percent(self) -> float | None:
        """Percent of neuron-steps ending with a negative potential (negative-potential percent)."""
        return None if self.negative is None else 100.0 * self.negative / max(1, self.neuron_steps)

    @property
    def mean_residual(self) -> float | None:
        """Mean potential left after firing, in units of θ (residual potential)."""
        return None if self.residual is None else self.residual / max(1, self.firing)


#: the per-layer totals, in :class:`LayerSpikes` field order
STATS = ("spikes", "neuron_steps", "firing", "negative", "residual")


#: what a simulation records: ``none``; ``basic``: spikes (per layer, and per element where the
#: energy accounting needs them); ``full``: also firing, negative and residual potential
METRICS = ("none", "basic", "full")

_EXACT = 2 ** 24  # a float32 sum of 0/1 values is exact below this many elements


class NeuronRecord:
    """Totals of one neuron layer since its last reset, added in the neuron's step.

    Per step it adds, as 0-d float64 totals: spikes sent, and with ``full`` the neuron-steps that
    fired (equal to the spikes for single-spike neurons), ended below zero, and the potential
    left by firing. Spikes are also kept per element (``counts``) when ``per_element``: what the
    energy accounting multiplies by a fan-out map. At each step in ``marks`` (the first always)
    it keeps the spikes sent so far: the ops that run for only the first k steps count those.

    Args:
        like: one step's potential (shape, dtype, device).
        single: at most one spike per element and step.
        per_element: keep ``counts`` per element.
        full: record firing, negative and residual potential too.
        threshold: θ, which divides the residual; a per-element θ (channel-wise) keeps the residual
            per element until the end.
        marks: the steps after which the spikes sent so far are kept.
    """

    def __init__(self, like: torch.Tensor, single: bool, per_element: bool, full: bool, threshold: torch.Tensor,
                 marks: Iterable[int] = (1,)):
        device, dtype = like.device, like.dtype
        self.single, self.full, self.threshold = single, full, threshold
        self.per_element_residual = full and threshold.numel() > 1
        self.counts = torch.zeros(like.shape, dtype=dtype, device=device) if per_element else None
        self.totals_now = torch.zeros(len(STATS), dtype=torch.float64, device=device)
        self.residual = torch.zeros(like.shape, dtype=dtype, device=device) if self.per_element_residual else None
        self.neuron_steps = 0
        self.steps = 0
        self.marks = {1, *marks}
        # at each mark: (counts, total, retired) as they were
        self._at: dict[int, tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]] = {}
        self._retired: torch.Tensor | None = None  # per element, Σ over samples that left (keep)
        self._scratch = torch.empty(like.shape, dtype=dtype, device=device) if full else None

    def add(self, sent: torch.Tensor, v: torch.Tensor, left: torch.Tensor | None = None) -> None:
        """One step: ``sent`` spikes per element (≥ 0, float), ``v`` the potential after the step,
        ``left`` the potential left by firing (default ``v``; a hard reset discards it)."""
        self.neuron_steps += v.numel()
        self.steps += 1
        totals = self.totals_now
        if self.counts is not None:
            self.counts.add_(sent)
        totals[0] += _count(sent) if self.single else sent.sum(dtype=torch.float64)  # bursts: not 0/1
        if self.steps in self.marks:
            self._at[self.steps] = (None if self.counts is None else self.counts.clone(), totals[0].clone(),
                                    None if self._retired is None else self._retired.clone())
        if not self.full:
            return
        fired = sent if self.single else torch.ne(sent, 0, out=self._scratch)
        left = v if left is None else left
        if self.per_element_residual:
            self.residual.addcmul_(left, fired)
        else:
            totals[4] += torch.dot(left.reshape(-1), fired.reshape(-1))
        if not self.single:
            totals[2] += _count(fired)
        totals[3] += _count(torch.lt(v, 0, out=self._scratch))

    def keep(self, mask: torch.Tensor) -> None:
        """Go on with the samples where ``mask`` (one bool per sample of the current batch) holds;
        the others' spikes and statistics stay in the totals."""
        current = next((t for t in (self.counts, self.residual, self._scratch) if t is not None), None)
        if current is None:  # only totals
            return
        kept = mask.to(current.device).repeat_interleave(len(current) // len(mask))
        rows = len(current) // len(mask)
        if self.counts is not None:
            gone = self.counts[~kept].reshape(-1, rows * self.counts[0].numel()).sum(0, dtype=torch.float64)
            self._retired = gone if self._retired is None else self._retired + gone
            self.counts = self.counts[kept]
        if self.residual is not None:
            self.totals_now[4] += (self.residual[~kept].double() / self.threshold.double()).sum()
            self.residual = self.residual[kept]
        if self._scratch is not None:
            self._scratch = self._scratch[: int(kept.sum())]

    def spike_counts(self, samples: int) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Spikes sent by ``samples`` samples, summed over them (float64): since the reset, and by
        the end of each mark (all of them for a mark not reached: nothing was sent after); per
        element of one sample with ``per_element``, else one-element totals."""
        if self.counts is None:
            total = self.totals_now[:1].clone()
            return total, {m: self._at[m][1].reshape(1).clone() if m in self._at else total for m in self.marks}
        per_sample = self._at[1][0].numel() // samples  # every sample took the first step

        def summed(counts: torch.Tensor, retired: torch.Tensor | None) -> torch.Tensor:
            counts = counts.reshape(-1, per_sample).sum(0, dtype=torch.float64)
            return counts if retired is None else counts + retired

        total = summed(self.counts, self._retired)
        return total, {m: summed(self._at[m][0], self._at[m][2]) if m in self._at else total for m in self.marks}

    def totals(self) -> torch.Tensor:
        """``[len(STATS)]`` float64 totals (θ divides the residual)."""
        threshold = self.threshold
        totals = self.totals_now.clone()
        totals[1] = float(self.neuron_steps)
        if self.single:
            totals[2] = totals[0] if self.full else 0.0
        if self.per_element_residual:
            totals[4] = (self.residual.double() / threshold.double()).sum()
        elif self.full:
            totals[4] /= float(threshold)
        return totals


class Recorder:
    """Something that sends spikes and keeps their statistics (a neuron, or a stand-in for an
    exported neuron): :meth:`start_recording` turns it on, and each step's :meth:`_record` adds to
    ``record``, a :class:`NeuronRecord` (None until the first step after a reset).

    Attributes:
        threshold: θ (divides the residual potential).
        single_spikes: at most one spike per element and step (firing equals spikes).
    """

    single_spikes = True
    recording = "none"  # one of METRICS
    per_element = False
    marks: frozenset[int] = frozenset({1})  # the steps after which the record keeps the spikes so far
    record: NeuronRecord | None = None
    threshold: torch.Tensor

    def start_recording(self, metrics: str = "basic", per_element: bool = False, marks: Iterable[int] = ()) -> None:
        """Record at least ``metrics`` (and spikes per element if ``per_element``, and the spikes
        sent by each of ``marks``) from the next step."""
        if metrics not in METRICS:
            raise ValueError(f"unknown metrics {metrics!r}; choose one of {', '.join(METRICS)}")
        self.recording = max(self.recording, metrics, key=METRICS.index)
        self.per_element = self.per_element or per_element
        self.marks = self.marks | set(marks)

    def stop_recording(self) -> None:
        self.recording, self.per_element, self.marks = "none", False, Recorder.marks

    def _record(self, sent: torch.Tensor, v: torch.Tensor, left: torch.Tensor | None = None) -> None:
        """Add one step to the record: ``sent`` spikes per element (≥ 0, float), ``v`` the potential
        after the step, ``left`` the potential left by firing (default ``v``)."""
        if self.record is None:
            self.record = NeuronRecord(v, self.single_spikes, self.per_element, self.recording == "full",
                                       self.threshold, self.marks)
        self.record.add(sent, v, left)


def _count(x: torch.Tensor) -> torch.Tensor:
    """Σ of a float tensor of small whole numbers, exactly."""
    return x.sum() if x.numel() < _EXACT else x.sum(dtype=torch.float64)


def layer_spikes(names: list[str], totals: torch.Tensor, full: bool = True) -> list[LayerSpikes]:
    """:class:`LayerSpikes` from ``[layers, len(STATS)]`` totals (``full``: firing, negative and
    residual potential were recorded)."""
    return [LayerSpikes(n, int(row[0]), int(row[1]), *((int(row[2]), int(row[3]), float(row[4])) if full
                                                       else (None, None, None)))
            for n, row in zip(names, totals.tolist())]
