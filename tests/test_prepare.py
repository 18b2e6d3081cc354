"""prepare(): the traced graph, where QCFS goes, what changes and what is refused."""
import pytest
import timm
import torch
from torch import nn

from snnconvert.calibrate import CalibrationConfig
from snnconvert.convert import ChannelBatchNorm, NeuronConfig, PrepareConfig, change_effects, convert, prepare, \
    prepare_with_report, qcfs_modules
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
    from snnconvert.runtime import simulate

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
    correct(snn, qcfs_cnn, x32, timesteps=4, method="potential")
    result = simulate(snn, loader, timesteps=4, reference=cnn)
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
    from snnconvert import pipeline

    loaded = pipeline.load("vit_nano", None)
    before = {n: q.threshold.detach().clone() for n, q in qcfs_modules(loaded.model).items()}
    model, config, record = pipeline.add_probability_sites(loaded, "embedded", CalibrationConfig(num_samples=32),
                                                           "cpu", False)
    after = qcfs_modules(model)
    assert config.spike_probabilities and set(after) - set(before) == {f"blocks.{i}.attn.softmax_act" for i in range(4)}
    assert all(torch.equal(after[n].threshold, lam) for n, lam in before.items())  # the trained sites untouched
    assert set(record["accuracy_on_calibration_images"]) == {"QCFS ANN as loaded", "with spiking attention probabilities"}
    path = tmp_path / "prepared.pt"
    pipeline.save_prepared(path, model, loaded.recipe, config)
    reloaded = pipeline.load("vit_nano", str(path))
    x, _ = images(SPEC_28, 4)
    with torch.no_grad():
        assert torch.equal(reloaded.model.eval()(x), model.eval()(x))  # the config rebuilds the sites
    cnn = pipeline.load("resnet_nano", None)
    with pytest.raises(SnnConvertError, match="no softmax"):
        pipeline.add_probability_sites(cnn, "embedded", CalibrationConfig(num_samples=8), "cpu", False)
    # where the model has them (the event-driven route): a CNN is kept as it is, and the record says why
    kept, kept_config, note = pipeline.add_probability_sites(cnn, "embedded", CalibrationConfig(num_samples=8),
                                                             "cpu", False, required=None)
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
