"""ONNX export: the SNN's step in onnxruntime follows the PyTorch model step by step, and reports alike.

A tiny model of each family (Swin, ViT, a timm ResNet with channel-wise thresholds, Spikformer)
is exported as one time step and run in onnxruntime from the initial state, from PyTorch's state
after 3 steps, and from PyTorch's state before every step.
"""
import json

import numpy as np
import onnx
import pytest
import timm
import torch
from torch import nn

from snnconvert.calibrate import CalibrationConfig
from snnconvert.cli import main
from snnconvert.convert import NeuronConfig, convert
from snnconvert.prepare import MaskConfig, PrepareConfig, add_spike_masks
from snnconvert.direct import DirectConfig, SpikingClassifier
from snnconvert.direct.dynamic_timesteps import timestep_masks
from snnconvert.direct.encoding import make_encoder
from snnconvert.errors import CheckpointError, SnnConvertError
from snnconvert.export import OPSET, export_ann, export_snn
from snnconvert.export.nir import nir_blockers
from snnconvert.export.parity import parity
from snnconvert.checkpoint import Job
from snnconvert.export.session import OnnxStep, read_metadata, simulate_onnx
from snnconvert.runtime import simulate

from conftest import SPEC_28, SPEC_32, DiesAfter, calibrated, images, tiny_swin, tiny_timm_resnet, tiny_vit

T = 6


def _converted(build, spec, granularity="layer", **neuron):
    x, y = images(spec, 16)
    model, _ = calibrated(build().eval(), x, PrepareConfig(levels=4), CalibrationConfig("percentile", 99.9,
                                                                                      granularity, 16))
    return convert(model, neuron=NeuronConfig(**neuron)), x, y


def _spikformer(dynamic: bool = False):
    """A tiny Spikformer; ``dynamic``: with time-step masks of 2 to 4 steps (T_max 4 < T)."""
    torch.manual_seed(0)
    config = DirectConfig(neuron="lif", timesteps=4, dynamic_timesteps=dynamic)
    net = timm.create_model("spikformer_nano", img_size=28, in_chans=1, num_classes=10, embed_dim=32, depth=1,
                            **config.neuron_args())
    for i, mask in enumerate(timestep_masks(net).values()):
        with torch.no_grad():
            mask.tp.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0]))
            mask.tp[3 - i % 3] = 1.5  # TS = 1.5 up to step 3 − i % 3: the layer sends 4 − i % 3 steps
    model = SpikingClassifier(net, make_encoder("direct", T), T)
    x, y = images(SPEC_28, 16)
    return model.for_inference(x[:2]), x, y


FAMILIES = {
    "swin": lambda: _converted(tiny_swin, SPEC_32),
    "vit": lambda: _converted(tiny_vit, SPEC_28),
    "resnet-channel-wise": lambda: _converted(tiny_timm_resnet, SPEC_28, "channel"),
    "spikformer": _spikformer,
    "spikformer-dynamic-timesteps": lambda: _spikformer(dynamic=True),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_step_follows_pytorch_from_zero_and_nonzero_state(family, tmp_path):
    snn, x, _ = FAMILIES[family]()
    path = tmp_path / "step.onnx"
    proto = export_snn(snn, path, x[:2], {"timesteps": T})  # checked by onnx.checker on writing
    assert proto.opset_import[0].version >= OPSET
    graph_x = proto.graph.input[0]
    assert graph_x.name == "x" and graph_x.type.tensor_type.shape.dim[0].dim_param == "batch"
    metadata = read_metadata(path)
    keys = {e["key"] for e in metadata["state"]}
    assert {"v", "spikes"} <= keys and metadata["layers"]["neurons"]
    if not family.startswith("spikformer"):
        assert {"sum0", "previous"} <= keys or family.startswith("resnet")
    for start, forced in ((0, False), (3, False), (0, True)):
        p = parity(snn, path, x[:8], T, start, forced)  # 8 samples: another batch size than exported
        assert p.differing_predictions == 0 and p.total_spikes > 0
        assert p.differing_spikes <= 1e-4 * p.total_spikes  # float32 rounding may tip a neuron at θ
        assert p.max_relative_output < 1e-5 or p.differing_spikes > 0
        if forced:  # where every spike agreed, outputs agree; a differing spike sat on the threshold
            assert p.max_relative_output_same_spikes < 1e-5 and (p.max_margin is None or p.max_margin < 1e-5)


def test_onnxruntime_simulation_reports_like_pytorch(tmp_path):
    snn, x, y = _converted(tiny_vit, SPEC_28)
    path = tmp_path / "vit.onnx"
    export_snn(snn, path, x[:2], {"timesteps": T})
    torch_result = simulate(snn, x, y, timesteps=T)
    onnx_result = simulate_onnx(path, [(x[:10], y[:10]), (x[10:], y[10:])])  # T from the metadata
    assert onnx_result.timesteps == T and onnx_result.correct == torch_result.correct
    assert [(l.name, l.spikes, l.neuron_steps, l.firing, l.negative) for l in onnx_result.layers] == \
        [(l.name, l.spikes, l.neuron_steps, l.firing, l.negative) for l in torch_result.layers]
    for a, b in zip(onnx_result.layers, torch_result.layers):
        assert a.residual == pytest.approx(b.residual, rel=1e-4, abs=1e-3)
    assert [(o.name, o.sops, o.macs, o.float_ops, o.adds) for o in onnx_result.ops] == \
        [(o.name, o.sops, o.macs, o.float_ops, o.adds) for o in torch_result.ops]
    basic = simulate_onnx(path, x, y, timesteps=2, metrics="basic")
    assert basic.layers[0].spike_percent is None and basic.layers[0].spikes > 0


def test_interrupted_onnxruntime_simulation_resumes(tmp_path):
    snn, x, y = _converted(tiny_vit, SPEC_28)
    path = tmp_path / "vit.onnx"
    export_snn(snn, path, x[:2], {"timesteps": 4})
    batches = list(zip(x.split(6), y.split(6)))
    whole = simulate_onnx(path, batches)

    progress = tmp_path / "ort.progress.pt"
    with pytest.raises(KeyboardInterrupt):
        simulate_onnx(path, DiesAfter(batches, 2), job=Job(checkpoint=progress))
    resumed = simulate_onnx(path, batches, job=Job(checkpoint=progress))
    assert resumed.resumed_from_batch == 2 and resumed.correct == whole.correct
    assert [l.spikes for l in resumed.layers] == [l.spikes for l in whole.layers] and resumed.ops == whole.ops
    export_snn(snn, path, x[:3], {"timesteps": 4})  # the same model written again: the same file
    assert simulate_onnx(path, batches, job=Job(checkpoint=progress)).resumed_from_batch == len(batches)
    export_snn(snn, path, x[:2], {"timesteps": 5})  # another file
    with pytest.raises(CheckpointError, match="another simulation"):
        simulate_onnx(path, batches, job=Job(checkpoint=progress))


def test_count_coding_signed_neurons_and_spike_masks_export(tmp_path):
    snn, x, _ = _converted(tiny_vit, SPEC_28, neuron="signed-if", coding="count")
    path = tmp_path / "count.onnx"
    export_snn(snn, path, x[:2], {})
    assert "net" in {e["key"] for e in read_metadata(path)["state"]}  # the net count is state
    p = parity(snn, path, x[:4], T, 2)
    assert p.differing_predictions == 0 and p.differing_spikes <= 1e-4 * p.total_spikes

    prepared, _ = calibrated(tiny_vit().eval(), x, PrepareConfig(levels=4))
    add_spike_masks(prepared, MaskConfig({"mlp": 0.5}))
    masked = convert(prepared)
    export_snn(masked, tmp_path / "masked.onnx", x[:2], {"timesteps": 4})
    proto = onnx.load(tmp_path / "masked.onnx")
    assert any(node.op_type == "RandomUniformLike" for node in proto.graph.node)  # onnxruntime draws the masks
    assert simulate_onnx(tmp_path / "masked.onnx", x[:4], torch.zeros(4, dtype=torch.long)).layers[0].spikes > 0


def test_ann_export_matches_the_model(tmp_path):
    x, _ = images(SPEC_28, 4)
    prepared, _ = calibrated(tiny_vit().eval(), x, PrepareConfig(levels=4))
    for model in (tiny_vit().eval(), prepared):
        path = tmp_path / "ann.onnx"
        export_ann(model, path, x[:2], {"what": "test"})
        import onnxruntime as ort
        got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
        with torch.no_grad():
            expected = model(x).numpy()
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
        assert read_metadata(path)["format"] == "ann/1"


class _Unexportable(nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x.flatten(2))[1]


def test_bad_input_gets_a_clear_error(tmp_path):
    x, y = images(SPEC_28, 4)
    with pytest.raises(SnnConvertError, match="cannot export the ANN to ONNX: .*linalg_svd"):
        export_ann(_Unexportable(), tmp_path / "bad.onnx", x[:2], {})
    snn, _, _ = _converted(tiny_vit, SPEC_28)
    path = tmp_path / "vit.onnx"
    export_snn(snn, path, x[:2], {"timesteps": 2})
    wrong = torch.zeros(4, 1, 32, 32)
    with pytest.raises(ValueError, match=r"shape \(4, 1, 32, 32\), the model expects \[N, 1, 28, 28\]"):
        simulate_onnx(path, wrong, y)
    step = OnnxStep(path)
    with pytest.raises(SnnConvertError, match=r"takes images \[N, 1, 28, 28\], got \[4, 1, 32, 32\]"):
        step.run(wrong.numpy(), np.array(0), step.initial_state(4))
    export_ann(tiny_vit().eval(), tmp_path / "ann.onnx", x[:2], {})
    with pytest.raises(SnnConvertError, match="not an exported SNN step"):
        OnnxStep(tmp_path / "ann.onnx")
    (tmp_path / "corrupt.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        read_metadata(tmp_path / "corrupt.onnx")


def test_nir_is_refused_with_the_reason(tmp_path):
    snn, _, _ = _converted(tiny_vit, SPEC_28)
    reasons = nir_blockers(snn)
    assert reasons and "v ≥ θ" in reasons[0] and "NIR's IF" in reasons[0]
    assert any("expectation-compensated" in r for r in reasons)
    result = _cli("export", "vit_nano", "--what", "snn", "--format", "nir", "--out", str(tmp_path / "x.nir"))
    assert result.exit_code != 0 and "cannot export vit_nano to NIR exactly" in str(result.exception)
    assert not (tmp_path / "x.nir").exists()


def test_cli_exports_and_simulates_in_onnxruntime(tmp_path):
    path = tmp_path / "vit_nano.onnx"
    result = _cli("export", "vit_nano", "--what", "snn", "--out", str(path))
    assert result.exit_code == 0, result.output
    metadata = read_metadata(path)
    assert metadata["timesteps"] == 64 and metadata["input"]["shape"] == [1, 28, 28]
    assert metadata["neuron"].startswith("if") and metadata["attention"] == "compensated"
    assert metadata["thresholds"] in ("layer", "channel") and metadata["classes"]["count"] == 10
    assert json.loads(json.dumps(metadata["state"]))[0]["init"]  # how to build the initial state
    result = _cli("simulate", str(path), "-T", "4", "--limit", "16", "--quiet")
    assert result.exit_code == 0, result.output
    assert "T=4 " in result.output and "onnxruntime" in result.output
    via_backend = _cli("simulate", "vit_nano", "--backend", "onnxruntime", "-T", "4", "--limit", "16", "--quiet")
    assert via_backend.exit_code == 0 and via_backend.output.splitlines()[0] == result.output.splitlines()[0]
    ann = _cli("export", "vit_nano", "--what", "ann", "--out", str(tmp_path / "ann.onnx"))
    assert ann.exit_code == 0 and "QCFS ANN" in ann.output and read_metadata(tmp_path / "ann.onnx")["format"] == "ann/1"
    stopped = _cli("simulate", str(path), "-T", "16", "--limit", "32", "--exit", "0.9", "--quiet")
    assert stopped.exit_code == 0, stopped.output
    mean_steps = float(stopped.output.split("steps per image")[0].split()[-1])
    assert 1 < mean_steps < 16  # images left the exported step's batch
    refused = _cli("simulate", str(path), "--chunk", "4")
    assert refused.exit_code != 0 and "--chunk set how PyTorch runs" in str(refused.exception)  # before any work
    via_torch = _cli("simulate", "vit_nano", "-T", "4", "--limit", "16", "--quiet")
    assert via_torch.output.splitlines()[0] == result.output.splitlines()[0]  # the same accuracy at t = 4


def _cli(*args: str):
    from click.testing import CliRunner
    return CliRunner().invoke(main, list(args))
