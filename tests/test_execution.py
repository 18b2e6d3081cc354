"""How the simulator runs a model: metrics kept in the neurons' step, the input folded, K steps per call."""
import copy

import pytest
import torch
from torch import nn

from snnconvert.calibrate import CalibrationConfig
from snnconvert.convert import NeuronConfig, convert
from snnconvert.prepare import MaskConfig, PrepareConfig, add_spike_masks
from snnconvert.direct import make_node
from snnconvert.graph.events import INPUT, classify
from snnconvert.runtime import Execution, IFNeuron, SimulationOptions, SpikeMonitor, reset_states, simulate
from snnconvert.runtime.energy import OpAccounting
from snnconvert.runtime.execution import split_input
from snnconvert.runtime.neurons import SpikingNeuron

from conftest import SPEC_28, SPEC_32, calibrated, images, tiny_timm_resnet, tiny_vit


class _HookMonitor:
    """The statistics as forward hooks computed them before they moved into the neurons' step:
    the oracle the fused metrics must equal."""

    def __init__(self, model: nn.Module):
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, SpikingNeuron)}
        self.totals = {n: torch.zeros(5, dtype=torch.float64) for n in self.layers}
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]

    def _hook(self, name):
        def record(module, inputs, out):
            theta, fired = module.threshold, out != 0
            step = torch.stack([(out / theta).abs().sum().round().double(),
                                torch.tensor(float(out.numel()), dtype=torch.float64), fired.sum().double(),
                                (module.v < 0).sum().double(), ((module.v / theta) * fired).sum().double()])
            self.totals[name] += step
        return record

    def remove(self):
        for h in self.handles:
            h.remove()


def _prepared(model, spec, n=16, granularity="layer"):
    x, y = images(spec, n)
    prepared, _ = calibrated(model.eval(), x, PrepareConfig(),
                             CalibrationConfig("percentile", 99.9, granularity, n))
    return prepared, x, y


@pytest.mark.parametrize("neuron,granularity,masked", [
    ("if", "layer", False), ("if", "channel", False), ("if", "layer", True), ("signed-if", "layer", False),
    (NeuronConfig("signed-if", max_spikes=2), "channel", False), (NeuronConfig("if", coding="count"), "layer", False)])
def test_fused_metrics_equal_the_hook_based_ones(neuron, granularity, masked):
    prepared, x, _ = _prepared(tiny_vit(), SPEC_28, granularity=granularity)
    if masked:
        add_spike_masks(prepared, MaskConfig({"q": 0.5, "mlp": 0.5}, seed=3))
    snn = convert(prepared, neuron=neuron)
    assert any(m.threshold.numel() > 1 for m in snn.modules() if isinstance(m, IFNeuron)) == (granularity == "channel")
    reset_states(snn)
    oracle = _HookMonitor(snn)
    with SpikeMonitor(snn) as fused, torch.no_grad():
        for _ in range(6):
            snn(x)
    oracle.remove()
    layers = fused.results()
    assert len(layers) == len(oracle.totals) > 10
    for layer in layers:
        want = oracle.totals[layer.name]
        assert (layer.spikes, layer.neuron_steps, layer.firing, layer.negative) == tuple(int(v) for v in want[:4])
        assert layer.residual == pytest.approx(float(want[4]), rel=1e-5, abs=1e-3)
    assert sum(layer.negative for layer in layers) > 0 and sum(layer.firing for layer in layers) > 0


def test_direct_training_neurons_record_what_a_hard_reset_discards():
    lif = make_node("lif", tau=2.0)  # H = 0.75, then 1.125: fires, the 0.125 over θ is discarded by the reset
    with SpikeMonitor(lif) as monitor:
        for value in (1.5, 1.5):
            lif(torch.tensor([value]))
    (layer,) = monitor.results()
    assert (layer.spikes, layer.firing, layer.negative) == (1, 1, 0) and layer.mean_residual == pytest.approx(0.125)


def test_basic_metrics_count_the_same_spikes_and_say_what_they_left_out():
    prepared, x, y = _prepared(tiny_vit(), SPEC_28)
    snn = convert(prepared)
    full, basic = simulate(snn, x, y, timesteps=5), simulate(snn, x, y, timesteps=5, options=SimulationOptions(metrics="basic"))
    assert [l.spikes for l in full.layers] == [l.spikes for l in basic.layers] and full.ops == basic.ops
    assert all(l.spike_percent is None and l.negative_percent is None and l.mean_residual is None
               for l in basic.layers)
    assert all(l.spike_percent is not None for l in full.layers)
    with pytest.raises(ValueError, match="basic' or 'full"):
        simulate(snn, x, y, timesteps=2, options=SimulationOptions(metrics="none"))  # spikes are always counted (the energy needs them)


def test_the_input_is_folded_up_to_the_first_neurons_and_counted_once():
    prepared, x, y = _prepared(tiny_timm_resnet(), SPEC_32, n=8)
    snn = convert(prepared)
    prefix, step = split_input(snn)
    folded = {n.target for n in prefix.graph.nodes if n.op == "call_module"}
    assert "conv1" in folded and not any(isinstance(snn.get_submodule(t), SpikingNeuron) for t in folded)
    classes, _ = classify(snn)
    stem = next(n for n in snn.graph.nodes if n.target == "conv1")
    assert classes[stem] == INPUT
    with torch.no_grad():  # the same outputs, step by step
        reset_states(snn)
        plain = [snn(x) for _ in range(4)]
        reset_states(snn)
        values = prefix(x)
        again = [step(*values) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(plain, again))
    T = 6
    result = simulate(snn, x, y, timesteps=T)
    stem_ops = {o.name: o for o in result.ops}["conv1"]
    per_sample = {o.name: o for o in OpAccounting(snn).per_sample()}["conv1"].macs
    assert stem_ops.macs == len(x) * per_sample  # once per image, not T times
    unfolded = simulate(snn, x, y, timesteps=T, options=SimulationOptions(fold=False, chunk=1))
    assert unfolded.correct == result.correct and unfolded.layers == result.layers


def test_time_batched_runs_equal_single_steps_with_masks_and_a_ragged_last_chunk():
    prepared, x, y = _prepared(tiny_vit(), SPEC_28, n=24)
    add_spike_masks(prepared, MaskConfig({"q": 0.5, "attn": 0.25, "mlp": 0.5}, seed=1))
    snn = convert(prepared)
    single = simulate(snn, [(x[:12], y[:12]), (x[12:], y[12:])], timesteps=7, options=SimulationOptions(chunk=1, fold=False))
    for chunk in (3, 7, 16):
        batched = simulate(snn, [(x[:12], y[:12]), (x[12:], y[12:])], timesteps=7, options=SimulationOptions(chunk=chunk))
        assert (batched.correct, batched.layers, batched.ops) == (single.correct, single.layers, single.ops)
    assert all(m.steps == 1 for m in snn.modules() if hasattr(m, "steps"))  # back to single steps after


def test_direct_training_models_run_time_batched():
    import timm
    from snnconvert.direct import DirectConfig, SpikingClassifier, make_encoder
    config = DirectConfig(neuron="lif", encoding="rate", timesteps=4)
    net = timm.create_model("spikformer_nano", img_size=28, in_chans=1, num_classes=10, embed_dim=32, depth=1,
                            **config.neuron_args())
    model = SpikingClassifier(net, make_encoder(config.encoding, config.timesteps), config.timesteps).eval()
    x, y = images(SPEC_28, 8)
    torch.manual_seed(1)  # the rate encoder draws from the global generator, step after step
    single = simulate(model.stepper(), x, y, timesteps=5, options=SimulationOptions(chunk=1))
    torch.manual_seed(1)
    batched = simulate(model.stepper(), x, y, timesteps=5, options=SimulationOptions(chunk=2))
    assert (batched.correct, batched.layers, batched.ops) == (single.correct, single.layers, single.ops)
    assert any(o.sops > 0 for o in batched.ops)  # the rate encoder's spikes are counted through its hook


def test_half_precision_keeps_membranes_and_totals_in_float32():
    prepared, x, y = _prepared(tiny_vit(), SPEC_28)
    snn = convert(prepared)
    execution = Execution(snn, SimulationOptions(chunk=2, precision="bf16"))
    reset_states(snn)
    with torch.no_grad():
        out = execution.run(execution.inputs(x), 2)
    execution.close()
    assert out.dtype == torch.float32 and out.shape[:2] == (2, len(x))
    neurons = [m for m in snn.modules() if isinstance(m, IFNeuron)]
    assert all(m.v.dtype == torch.float32 for m in neurons)
    compensated = [m for m in snn.modules() if hasattr(m, "sum") and isinstance(m.sum, list)]
    assert compensated and all(s.dtype == torch.float32 for m in compensated for s in m.sum)
    fp32, bf16 = simulate(snn, x, y, timesteps=8), simulate(snn, x, y, timesteps=8, options=SimulationOptions(precision="bf16"))
    assert abs(fp32.accuracy[-1] - bf16.accuracy[-1]) <= 25.0 and bf16.spikes_per_sample > 0
    with pytest.raises(ValueError, match="unknown precision"):
        SimulationOptions(precision="int8")


def test_compiled_step_graph_gives_the_same_result():
    prepared, x, y = _prepared(tiny_vit(), SPEC_28, n=8)
    snn = convert(prepared)
    plain = simulate(snn, x, y, timesteps=3, options=SimulationOptions(chunk=1))
    compiled = simulate(copy.deepcopy(snn), x, y, timesteps=3, options=SimulationOptions(chunk=1, compile="eager"))
    assert compiled.correct == plain.correct and [l.spikes for l in compiled.layers] == [l.spikes for l in plain.layers]


def test_silent_layers_do_not_run_and_every_step_is_unchanged(monkeypatch):
    """Count coding strips the weight layers' biases: a layer fed only zeros at a step sends zeros,
    so within an Execution it does not run then; what every step computes is the same."""
    x, _ = images(SPEC_28, 8)
    model, _ = calibrated(tiny_vit(), x)
    snn = convert(model, neuron=NeuronConfig("signed-burst-if", coding="count"))  # silent after step 1
    calls = []
    linear = nn.Linear.forward
    monkeypatch.setattr(nn.Linear, "forward", lambda self, v: calls.append(self) or linear(self, v))

    def steps(skip: bool) -> torch.Tensor:
        calls.clear()
        reset_states(snn)
        with Execution(snn, SimulationOptions(chunk=1, skip_silent=skip)) as execution:
            inputs = execution.inputs(x)
            return torch.stack([execution.run(inputs, 1) for _ in range(4)])

    plain, plain_calls = steps(False), len(calls)
    skipped, skipped_calls = steps(True), len(calls)
    assert torch.equal(plain, skipped)
    layers = sum(isinstance(m, nn.Linear) for m in snn.modules())
    assert plain_calls == 4 * layers and skipped_calls < plain_calls  # the silent steps did not run them
    assert all("forward" not in vars(m) for m in snn.modules())  # the model as it was after the context
