"""prepare(): the traced graph, where QCFS goes, what changes and what is refused."""
import pytest
import timm
import torch
from torch import nn

from snnconvert.calibrate import CalibrationConfig, CorrectionConfig
from snnconvert.convert import NeuronConfig, convert
from snnconvert.prepare import (ChannelBatchNorm, PrepareConfig, change_effects, prepare, prepare_with_report,
                                qcfs_modules)
from snnconvert.errors import SnnConvertError, UnsupportedLayersError
from snnconvert.graph.trace import trace
from snnconvert.runtime import simulate

from conftest import SPEC_28, SPEC_32, calibrated, images, tiny_swin, tiny_timm_resnet, tiny_vit


def test_transformer_sites_follow_mst():
    x, _ = images(SPEC_32, 2)
    prepared, report = prepare_with_report(tiny_swin(), x)
    roles = {name: q.role for name, q in qcfs_modules(prepared).items()}
    block = "layers.0.blocks.1"
    expected = {"norm1_act": "norm", "norm2_act": "norm", "attn.q_act": "q", "attn.k_act": "k", "attn.v_act": "v",
                "attn.attn_act": "scores", "attn.out_act": "attention", "attn.proj_act": "projection",
                "mlp.act": "activation", "mlp.fc2_act": "projection"}
    assert {k: roles[f"{block}.{k}"] for k in expected} == expected
    assert roles["layers.1.downsample.reduction_act"] == "projection"
    assert len(roles) == 41  # 4 blocks × 10 sites + one after patch merging, as the MST reference model
    assert isinstance(prepared.get_submodule(f"{block}.norm1"), ChannelBatchNorm)
    assert qcfs_modules(prepared)[f"{block}.attn.out_act"].channel_axis == -1  # after the head merge
    assert [c.what for c in report.function_changes] == ["LayerNorm → BatchNorm", "gelu → QCFS",
                                                         "QCFS inserted (MST sites)"]


def test_activation_policy_puts_qcfs_only_where_the_ann_has_activations():
    x, _ = images(SPEC_28, 2)
    prepared = prepare(tiny_vit(), x, PrepareConfig(sites="activations", layernorm="keep"))
    assert set(qcfs_modules(prepared)) == {"blocks.0.mlp.act", "blocks.1.mlp.act"}
    assert not any(isinstance(m, ChannelBatchNorm) for m in prepared.modules())


def test_layernorm_affine_carries_over_and_the_input_model_is_untouched():
    vit = tiny_vit()
    vit.blocks[0].norm1.weight.data.fill_(1.5)
    x, _ = images(SPEC_28, 2)
    prepared = prepare(vit, x)
    assert torch.all(prepared.get_submodule("blocks.0.norm1").weight == 1.5)
    assert any(isinstance(m, nn.LayerNorm) for m in vit.modules())  # a deep copy was rewritten


def test_exact_rewrites_keep_the_function_and_changes_are_reported_one_by_one():
    """With every function change undone, the prepared graph computes the ANN (the exact rewrites
    are exact); applying them one at a time gives the accuracy trail the pipeline reports."""
    x, y = images(SPEC_28, 32)
    ann = tiny_vit().eval()
    prepared, report = calibrated(ann, x)
    with torch.no_grad(), report.only(prepared, []):
        assert torch.allclose(prepared(x), ann(x), atol=1e-5)
    effects = change_effects(report, ann, prepared, x, y)
    assert [label for label, _ in effects] == ["original ANN", "+ LayerNorm → BatchNorm", "+ gelu → QCFS",
                                               "+ QCFS inserted (MST sites)"]
    with torch.no_grad():
        assert effects[-1][1] == pytest.approx(100.0 * float((prepared(x).argmax(-1) == y).float().mean()))


def test_pretrained_batchnorm_activation_and_max_pool_kept_exact():
    """A BatchNorm+ReLU CNN: its BatchNorms stay (with their statistics), ReLU → QCFS changes nothing
    but quantization, max-pooling stays max-pooling unless asked."""
    x, _ = images(SPEC_28, 8)
    cnn = tiny_timm_resnet().eval()
    prepared, report = prepare_with_report(cnn, x[:2])
    assert [c.what for c in report.function_changes] == ["relu → QCFS"]
    assert report.new_batchnorms() == []
    assert isinstance(prepared.get_submodule("maxpool"), nn.MaxPool2d)
    assert torch.equal(prepared.get_submodule("bn1").running_var, cnn.bn1.running_var)
    averaged = prepare(cnn, x[:2], PrepareConfig(max_pool="avg"))
    assert isinstance(averaged.get_submodule("maxpool"), nn.AvgPool2d)


def test_fused_norm_activation_and_functional_ops_are_seen():
    """timm's BatchNormAct2d is split into a trainable BatchNorm and its activation; SiLU becomes
    QCFS (reported as approximated); squeeze-excitation's sigmoid gate stays a float op."""
    model = timm.create_model("efficientnet_b0", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    prepared, report = prepare_with_report(model, x)
    assert isinstance(prepared.get_submodule("bn1.norm"), nn.BatchNorm2d)
    changes = {c.what: c for c in report.changes}
    assert "approximated" in changes["silu → QCFS"].detail
    assert any(op == "Sigmoid" for _, op in report.float_ops)
    assert prepared.train()(torch.randn(4, 3, 32, 32)).shape == (4, 10)  # trains: BatchNorm in train mode


def test_shape_dependent_branches_are_specialized_and_guarded():
    class Pads(nn.Module):
        def forward(self, x):
            if x.shape[-1] % 8:  # a branch on a shape
                x = nn.functional.pad(x, (0, 8 - x.shape[-1] % 8))
            return x.mean(-1)

    gm, failures = trace(Pads(), torch.randn(2, 3, 12))
    assert not failures and gm(torch.randn(5, 3, 12)).shape == (5, 3)
    with pytest.raises(Exception, match="another input shape"):
        gm(torch.randn(2, 3, 16))


class _ValueBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -x  # a branch on tensor values


def test_unsupported_ops_are_all_listed_with_the_line_that_stopped_the_tracer():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Hardshrink(), _ValueBranch(), nn.Softmax(-1))
    with pytest.raises(UnsupportedLayersError) as err:
        prepare(model, torch.randn(2, 4))
    problems = {name: (type_name, why) for name, type_name, why in err.value.problems}
    assert set(problems) == {"2", "3"}
    assert problems["2"][0] == "Hardshrink" and "no spiking equivalent" in problems["2"][1]
    assert problems["3"][0] == "_ValueBranch" and "test_prepare.py" in problems["3"][1] and "x.sum() > 0" in \
        problems["3"][1]
    assert "2 op(s)" in str(err.value) and "register_module_kind" in str(err.value)


def test_a_model_whose_own_forward_does_not_trace_is_refused_with_the_line():
    with pytest.raises(SnnConvertError, match=r"does not trace.*x.sum\(\) > 0"):
        prepare(_ValueBranch(), torch.randn(2, 4))


def test_prepared_checkpoint_names_are_stable():
    x, _ = images(SPEC_28, 2)
    first, second = prepare(tiny_vit(), x), prepare(tiny_vit(), x)
    assert list(first.state_dict()) == list(second.state_dict())
    assert "blocks.0.attn.qkv.weight" in first.state_dict()  # the model's own names stay


def test_the_readme_api_runs_and_bad_options_are_refused():
    import snnconvert as sc
    from snnconvert.calibrate import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds
    from snnconvert.runtime import Watch, simulate

    x, y = images(SPEC_28, 32)
    loader = [(x, y)]
    qcfs_model, changes = sc.prepare_with_report(tiny_vit(), x[:2], sc.PrepareConfig(levels=8))
    calibrate_batchnorm(qcfs_model, loader, only=changes.new_batchnorms())
    calibrate_thresholds(qcfs_model, loader, CalibrationConfig("percentile", 99.99, "channel", 32))
    snn = sc.convert(qcfs_model, mode="compensated")
    result = simulate(snn, loader, timesteps=4)
    assert len(result.accuracy) == 4 and result.layers and sc.float_operations(snn)

    from snnconvert.calibrate import correct
    cnn = tiny_timm_resnet().eval()
    x32, y32 = images(SPEC_32, 32)
    loader = [(x32, y32)]
    qcfs_cnn = sc.prepare(cnn, x32[:2], sc.PrepareConfig.calibration_only(levels=8))
    calibrate_thresholds(qcfs_cnn, loader, CalibrationConfig("percentile", 99.99))
    snn = sc.convert(qcfs_cnn, neuron=sc.NeuronConfig("signed-if", max_spikes=1, coding="rate"))
    correct(snn, qcfs_cnn, x32, timesteps=4, config=CorrectionConfig("potential"))
    result = simulate(snn, loader, timesteps=4, watch=Watch(reference=cnn))
    assert len(result.agreement) == 4 and 0 <= result.agreement[-1] <= 100
    with pytest.raises(SnnConvertError, match="unknown activations"):
        PrepareConfig(keep_activations=("swish",))
    with pytest.raises(SnnConvertError, match="max_pool"):
        PrepareConfig(max_pool="min")


class _Affine(nn.Module):
    """β + α·x with parameters α, β (ResMLP's Affine), and a lerp towards a constant."""

    def __init__(self):
        super().__init__()
        self.alpha, self.beta = nn.Parameter(torch.full((8,), 0.5)), nn.Parameter(torch.zeros(8))

    def forward(self, x):
        h = torch.addcmul(self.beta, self.alpha, x)
        gated = torch.addcmul(self.beta, h, x)          # both factors stream: a product
        mixed = torch.lerp(h, self.beta, 0.25)          # a + w·(b − a), w constant: linear
        weighted = torch.lerp(self.beta, self.alpha, h)  # w streams, a and b do not: linear
        both = h.lerp(x, torch.sigmoid(h))               # w and a, b stream: a product
        return gated + mixed + weighted + both


def test_linearity_comes_from_which_operands_stream():
    from snnconvert.graph import ops

    gm, _ = trace(_Affine(), torch.randn(2, 8))
    dynamic = ops.dynamic_nodes(gm.graph)
    kinds = [ops.kind(n, gm, dynamic.__contains__) for n in gm.graph.nodes if ops.describe(n, gm) in
             ("addcmul", "lerp", ".lerp()")]
    assert kinds == [ops.LINEAR, ops.PRODUCT, ops.LINEAR, ops.LINEAR, ops.PRODUCT]


class _Unary(nn.Module):
    """Elementwise unary ops, as functions and methods, between weight layers (StarReLU's square)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(28 * 28, 16), nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        h = 0.8 * torch.square(h) + torch.expm1(h * 0.1) + (h + 1).log1p()
        return self.fc2(h)


def test_every_elementwise_unary_op_has_an_exact_compensated_form():
    from snnconvert.convert import convert
    from snnconvert.runtime import reset_states

    x, _ = images(SPEC_28, 8)
    model, report = calibrated(_Unary().eval(), x, PrepareConfig(levels=4))
    assert not report.leaves
    model64, x64 = model.double(), x.double()
    snn = convert(model64, neuron="signed-burst-if")
    with torch.no_grad():
        target = model64(x64)
        reset_states(snn)
        rate = sum(snn(x64) for _ in range(4)) / 4
    assert (rate - target).abs().max().item() <= 1e-9 * max(1.0, target.abs().max().item())


class _Autocast(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = self.fc(x.flatten(1).float())
        return torch.relu(h).to(x.dtype)


def test_precision_contexts_and_casts_are_dropped_and_reported():
    x, _ = images(SPEC_28, 2)
    prepared, report = prepare_with_report(_Autocast(), x)
    whats = [c.what for c in report.changes]
    assert "precision contexts dropped" in whats and "precision casts dropped" in whats
    methods = {n.target for n in prepared.graph.nodes if n.op == "call_method"}
    assert not methods & {"float", "to"}
    with torch.no_grad():
        assert prepared(x).dtype == x.dtype


def test_spiking_attention_probabilities_make_attention_v_a_product_of_spikes():
    x, y = images(SPEC_28, 8)
    plain, _ = calibrated(tiny_vit(), x)
    spiked, report = calibrated(tiny_vit(), x, PrepareConfig(spike_probabilities=True))
    sites = {name: q for name, q in qcfs_modules(spiked).items() if q.role == "probabilities"}
    assert sorted(sites) == ["blocks.0.attn.softmax_act", "blocks.1.attn.softmax_act"]  # one per softmax
    assert all(0 < float(q.effective_threshold().detach()) <= 1.0 for q in sites.values())  # probabilities: λ ≤ 1
    assert report.function_changes[-1].what == "QCFS on attention probabilities"
    costs = {}
    for name, model in (("plain", plain), ("spiked", spiked)):
        snn = convert(model, neuron=NeuronConfig("signed-if", coding="count"))
        ops = {o.name: o for o in simulate(snn, x, y, timesteps=12).ops}
        costs[name] = ops["blocks.0.attn.av"]
    assert costs["plain"].macs > 0 and costs["plain"].sops > 0  # softmax output × V: MACs on real values
    assert costs["spiked"].macs == 0 and costs["spiked"].sops > 0  # spikes × spikes: additions only


def test_probability_sites_join_a_prepared_model_calibrated_alone(tmp_path):
    from snnconvert import workflow

    loaded = workflow.load("vit_nano", None)
    before = {n: q.threshold.detach().clone() for n, q in qcfs_modules(loaded.model).items()}
    model, config, record = workflow.add_route_sites(loaded, PrepareConfig(spike_probabilities=True), "embedded",
                                                     CalibrationConfig(num_samples=32), "cpu", False)
    after = qcfs_modules(model)
    assert config.spike_probabilities and set(after) - set(before) == {f"blocks.{i}.attn.softmax_act" for i in range(4)}
    assert all(torch.equal(after[n].threshold, lam) for n, lam in before.items())  # the trained sites untouched
    assert set(record["accuracy_on_calibration_images"]) == {"QCFS ANN as loaded", "with QCFS on attention probabilities"}
    path = tmp_path / "prepared.pt"
    workflow.save_prepared(path, model, loaded.recipe, config)
    reloaded = workflow.load("vit_nano", str(path))
    x, _ = images(SPEC_28, 4)
    with torch.no_grad():
        assert torch.equal(reloaded.model.eval()(x), model.eval()(x))  # the config rebuilds the sites
    cnn = workflow.load("resnet_nano", None)
    with pytest.raises(SnnConvertError, match="no softmax"):
        workflow.add_route_sites(cnn, PrepareConfig(spike_probabilities=True), "embedded", CalibrationConfig(num_samples=8),
                                 "cpu", False)
    # where the model has them (the event-driven route): a CNN is kept as it is, and the record says why
    kept, kept_config, note = workflow.add_route_sites(cnn, PrepareConfig(spike_probabilities=None), "embedded",
                                                       CalibrationConfig(num_samples=8), "cpu", False)
    assert kept is cnn.model and not kept_config.spike_probabilities and "no softmax" in note["changes"][0]


def test_probabilities_where_the_model_has_them_are_added_or_noted_never_silently_dropped():
    x, _ = images(SPEC_28, 4)
    _, vit = prepare_with_report(tiny_vit(), x, PrepareConfig(spike_probabilities=None))
    assert vit.function_changes[-1].what == "QCFS on attention probabilities" and not vit.notes
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    cnn(x)
    _, report = prepare_with_report(cnn, x, PrepareConfig(spike_probabilities=None))
    assert len(report.notes) == 1 and "no softmax" in report.notes[0] and "not applied" in report.lines()[-1]
    with pytest.raises(SnnConvertError, match="no softmax"):  # asked for outright: refused
        prepare_with_report(cnn, x, PrepareConfig(spike_probabilities=True))
    assert not prepare_with_report(cnn, x, PrepareConfig())[1].notes  # not asked for: nothing to say


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: expand (ReLU6), depthwise (ReLU6), linear projection, residual add."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_pw, self.bn1, self.act1 = nn.Conv2d(channels, 2 * channels, 1), nn.BatchNorm2d(2 * channels), nn.ReLU6()
        self.conv_dw = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels)
        self.bn2, self.act2 = nn.BatchNorm2d(2 * channels), nn.ReLU6()
        self.conv_pwl, self.bn3 = nn.Conv2d(2 * channels, channels, 1), nn.BatchNorm2d(channels)

    def forward(self, x):
        return x + self.bn3(self.conv_pwl(self.act2(self.bn2(self.conv_dw(self.act1(self.bn1(self.conv_pw(x))))))))


def _mbconv() -> nn.Module:
    stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU6())
    return nn.Sequential(stem, nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4), _InvertedResidual(4), _InvertedResidual(4),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()


def test_signed_stream_sites_go_on_the_edges_into_weight_layers_and_the_residual_stream_stays_exact(tmp_path):
    x, _ = images(SPEC_28, 32)
    config = PrepareConfig.calibration_only(8, spike_streams=True, stream_levels=3)
    model, report = calibrated(_mbconv(), x, config)
    streams = {path: site for path, site in qcfs_modules(model).items() if site.signed}
    # each block's expansion reads the linear bottleneck (the projection's output plus the shortcut),
    # the head reads the pooled stream; the stem's activation already spikes
    assert set(streams) == {"3.conv_pw_in", "4.conv_pw_in", "7_in"}
    assert all(s.role == "stream" and s.levels == 3 and s.cap is None for s in streams.values())
    assert report.function_changes[-1].what == "QCFS on real-valued streams into weight layers"
    for add in (n for n in model.graph.nodes if n.op == "call_function" and "add" in str(n.target)):
        assert not any(a.op == "call_module" and a.target in streams for a in add.all_input_nodes)  # the sum stays real
    # what the sites cost is measured change by change, and a plain CNN of spiking layers has none
    effects = dict(change_effects(report, _mbconv(), model, x, torch.zeros(32, dtype=torch.long)))
    assert "+ QCFS on real-valued streams into weight layers" in effects
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    cnn(x)
    assert "real-valued stream" in prepare_with_report(cnn, x, PrepareConfig(spike_streams=None))[1].notes[0]
    with pytest.raises(SnnConvertError, match="--spike-streams"):
        prepare_with_report(cnn, x, PrepareConfig(spike_streams=True))
    with pytest.raises(SnnConvertError, match="stream_levels"):
        PrepareConfig(stream_levels=0)
    # the SNN: signed neurons whatever the neuron asked for, sending negative spikes
    snn = convert(model, neuron=NeuronConfig("if", coding="count"))
    result = simulate(snn, x, torch.zeros(32, dtype=torch.long), timesteps=4)
    negative = {layer.name: layer.negative for layer in result.layers}
    assert all(type(snn.get_submodule(p)).__name__ == "SignedIFNeuron" and snn.get_submodule(p).symmetric
               for p in streams)
    assert any(negative[p] > 0 for p in streams)


def test_stream_sites_join_a_prepared_checkpoint_with_their_levels_and_reload(tmp_path):
    from snnconvert import workflow

    adapt = {"adapt": {"num_classes": 10, "input_size": (1, 32, 32), "classes": None}}
    ann = workflow.load("mobilenetv2_050", None, pretrained=False, **adapt)
    prepared, config, _ = workflow.ensure_prepared(ann, "embedded", CalibrationConfig(num_samples=8), "cpu", False,
                                                   PrepareConfig.calibration_only(8))
    path = tmp_path / "prepared.pt"
    workflow.save_prepared(path, prepared, ann.recipe, config)
    loaded = workflow.load("mobilenetv2_050", str(path), **adapt)
    before = {n: q.threshold.detach().clone() for n, q in qcfs_modules(loaded.model).items()}
    asked = PrepareConfig(spike_streams=None, spike_probabilities=None, stream_levels=3)
    model, new_config, record = workflow.add_route_sites(loaded, asked, "embedded", CalibrationConfig(num_samples=8),
                                                         "cpu", False)
    added = {n: q for n, q in qcfs_modules(model).items() if n not in before}
    assert added and all(q.signed and q.levels == 3 for q in added.values())
    assert new_config.spike_streams is True and new_config.stream_levels == 3 and new_config.spike_probabilities is None
    assert "with QCFS on real-valued streams into weight layers" in record["accuracy_on_calibration_images"]
    assert any(line.startswith("not applied: QCFS on attention probabilities") for line in record["changes"])
    workflow.save_prepared(path, model, loaded.recipe, new_config)
    reloaded = workflow.load("mobilenetv2_050", str(path), **adapt)
    x, _ = images(SPEC_32, 4)
    with torch.no_grad():
        assert torch.equal(reloaded.model.eval()(x), model.eval()(x))  # the config rebuilds the sites
    assert not workflow.missing_route_sites(reloaded, asked)  # nothing left to add, none looked for twice
    assert workflow.missing_route_sites(reloaded, PrepareConfig(spike_probabilities=True))  # required: refused
    resnet = workflow.load("resnet_nano", None)
    with pytest.raises(SnnConvertError, match="real-valued stream"):  # every layer of a ResNet reads spikes
        workflow.add_route_sites(resnet, PrepareConfig(spike_streams=True), "embedded",
                                 CalibrationConfig(num_samples=8), "cpu", False)
