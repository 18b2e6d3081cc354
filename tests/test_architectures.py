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
from snnconvert.convert import NeuronConfig, PrepareConfig, convert
from snnconvert.data import InputSpec
from snnconvert.model_zoo.coverage import ARCHITECTURES
from snnconvert.runtime import Execution, SimulationOptions, reset_states, simulate
from snnconvert.runtime.energy import OpAccounting

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

    if_snn = convert(model64)  # time batching and the folded input give every step's output unchanged
    for net in (if_snn, counted):
        single = _steps(net, x64, Execution(net, SimulationOptions(chunk=1), fold=False))
        assert torch.equal(_steps(net, x64, Execution(net, SimulationOptions(chunk=3))), single)

    snn32 = convert(model.float())
    assert OpAccounting(snn32).unaccounted == []  # every op of the graph is counted or free for a stated reason
    result = simulate(snn32, x[:4], y[:4], timesteps=3, chunk=2)  # input folded, 2 + 1 steps per call
    assert len(result.correct) == 3 and result.layers
    assert result.energy_per_sample_pj() > 0 and any(op.sops > 0 for op in result.ops)
    plain = simulate(snn32, x[:4], y[:4], timesteps=3, chunk=1, fold=False)
    assert (plain.correct, plain.layers, plain.ops) == (result.correct, result.layers, result.ops)


def _steps(snn, x, execution: Execution, timesteps: int = 5) -> torch.Tensor:
    """The outputs of ``timesteps`` steps, run as many at a time as ``execution`` says."""
    reset_states(snn)
    inputs, chunk, outputs = execution.inputs(x), execution.steps_per_call(x), []
    with torch.no_grad():
        while len(outputs) < timesteps:
            outputs.extend(execution.run(inputs, min(chunk, timesteps - len(outputs))))
    execution.close()
    return torch.stack(outputs)
