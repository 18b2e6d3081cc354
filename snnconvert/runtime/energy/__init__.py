"""Operations and energy of a converted model, by concern:

* :mod:`~snnconvert.runtime.energy.costs`: the cost model (energy per operation) and the record of
  what one op did;
* :mod:`~snnconvert.runtime.energy.analysis`: the static analysis of a graph (what every op costs
  per step and per event of each source: :class:`OpAccounting`, the accounting rules);
* :mod:`~snnconvert.runtime.energy.table`: the resulting table, which travels with an exported
  model and turns spike counts into per-op totals;
* :mod:`~snnconvert.runtime.energy.counts`: the spike counts of a run (:class:`EventCounts`);
* :mod:`~snnconvert.runtime.energy.conventions`: a run's energy under each convention, beside the
  ANN's and the quantized twin's.
"""
from snnconvert.runtime.energy.analysis import FOLDED_SCALING, OpAccounting, op_name
from snnconvert.runtime.energy.costs import FIELDS, EnergyCosts, LayerOps
from snnconvert.runtime.energy.counts import EventCounts
from snnconvert.runtime.energy.table import OpTable

__all__ = ["FIELDS", "FOLDED_SCALING", "EnergyCosts", "EventCounts", "LayerOps", "OpAccounting", "OpTable", "op_name"]
