"""Low-T conversion without training: the calibration-only route, bias / potential corrections,
count coding and neurons with a spike budget."""
import copy

import pytest
import torch
from torch import nn

from snnconvert.calibrate import CalibrationConfig, CorrectionConfig, calibrate_thresholds, conversion_errors, correct
from snnconvert.convert import NeuronConfig, convert
from snnconvert.prepare import PrepareConfig, prepare, prepare_with_report
from snnconvert.prepare.rewrite import qcfs_modules
from snnconvert.errors import SnnConvertError
from snnconvert.runtime import Watch, reset_states, simulate
from snnconvert.runtime.neurons import IFNeuron, SignedIFNeuron

from conftest import SPEC_28, SPEC_32, calibrated, images, tiny_swin, tiny_timm_resnet, tiny_vit


def _one_relu_layer(x: torch.Tensor):
    """``relu(x)`` prepared (λ = max of x) and converted to one rate-coded IF layer with
    v(0) = 0, so the SNN floors where QCFS rounds: after T steps ``ŷ = floor(T·z/θ)·θ/T``."""
    prepared = prepare(nn.Sequential(nn.ReLU()), x[:2], PrepareConfig.calibration_only(8)).eval()
    calibrate_thresholds(prepared, [(x, None)], CalibrationConfig("max", num_samples=len(x)))
    snn = convert(prepared, "compensated", "if")
    (name,) = qcfs_modules(prepared)
    snn.get_submodule(name).initial_potential = torch.tensor(0.0)
    return prepared, snn, name


@pytest.mark.parametrize("method", ["bias", "potential"])
def test_correction_removes_the_mean_error_of_one_layer(method):
    """Inputs uniform on [0, 1), θ = 1, T = 4: flooring loses θ/(2T) = 0.125 on average; one
    correction finds μ = 0.125 and leaves no mean error (rounding is unbiased on a uniform input)."""
    T = 4
    x = (torch.arange(4096, dtype=torch.float32) / 4096).reshape(-1, 1)
    prepared, snn, name = _one_relu_layer(x)
    before = conversion_errors(snn, prepared, x, [T])[name][T]
    assert before.mean == pytest.approx(-0.125, abs=1e-3)
    mu = correct(snn, prepared, x, T, CorrectionConfig(method))[name]
    assert float(mu) == pytest.approx(0.125, abs=1e-3)
    after = conversion_errors(snn, prepared, x, [T])[name][T]
    assert abs(after.mean) < 1e-3 and after.rms < before.rms
    neuron = snn.get_submodule(name)
    if method == "bias":
        assert float(neuron.bias) == pytest.approx(0.125, abs=1e-3)
    else:  # the same shift as T·μ of initial potential
        assert float(neuron.initial_potential * neuron.threshold) == pytest.approx(T * 0.125, abs=4e-3)


def test_layers_are_corrected_on_the_spikes_of_the_corrected_layers_before_them():
    """Two layers, channel-wise, v(0) = 0 (a flooring bias at both): after correction the second
    layer's mean error is gone too, measured on the SNN's own first-layer spikes."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU())
    x = torch.rand(512, 6)
    prepared = prepare(model, x[:2], PrepareConfig.calibration_only(8)).eval()
    calibrate_thresholds(prepared, [(x, None)], CalibrationConfig("max", granularity="channel", num_samples=512))
    snn = convert(prepared, "compensated", "if")
    for name in ("1", "3"):
        snn.get_submodule(name).initial_potential = torch.tensor(0.0)
    T = 3
    errors_before = conversion_errors(snn, prepared, x, [T])
    mu = correct(snn, prepared, x, T, CorrectionConfig("bias", 3))
    assert {name: tuple(m.shape) for name, m in mu.items()} == {"1": (8,), "3": (5,)}
    errors_after = conversion_errors(snn, prepared, x, [T])
    for name in ("1", "3"):
        assert abs(errors_after[name][T].mean) < 0.2 * abs(errors_before[name][T].mean)


def test_relu6_cap_is_kept_by_the_calibration_only_route():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    x = torch.randn(16, 1, 28, 28) * 20  # pre-activations far above 6
    prepared, report = prepare_with_report(model, x[:2], PrepareConfig.calibration_only(8))
    for method in ("max", "percentile", "mse"):
        calibrate_thresholds(prepared, [(x, None)], CalibrationConfig(method, granularity="channel", num_samples=16))
        site = qcfs_modules(prepared)["1"]
        assert site.cap == 6.0 and float(site.effective_threshold().detach().max()) <= 6.0
    snn = convert(prepared.eval(), "compensated", "signed-if")
    neuron = snn.get_submodule("1")
    assert float(neuron.threshold.max()) <= 6.0
    out = torch.zeros(1, 4, 26, 26)
    reset_states(snn)
    for _ in range(16):
        out += neuron(torch.full((1, 4, 26, 26), 50.0))
    assert float((out / 16).max()) <= 6.0  # never above the cap, however large the input


def test_pretrained_batchnorm_statistics_are_untouched_by_the_calibration_only_route(tmp_path):
    from snnconvert import workflow
    from snnconvert.model_zoo import build_ann, get_recipe

    recipe = get_recipe("resnet_nano")
    ann = build_ann(recipe)
    for m in ann.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    stats = {k: v.clone() for k, v in ann.state_dict().items() if "running" in k}
    torch.save(ann.state_dict(), tmp_path / "ann.pth")  # a pretrained ANN as users have it
    loaded = workflow.load("resnet_nano", str(tmp_path / "ann.pth"))
    prepared, config, record = workflow.ensure_prepared(
        loaded, "embedded", CalibrationConfig("percentile", 99.9, num_samples=64), "cpu", False,
        PrepareConfig.calibration_only(recipe.levels))
    kept = {k: v for k, v in prepared.state_dict().items() if "running" in k}
    assert kept.keys() == stats.keys()
    assert all(torch.equal(kept[k], stats[k]) for k in stats)
    assert config.layernorm == "keep" and record["changes"]


@pytest.mark.parametrize("family", ["swin", "vit", "resnet"])
def test_count_coding_with_bursts_is_its_qcfs_ann_from_the_first_step(family):
    """Count coding presents the image and every constant once; signed neurons with no spike
    bound then send their whole count at once: the SNN's total is the QCFS ANN at t = 1 and
    stays so (later steps send nothing)."""
    model, spec = {"swin": (tiny_swin, SPEC_32), "vit": (tiny_vit, SPEC_28),
                   "resnet": (tiny_timm_resnet, SPEC_32)}[family]
    x, _ = images(spec, 8)
    prepared, _ = calibrated(model(), x)
    prepared, x = prepared.double(), x.double()
    snn = convert(prepared, "compensated", NeuronConfig("signed-burst-if", coding="count"))
    with torch.no_grad():
        want = prepared(x)
        reset_states(snn)
        total = snn(x)
        assert torch.allclose(total, want, atol=1e-9, rtol=1e-9)
        for _ in range(2):
            total = total + snn(x)
        assert torch.allclose(total, want, atol=1e-9, rtol=1e-9)


def test_count_coding_with_single_spikes_reaches_its_qcfs_ann():
    x, _ = images(SPEC_28, 8)
    prepared, _ = calibrated(tiny_vit(), x, PrepareConfig(levels=4))
    prepared, x = prepared.double(), x.double()
    snn = convert(prepared, "compensated", NeuronConfig("signed-if", max_spikes=1, coding="count"))
    with torch.no_grad():
        want, total = prepared(x), 0
        reset_states(snn)
        errors = []
        for _ in range(48):
            total = total + snn(x)
            errors.append(float((total - want).abs().max()))
    assert errors[0] > 1e-3 and errors[-1] < 1e-9  # one spike a step: the counts take a few steps


def test_a_step_fires_at_most_k_spikes_and_each_is_counted():
    neuron = IFNeuron(torch.tensor(1.0), max_spikes=2)
    neuron.start_recording("basic", per_element=True)
    out = [float(neuron(torch.tensor([z]))) for z in (0.0, 0.0, 5.0, 5.0, 5.0)]
    assert out == [0.0, 0.0, 2.0, 2.0, 1.0]  # rate coding: at most t net spikes by step t, 2 a step
    assert float(neuron.record.counts) == 5.0  # a burst of two is two events
    signed = SignedIFNeuron(torch.tensor(1.0), max_spikes=1, levels=4)
    steps = [float(signed(torch.tensor([z]))) for z in (3.0, 0.0, 0.0, 0.0, -3.0, 0.0)]
    assert steps == [1.0, 1.0, 1.0, 0.0, -1.0, -1.0]  # count coding: one spike a step, towards round(S/θ)


def test_spikes_and_energy_count_k_per_burst():
    x, _ = images(SPEC_28, 4)
    prepared, _ = calibrated(tiny_vit(), x)
    labels = torch.zeros(len(x), dtype=torch.long)
    single = simulate(convert(prepared, "compensated", NeuronConfig("signed-if", 1)), x, labels, timesteps=4)
    burst = simulate(convert(prepared, "compensated", NeuronConfig("signed-if", 3)), x, labels, timesteps=4)
    assert burst.spikes_per_sample > single.spikes_per_sample  # several spikes a step are several events
    sops = {o.name: o.sops for o in burst.ops}
    assert sum(sops.values()) > sum(o.sops for o in single.ops)


def test_either_coding_counts_the_input_layer_once():
    x, _ = images(SPEC_28, 4)
    prepared, _ = calibrated(tiny_vit(), x)
    labels = torch.zeros(len(x), dtype=torch.long)
    steps = 3
    rate = {o.name: o for o in simulate(convert(prepared), x, labels, timesteps=steps).ops}
    count = {o.name: o for o in simulate(convert(prepared, "compensated", NeuronConfig(coding="count")), x, labels,
                                         timesteps=steps).ops}
    per_step = 4 * 16 * 24 * 49  # images × patches × embed × patch pixels
    # count coding presents the image once; rate coding's is the same every step, computed once per batch
    assert rate["patch_embed.proj"].macs == per_step and count["patch_embed.proj"].macs == per_step


def test_simulation_reports_agreement_with_a_reference():
    x, y = images(SPEC_28, 16)
    prepared, _ = calibrated(tiny_vit(), x)
    snn = convert(prepared, "compensated", NeuronConfig("signed-burst-if", coding="count"))
    result = simulate(snn, x, y, timesteps=2, watch=Watch(reference=prepared))
    assert result.agreement == [100.0, 100.0]
    shifted = copy.deepcopy(prepared)
    with torch.no_grad():
        shifted.head.bias.add_(torch.arange(10.0) * 100)  # always predicts class 9
    expected = 100 * float((prepared(x).argmax(1) == 9).float().mean())
    assert simulate(snn, x, y, timesteps=1, watch=Watch(reference=shifted)).agreement == [pytest.approx(expected)]


def test_converted_checkpoint_with_count_coding_and_corrections_reloads_identically(tmp_path):
    from snnconvert import workflow

    loaded = workflow.load("vit_nano", None)  # the shipped, QCFS-trained ViT
    prepared = loaded.model.eval()
    x, _ = images(SPEC_28, 32)
    neuron = NeuronConfig("signed-if", 1, "count")
    snn = convert(prepared, "compensated", neuron)
    record = workflow.calibrate_snn(snn, prepared, x, 8, CorrectionConfig("potential"), [8], "qcfs")
    assert [site["correction"] is not None for site in record["sites"]] == [True] * len(record["sites"])
    path = tmp_path / "snn.pt"
    workflow.save_converted(path, snn, loaded.recipe, loaded.prepare_config, "compensated", neuron, record)
    loaded = workflow.load_snn("vit_nano", str(path), "compensated", NeuronConfig())
    again = loaded.snn
    assert loaded.neuron == neuron.describe()
    with torch.no_grad():
        for model in (snn, again):
            reset_states(model)
        for _ in range(3):
            assert torch.equal(snn(x), again(x))


def test_count_coding_refuses_the_mst_mode_and_bad_neuron_options():
    x, _ = images(SPEC_28, 4)
    prepared, _ = calibrated(tiny_vit(), x)
    with pytest.raises(SnnConvertError, match="count"):
        convert(prepared, "mst", NeuronConfig(coding="count"))
    with pytest.raises(SnnConvertError, match="coding"):
        NeuronConfig(coding="phase")
    with pytest.raises(SnnConvertError, match="max_spikes"):
        NeuronConfig(max_spikes=0)
    with pytest.raises(SnnConvertError, match="correction"):
        correct(convert(prepared), prepared, x, 4, CorrectionConfig("weights"))
