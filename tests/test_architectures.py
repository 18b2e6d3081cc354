"""Every architecture of the coverage list converts, and converts exactly.

With signed burst neurons the rate-coded SNN at step t computes its QCFS ANN with t levels on the
running means, so at t = L it *is* the QCFS ANN; the count-coded one (image and constants
presented once) is its QCFS ANN from t = 1 and sends nothing after: a check of tracing, every
rewrite, folding, constants, neurons and compensated operators together. In float64 they agree to
1e-9; the simulator runs the float32 SNN with every op accounted for.
"""
import pytest
import torch

from snnconvert.calibrate import CalibrationConfig
from snnconvert.convert import NeuronConfig, convert
from snnconvert.prepare import PrepareConfig, qcfs_modules
from snnconvert.data import InputSpec
from snnconvert.model_zoo.coverage import ARCHITECTURES
from snnconvert.runtime import Execution, SimulationOptions, reset_states, simulate
from snnconvert.runtime.energy import FOLDED_SCALING, EnergyCosts, OpAccounting, op_name
from snnconvert.runtime.streams import watching

from conftest import calibrated, images

LEVELS = 4


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=[a.name for a in ARCHITECTURES])
def test_signed_burst_snn_is_its_qcfs_ann_at_t_equals_levels(arch):
    spec = InputSpec(arch.input_size, (0.3,) * 3, (0.35,) * 3)
    x, y = images(spec, 16)
    model, report = calibrated(arch.build().eval(), x, PrepareConfig(levels=LEVELS),
                               CalibrationConfig("percentile", 99.9, "layer", 16))
    assert report.function_changes and not report.leaves
    model64 = model.double()
    snn = convert(model64, neuron="signed-burst-if")
    counted = convert(model64, neuron=NeuronConfig("signed-burst-if", coding="count"))
    x64 = x.double()
    with torch.no_grad():
        target = model64(x64)
        reset_states(snn)
        reset_states(counted)
        rate = sum(snn(x64) for _ in range(LEVELS)) / LEVELS
        first = counted(x64)
        count = first + counted(x64)
    tolerance = 1e-9 * max(1.0, target.abs().max().item())
    for total in (rate, first, count):
        assert (total - target).abs().max().item() <= tolerance

    # time batching and the folded input give every step's output unchanged. The claim is exactness
    # by construction, but a K-step call multiplies matrices of K times the rows, and a BLAS may
    # block those sums otherwise (seen on some CPUs, in float32): so the check runs in float64,
    # where such rounding is ~1e-16 and cannot move a spike, with a margin of 1e-12
    if_snn = convert(model64)
    for net in (if_snn, counted):
        single = _steps(net, x64, Execution(net, SimulationOptions(chunk=1, fold=False)))
        batched = _steps(net, x64, Execution(net, SimulationOptions(chunk=3)))
        assert (batched - single).abs().max() <= 1e-12 * max(1.0, single.abs().max().item())

    # event-driven (count coding): the watched run computes the same outputs, and no op costs more
    # than it does densely; after the first step nothing is sent, so the whole run costs less
    accounting = OpAccounting(counted, event_driven=True)
    with watching(counted, accounting.streams):
        watched = _steps(counted, x64, Execution(counted, SimulationOptions(chunk=1, fold=False)))
    assert torch.equal(watched, single)
    dense, driven = (simulate(counted, x64[:4], y[:4], timesteps=3, options=SimulationOptions(event_driven=e)) for e in (False, True))
    assert dense.correct == driven.correct
    dense_ops = {o.name: o for o in dense.ops}
    folded = set(accounting.free.get(FOLDED_SCALING, []))
    assert {o.name for o in driven.ops} | folded == set(dense_ops) and not folded & {o.name for o in driven.ops}
    costs = EnergyCosts()
    for b in driven.ops:  # a weight layer fed a mixed stream trades MACs for SOPs: compare energies
        a = dense_ops[b.name]
        assert costs.of(b.sops, b.macs, b.float_ops, b.adds) <= costs.of(a.sops, a.macs, a.float_ops, a.adds), (a, b)
    assert driven.energy_per_sample_pj() < dense.energy_per_sample_pj()
    result = simulate(if_snn, x64[:4], y[:4], timesteps=3, options=SimulationOptions(chunk=2))  # input folded, 2 + 1 steps per call
    plain = simulate(if_snn, x64[:4], y[:4], timesteps=3, options=SimulationOptions(chunk=1, fold=False))
    assert (plain.correct, plain.ops) == (result.correct, result.ops)  # counts of events: integers
    for a, b in zip(plain.layers, result.layers):
        assert (a.name, a.spikes, a.neuron_steps, a.firing, a.negative) == (b.name, b.spikes, b.neuron_steps,
                                                                            b.firing, b.negative)
        assert a.residual == pytest.approx(b.residual, rel=1e-12, abs=1e-12)  # a sum of potentials: rounding

    snn32 = convert(model.float())  # the simulator runs the float32 SNN with every op accounted for
    assert OpAccounting(snn32).unaccounted == []  # every op of the graph is counted or free for a stated reason
    result = simulate(snn32, x[:4], y[:4], timesteps=3, options=SimulationOptions(chunk=2))
    assert len(result.correct) == 3 and result.layers
    assert result.energy_per_sample_pj() > 0 and any(op.sops > 0 for op in result.ops)


def _steps(snn, x, execution: Execution, timesteps: int = 5) -> torch.Tensor:
    """The outputs of ``timesteps`` steps, run as many at a time as ``execution`` says."""
    reset_states(snn)
    inputs, chunk, outputs = execution.inputs(x), execution.steps_per_call(x), []
    with torch.no_grad():
        while len(outputs) < timesteps:
            outputs.extend(execution.run(inputs, min(chunk, timesteps - len(outputs))))
    execution.close()
    return torch.stack(outputs)


ROUTE = PrepareConfig(levels=LEVELS, spike_probabilities=None, spike_streams=None)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=[a.name for a in ARCHITECTURES])
def test_the_event_driven_routes_sites_keep_the_count_coded_snn_its_qcfs_ann(arch):
    """With signed sites on the real-valued streams into weight layers (and spiking attention
    probabilities) where the model has them, the count-coded burst SNN is still its QCFS ANN, and
    every layer such a site feeds runs on spikes alone: no MACs."""
    spec = InputSpec(arch.input_size, (0.3,) * 3, (0.35,) * 3)
    x, y = images(spec, 8)
    model, report = calibrated(arch.build().eval(), x, ROUTE, CalibrationConfig("percentile", 99.9, "layer", 8))
    streams = [path for path, site in qcfs_modules(model).items() if site.signed]
    assert bool(streams) != any("streams" in note for note in report.notes)  # added, or said why not
    model64 = model.double()
    counted = convert(model64, neuron=NeuronConfig("signed-burst-if", coding="count"))
    with torch.no_grad():
        target = model64(x.double())
        reset_states(counted)
        first = counted(x.double())
        total = first + counted(x.double())
    for out in (first, total):
        assert (out - target).abs().max().item() <= 1e-9 * max(1.0, target.abs().max().item())
    ops = {o.name: o for o in simulate(counted, x.double()[:4], y[:4], timesteps=2, options=SimulationOptions(event_driven=True)).ops}
    fed = [ops[op_name(user)] for node in counted.graph.nodes if node.target in streams for user in node.users]
    assert len(fed) >= len(streams) and all(op.macs == 0 for op in fed), fed
