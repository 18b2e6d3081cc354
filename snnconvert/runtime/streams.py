"""What a value of a count-coded model sends at each step under event-driven execution.

Under count coding every value between neurons is a stream of increments (the image arrives once,
constants once, compensated ops emit ``g(S_t) − g(S_{t−1})``): an element whose increment is zero
sends nothing, and an op downstream does no work for it. A :class:`StreamProbe` watches one value
of the graph (an identity whose output nothing reads: it hangs off the node) and
:class:`~snnconvert.runtime.energy.EventCounts` counts, per step, the elements it saw sent (nonzero),
or the rows of the last dimension with any element sent (what a softmax over that dimension must
recompute). :func:`watching` hangs the probes an :class:`~snnconvert.runtime.energy.OpAccounting`
asks for onto the graph for the length of a run.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import fx, nn

from snnconvert.graph.ops import IDENTITY, register_module_kind

#: how a probe's source is named: ``PREFIX + node name`` (+ ``ROWS`` for a row probe)
PREFIX, ROWS = "sent__", "__rows"


def probe_name(node: fx.Node, rows: bool = False) -> str:
    return PREFIX + node.name + (ROWS if rows else "")


class StreamProbe(nn.Module):
    """Watches one value; :meth:`events` says what it sent at a step (1 per element, or per row of
    the last dimension with ``rows``, that is nonzero)."""

    def __init__(self, rows: bool = False):
        super().__init__()
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def events(self, x: torch.Tensor) -> torch.Tensor:
        sent = x != 0
        return (sent.any(-1) if self.rows else sent).to(torch.float32)

    def extra_repr(self) -> str:
        return "rows" if self.rows else "elements"


register_module_kind(StreamProbe, IDENTITY)


@contextmanager
def watching(gm: fx.GraphModule, streams: dict[str, tuple[fx.Node, bool]]) -> Iterator[dict[str, StreamProbe]]:
    """Hang a :class:`StreamProbe` named ``name`` off ``node`` for each ``name: (node, rows)`` of
    ``streams`` while the context lasts; yields the probes by name. Its forward hook is the
    probe's only effect: the model's outputs are untouched (nothing reads a probe's output)."""
    probes, added = {}, []
    try:
        for name, (node, rows) in streams.items():
            probes[name] = StreamProbe(rows)
            gm.add_submodule(name, probes[name])
            with gm.graph.inserting_after(node):
                added.append(gm.graph.call_module(name, (node,)))
        gm.recompile()
        yield probes
    finally:
        for node in added:
            gm.graph.erase_node(node)
        for name in probes:
            delattr(gm, name)
        gm.recompile()
