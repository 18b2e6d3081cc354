"""Spike counts of a model's event sources during a simulation (:class:`EventCounts`)."""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.runtime.statistics import NeuronRecord, Recorder


class EventCounts:
    """Spike counts of event sources while attached (a context manager): per element for the
    sources in ``mapped`` (default: all), whose fan-out differs between elements, otherwise one
    total per source; over all steps (``totals``) and by the end of each step in ``marks``
    (``at``). Neurons (any :class:`Recorder`) keep them in their step (their record); other
    sources (spike encoders, per-step max-pools of spikes, the probes of an event-driven run, whose
    ``events`` say what they saw sent) through a hook, which reads ``steps``
    time steps from each call (set by the simulator when it runs K steps per call).
    ``end_batch`` adds a batch's counts to the totals.

    Args:
        sources: the sources by name (a converted model's: ``OpTable.sources`` of its modules).
        mapped: the sources counted per element.
        marks: the steps by which the counts are kept too (``OpTable.marks``; the first always).
    """

    def __init__(self, sources: dict[str, nn.Module | Recorder], mapped: set[str] | None = None,
                 marks: set[int] = frozenset({1})):
        self.modules, self.mapped = sources, set(sources) if mapped is None else mapped
        self.marks = sorted({1, *marks})
        self.totals: dict[str, torch.Tensor] = {}
        self.at: dict[int, dict[str, torch.Tensor]] = {m: {} for m in self.marks}
        self._hooked: dict[str, NeuronRecord | None] = {}
        self._handles: list = []
        self.steps = 1

    def __enter__(self) -> EventCounts:
        for name, module in self.modules.items():
            if isinstance(module, Recorder):
                module.start_recording("basic", per_element=name in self.mapped, marks=self.marks)
            else:
                self._hooked[name] = None
                self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def record(module, _inputs, out: torch.Tensor) -> None:
            sent = module.events(out) if hasattr(module, "events") else (out != 0).to(torch.float32)
            for events in sent.unflatten(0, (self.steps, -1)):
                if self._hooked[name] is None:
                    self._hooked[name] = NeuronRecord(events, True, True, False, torch.ones(()), self.marks)
                self._hooked[name].add(events, events)
        return record

    def keep(self, mask: torch.Tensor) -> None:
        """Go on with the samples where ``mask`` holds (the hooked sources' counts; a neuron's
        record is shrunk with the neuron's state)."""
        for record in self._hooked.values():
            if record is not None:
                record.keep(mask)

    def __exit__(self, *exc) -> None:
        for module in self.modules.values():
            if isinstance(module, Recorder):
                module.stop_recording()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def record(self, name: str) -> NeuronRecord | None:
        """What source ``name`` recorded since its reset (None before its first step)."""
        module = self.modules[name]
        return module.record if isinstance(module, Recorder) else self._hooked[name]

    def end_batch(self, batch: int) -> None:
        """Add the batch's counts (``batch`` samples) to the totals and start the next batch."""
        for name in self.modules:
            record = self.record(name)
            if record is None:
                continue
            total, at = record.spike_counts(batch)
            for store, value in ((self.totals, total), *((self.at[m], at[m]) for m in self.marks)):
                store[name] = value if name not in store else store[name] + value
            if name in self._hooked:
                self._hooked[name] = None

    def state(self) -> dict:
        return {"totals": dict(self.totals), "at": {m: dict(c) for m, c in self.at.items()}}

    def load(self, state: dict) -> None:
        """Start from earlier totals (from :meth:`state`), e.g. a resumed run's."""
        self.totals, self.at = dict(state["totals"]), {m: dict(c) for m, c in state["at"].items()}

    def _stores(self) -> list[dict[str, torch.Tensor]]:
        return [self.totals, *(self.at[m] for m in self.marks)]

    def flat(self, names: list[str]) -> torch.Tensor:
        """Totals and counts by each mark of ``names`` as one vector (for summing over processes)."""
        return torch.cat([store[n] for n in names for store in self._stores()]) if names else torch.zeros(0)

    def unflat(self, names: list[str], vector: torch.Tensor) -> None:
        offset = 0
        for n in names:
            size = self.totals[n].numel()
            for store in self._stores():
                store[n] = vector[offset: offset + size]
                offset += size
