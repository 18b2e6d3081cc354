"""Simulator: one pass gives accuracy at every t, spike counts are exact, memory does not grow with T."""
import pytest
import torch
from torch import nn

from snnconvert.convert import convert
from snnconvert.prepare import prepare
from snnconvert.prepare.qcfs import QCFS
from snnconvert.checkpoint import Job
from snnconvert.runtime import IFNeuron, SpikeMonitor, simulate
from snnconvert.runtime.operators import ExpectationCompensated

from conftest import DiesAfter, images, tiny_vit, SPEC_28


def _tiny_snn():
    model = prepare(tiny_vit(), images(SPEC_28, 2)[0]).eval()
    for m in model.modules():
        if isinstance(m, QCFS):
            m.threshold.data.fill_(0.5)
    return convert(model)


def test_accuracy_per_step_matches_separate_runs():
    snn = _tiny_snn()
    x, y = images(SPEC_28, 32)
    result = simulate(snn, x, y, timesteps=12)
    assert len(result.accuracy) == 12 and result.samples == 32
    for t in (1, 5, 12):
        alone = simulate(snn, x, y, timesteps=t)
        assert alone.accuracy_at(t) == result.accuracy_at(t)


def test_dataloader_and_tensor_inputs_agree():
    snn = _tiny_snn()
    x, y = images(SPEC_28, 40)
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    assert simulate(snn, batches, timesteps=6).correct == simulate(snn, x, y, timesteps=6).correct


def test_spike_counts_are_exact():
    snn = _tiny_snn()
    x, y = images(SPEC_28, 8)
    counted = {}

    def count(name):
        def hook(_m, _i, out):
            counted[name] = counted.get(name, 0) + int((out != 0).sum())
        return hook

    for name, m in snn.named_modules():
        if isinstance(m, IFNeuron):
            m.register_forward_hook(count(name))
    result = simulate(snn, x, y, timesteps=5)
    assert {layer.name: layer.spikes for layer in result.layers} == counted
    assert result.spikes_per_sample == pytest.approx(sum(counted.values()) / 8)
    assert all(0 <= layer.rate <= 1 for layer in result.layers)


def _state_elements(snn: nn.Module) -> int:
    n = 0
    for m in snn.modules():
        if isinstance(m, IFNeuron) and m.v is not None:
            n += m.v.numel()
        if isinstance(m, ExpectationCompensated) and m.sum is not None:
            n += sum(s.numel() for s in m.sum) + m.previous.numel()
    return n


def test_state_does_not_grow_with_t():
    snn = _tiny_snn()
    x, _ = images(SPEC_28, 4)
    sizes = []
    with torch.no_grad():
        for t in range(1, 65):
            snn(x)
            if t in (2, 64):
                sizes.append(_state_elements(snn))
    assert sizes[0] == sizes[1] > 0


def test_wrong_input_shape_is_named():
    snn = _tiny_snn()
    with pytest.raises(ValueError, match=r"expects \[N, 1, 28, 28\]"):
        simulate(snn, torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), timesteps=2)  # its meta's shape


def test_monitor_detaches():
    snn = _tiny_snn()
    x, _ = images(SPEC_28, 2)
    with SpikeMonitor(snn) as monitor:
        snn(x)
    assert all(not m._forward_hooks for m in snn.modules() if isinstance(m, IFNeuron))
    assert monitor.results()[0].neuron_steps > 0


def test_monitor_counts_every_spike_of_a_burst():
    from snnconvert.runtime import NEURONS

    net = nn.Sequential(NEURONS["signed-burst-if"](torch.tensor([0.5, 2.0])))
    with SpikeMonitor(net) as monitor:
        # v(0) = θ/2; net count capped at t
        net(torch.tensor([[1.8, 4.5]]))   # t = 1: v = 2.05, 5.5 → one spike each (cap 1)
        net(torch.tensor([[0.9, 9.0]]))   # t = 2: v = 2.45 → +1 (cap 2); v = 12.5 → +1
        net(torch.tensor([[-3.0, 0.0]]))  # t = 3: v = −1.05 → −2 (a burst back, all it has); v = 10.5 → +1
    (layer,) = monitor.results()
    assert layer.spikes == 2 + 2 + 3


def test_interrupted_simulation_resumes_to_the_same_result(tmp_path):
    from snnconvert.errors import CheckpointError

    snn = _tiny_snn()
    x, y = images(SPEC_28, 48)
    batches = list(zip(x.split(16), y.split(16)))
    whole = simulate(snn, batches, timesteps=6)

    progress = tmp_path / "sim.progress.pt"
    with pytest.raises(KeyboardInterrupt):
        simulate(snn, DiesAfter(batches, 2), timesteps=6, job=Job(checkpoint=progress))
    resumed = simulate(snn, batches, timesteps=6, job=Job(checkpoint=progress))
    assert resumed.resumed_from_batch == 2 and whole.resumed_from_batch is None
    assert resumed.correct == whole.correct and resumed.samples == 48
    assert [(l.spikes, l.neuron_steps) for l in resumed.layers] == [(l.spikes, l.neuron_steps) for l in whole.layers]
    with pytest.raises(CheckpointError, match="another simulation"):
        simulate(snn, batches, timesteps=7, job=Job(checkpoint=progress))
    with pytest.raises(CheckpointError, match="another simulation"):
        simulate(snn, batches[:2], timesteps=6, job=Job(checkpoint=progress))
    with pytest.raises(CheckpointError, match="another simulation"):
        simulate(_tiny_snn(), batches, timesteps=6, job=Job(checkpoint=progress))  # other weights


def test_spiking_metrics_by_hand():
    """θ = 1, v(0) = 0.5, inputs 0.7, −1.0, 0.2: fires at step 1 leaving 0.2, then ends two steps negative."""
    neuron = IFNeuron(1.0, initial_potential=0.5)
    with SpikeMonitor(neuron) as monitor:
        for x in (0.7, -1.0, 0.2):
            neuron(torch.tensor([x]))
    (layer,) = monitor.results()
    assert (layer.spikes, layer.neuron_steps, layer.firing, layer.negative) == (1, 3, 1, 2)
    assert layer.mean_residual == pytest.approx(0.2) and layer.negative_percent == pytest.approx(200 / 3)
    assert layer.spike_percent == pytest.approx(100 / 3)
