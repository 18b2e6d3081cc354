"""What every op of a converted model costs per sample and step, and per event of each source it is
fed (:class:`OpTable`; :class:`~snnconvert.runtime.energy.analysis.OpAccounting` builds it from a
graph), and how a simulation's spike counts become per-op totals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from snnconvert.runtime.energy.costs import FIELDS, LayerOps


@dataclass
class Term:
    """Events of one source reaching one op: SOPs = Σ_i counts_i · fanout_i (a map or a number)."""

    source: str
    fanout: torch.Tensor | float
    after_first: bool = False  # only steps after the first (the ``A_{t−1}·b_t`` term)
    field: str = "sops"  # what each event costs (event-driven real values: macs, float_ops, adds)


@dataclass
class OpCost:
    """What one op costs per sample and step, beyond what its :class:`Term` s add per event."""

    name: str
    kind: str
    macs: float = 0.0       # per sample and step
    float_ops: float = 0.0
    adds: float = 0.0
    # what the first step does beyond its share of ``macs`` / ``float_ops`` (negative: what it skips;
    # event-driven: the first step computes every output, and a mixed stream's real part arrives)
    first_step_macs: float = 0.0
    first_step_float_ops: float = 0.0
    once: bool = False  # on values that are zero after the first step: counted for that step only
    until: int | None = None  # the steps it runs for (None: all)
    terms: list[Term] = field(default_factory=list)


class OpTable:
    """What every op of a converted model costs per sample and step, and per event of each source
    it is fed (:class:`OpAccounting` builds it from a graph); :meth:`results` turns a simulation's
    spike counts into per-op totals. It travels with an exported model (:meth:`to_dict`).

    Attributes:
        ops: per op, in graph order.
        sources: the event sources (module names) whose spikes the ops' SOPs count.
    """

    def __init__(self, ops: list[OpCost], sources: list[str]):
        self.ops, self.sources = ops, sources

    @property
    def marks(self) -> set[int]:
        """The steps by which the sources' spikes so far are needed: the first (the compensated
        products' ``b`` terms start after it), and each step after which some op stops."""
        return {1, *(op.until for op in self.ops if op.until is not None)}

    @property
    def mapped(self) -> set[str]:
        """Sources whose events reach some op through a fan-out that differs between elements
        (convolution edges): their spikes must be counted per element."""
        return {term.source for op in self.ops for term in op.terms if isinstance(term.fanout, torch.Tensor)}

    def results(self, counts: dict[str, torch.Tensor], at: dict[int, dict[str, torch.Tensor]], samples: int,
                sample_steps: dict[int | None, int]) -> list[LayerOps]:
        """Per-op totals of a simulation: ``counts`` / ``at[k]`` are each source's per-element spike
        counts over all steps / by the end of step k (each of :attr:`marks`), summed over the
        ``samples`` simulated; ``sample_steps[None]`` the steps they ran in all (``samples · T``,
        less where samples left early), ``sample_steps[k]`` the same with each counted up to k."""
        results = []
        for op in self.ops:
            sent = counts if op.until is None else at[op.until]
            driven = dict.fromkeys(FIELDS, 0.0)
            for term in op.terms:
                if term.source not in sent:
                    continue
                events = sent[term.source] - at[1][term.source] if term.after_first else sent[term.source]
                driven[term.field] += float((events.double() * term.fanout).sum()) \
                    if isinstance(term.fanout, torch.Tensor) else float(events.double().sum()) * term.fanout
            steps = samples if op.once else sample_steps[op.until]
            results.append(LayerOps(op.name, op.kind, round(driven["sops"]),
                                    round(steps * op.macs + samples * op.first_step_macs + driven["macs"]),
                                    round(steps * op.float_ops + samples * op.first_step_float_ops
                                          + driven["float_ops"]),
                                    round(steps * op.adds + driven["adds"]), op.once))
        return results

    def per_sample(self) -> list[LayerOps]:
        """Per-op counts of one forward (with ``dense=True``: the ANN's dense figure)."""
        return [LayerOps(op.name, op.kind, 0, op.macs, op.float_ops, op.adds, op.once) for op in self.ops]

    def to_dict(self) -> dict:
        """The table as JSON-able data (fan-out maps as lists)."""
        def term(t: Term) -> dict:
            fanout = t.fanout.tolist() if isinstance(t.fanout, torch.Tensor) else t.fanout
            return {"source": t.source, "fanout": fanout, "after_first": t.after_first, "field": t.field}
        return {"sources": list(self.sources),
                "ops": [{**{k: v for k, v in vars(op).items() if k != "terms"}, "terms": [term(t) for t in op.terms]}
                        for op in self.ops]}

    @classmethod
    def from_dict(cls, d: dict) -> OpTable:
        def term(t: dict) -> Term:
            fanout = t["fanout"]
            return Term(t["source"], torch.tensor(fanout, dtype=torch.float64) if isinstance(fanout, list)
                         else float(fanout), t["after_first"], t.get("field", "sops"))
        return cls([OpCost(**{**op, "terms": [term(t) for t in op["terms"]]}) for op in d["ops"]], list(d["sources"]))
