"""Models of one's own: an ONNX ANN from another framework, or a Python factory, through the pipeline."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper
from torch import nn

from snnconvert.calibrate import CalibrationConfig, calibrate_thresholds
from snnconvert.cli import main
from snnconvert.convert import NeuronConfig, convert
from snnconvert.errors import SnnConvertError, UnsupportedLayersError
from snnconvert.model_zoo import load_model
from snnconvert.model_zoo.onnx_import import import_onnx
from snnconvert.model_zoo.registry import get_recipe
from snnconvert.prepare import PrepareConfig, prepare
from snnconvert.runtime import reset_states

from conftest import SPEC_28, images


def _export(module: nn.Module, path, shape) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(1, *shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class KerasLike(nn.Module):
    """What a Keras model looks like once exported: channels last, raw 0–255 pixels, a bias-less
    convolution between transposes, its bias and a BatchNorm (after ReLU) as constants in NHWC,
    max-pooling, a flatten in NHWC order, a MatMul and a softmax."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(8, 1, 3, 3, generator=g) / 3 / 255)
        self.b1, self.mean, self.scale, self.shift = (torch.randn(8, generator=g) * k for k in (0.1, 0.2, 1, 0.1))
        self.scale = self.scale.abs() + 0.5
        self.w2 = nn.Parameter(torch.randn(14 * 14 * 8, 10, generator=g) / 20)

    def forward(self, x):  # x: [N, 28, 28, 1], 0–255
        y = nn.functional.conv2d(x.permute(0, 3, 1, 2), self.w1, padding=1).permute(0, 2, 3, 1)
        y = ((torch.relu(y + self.b1) - self.mean) * self.scale) + self.shift
        y = nn.functional.max_pool2d(y.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        return torch.softmax(y.reshape(y.shape[0], -1) @ self.w2, -1)


def _qcfs_and_snn(model: nn.Module, x: torch.Tensor):
    prepared = prepare(model, x[:2], PrepareConfig.calibration_only(8))
    calibrate_thresholds(prepared, [(x, torch.zeros(len(x)))], CalibrationConfig("max", num_samples=len(x)))
    prepared = prepared.double().eval()
    snn = convert(prepared, neuron=NeuronConfig("signed-burst-if", coding="count")).double()
    reset_states(snn)
    with torch.no_grad():
        total = sum(snn(x.double()) for _ in range(8 + 2))
        return prepared(x.double()), total


def test_a_torch_cnn_through_onnx_converts_as_the_original(tmp_path):
    torch.manual_seed(0)
    original = SmallCNN().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        original.features[1].running_mean.normal_(0, 0.2), original.features[1].running_var.uniform_(0.5, 2)
    _export(original, tmp_path / "cnn.onnx", (1, 28, 28))
    imported = import_onnx(tmp_path / "cnn.onnx")
    assert imported.input_size == (1, 28, 28) and imported.num_classes == 10 and not imported.notes
    x, _ = images(SPEC_28, 16)
    with torch.no_grad():
        assert torch.allclose(imported.module(x), original(x), atol=1e-5)
    qcfs_a, snn_a = _qcfs_and_snn(original, x)
    qcfs_b, snn_b = _qcfs_and_snn(imported.module, x)
    assert torch.allclose(qcfs_a, qcfs_b, atol=1e-6) and torch.allclose(snn_a, snn_b, atol=1e-6)
    assert torch.allclose(snn_b, qcfs_b, atol=1e-9)  # the burst SNN is its QCFS ANN (float64)


def test_a_channels_last_keras_like_model_on_raw_pixels_converts_and_agrees(tmp_path):
    _export(KerasLike(), tmp_path / "keras.onnx", (28, 28, 1))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "keras.onnx")).graph.node}
    assert {"Transpose", "Sub", "Mul", "MatMul", "Softmax"} <= ops  # what the importer must clean up
    imported = import_onnx(tmp_path / "keras.onnx")
    code = imported.module.code
    assert imported.input_size == (1, 28, 28) and "permute" not in code and "softmax" in imported.notes[0]
    kinds = {type(m).__name__ for m in imported.module.modules()}
    assert {"Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Linear"} <= kinds  # the cleaned-up CNN
    x, _ = images(SPEC_28, 8)  # normalized; the model takes raw pixels [N, H, W, C]
    raw = (x * 0.353 + 0.286).clamp(0, 1) * 255
    with torch.no_grad():
        expected = KerasLike()(raw.permute(0, 2, 3, 1)).argmax(-1)
        assert torch.equal(imported.module(raw).argmax(-1), expected)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [str(tmp_path / "keras.onnx"), "--data", "embedded", "--no-finetune", "--neuron",
                                       "signed-if", "-T", "32", "--limit", "64", "--input-scale", "255",
                                       "--calib-samples", "64", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    sim = report["simulations"]["compensated"]
    assert sim["agreement_per_step"][-1] >= 90 and report["spec"]["model"]["input_scale"] == 255
    again = CliRunner().invoke(main, ["simulate", str(tmp_path / "keras.onnx"), "--checkpoint", str(out / "prepared.pt"),
                                      "--neuron", "signed-if", "-T", "32", "--limit", "64", "--quiet"])
    assert again.exit_code == 0, again.output  # an ONNX ANN is a model like any other, by its metadata
    assert f"T=32    accuracy {sim['accuracy_per_step'][-1]:6.2f} %" in again.output


def test_a_flatten_after_cancelled_transposes_permutes_the_rows_by_the_right_layout(tmp_path):
    """T(0,2,3,1) → Relu → T(0,3,1,2) cancel, leaving the Relu's output channels-first under the name
    that shape inference gave a channels-last shape; the last T(0,2,3,1) → flatten → MatMul must read
    its (C, H, W) from its own output. C, H, W all differ, so any other order gives other rows."""
    import onnxruntime

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [24, 5], rng.normal(size=120).astype(np.float32).ravel())
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Transpose", ["b"], ["c"], perm=[0, 3, 1, 2]),
             helper.make_node("Transpose", ["c"], ["d"], perm=[0, 2, 3, 1]),
             helper.make_node("Flatten", ["d"], ["e"], axis=1),
             helper.make_node("MatMul", ["e", "w"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [weight]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "rows.onnx")
    imported = import_onnx(tmp_path / "rows.onnx", "nchw")
    inputs = rng.normal(size=(3, 2, 3, 4)).astype(np.float32)
    expected = onnxruntime.InferenceSession(str(tmp_path / "rows.onnx")).run(None, {"x": inputs})[0]
    with torch.no_grad():
        assert np.allclose(imported.module(torch.from_numpy(inputs)).numpy(), expected, atol=1e-5)
    assert "permute" not in imported.module.code


def test_unsupported_onnx_ops_are_listed_at_once_with_their_names(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])
    nodes = [helper.make_node("Erf", ["x"], ["a"], name="the_erf"),
             helper.make_node("Flatten", ["a"], ["b"], name="flat", axis=1),
             helper.make_node("Hardmax", ["b"], ["y"], name="the_hardmax")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(UnsupportedLayersError, match="the_erf.*Erf") as error:
        import_onnx(tmp_path / "bad.onnx")
    assert {name for name, _, _ in error.value.problems} == {"the_erf", "the_hardmax"}


FACTORIES = '''
import torch
from torch import nn

def mlp(width=16, classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, width), nn.ReLU(), nn.Linear(width, classes))

def broken(width=16):
    raise RuntimeError("no such width")

def not_a_module():
    return "a string"
'''


def test_a_python_factory_is_a_model_source_with_clear_errors(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(FACTORIES)
    recipe = get_recipe(f"{path}:mlp").adapted(input_size=(1, 28, 28), model_args={"width": 12})
    loaded = load_model(recipe)
    assert loaded.stage == "ann" and loaded.model[1].out_features == 12 and loaded.recipe.num_classes == 10
    with pytest.raises(SnnConvertError, match="raised RuntimeError: no such width"):
        load_model(get_recipe(f"{path}:broken").adapted(input_size=(1, 28, 28)))
    with pytest.raises(SnnConvertError, match="returned str, not a torch nn.Module"):
        load_model(get_recipe(f"{path}:not_a_module").adapted(input_size=(1, 28, 28)))
    with pytest.raises(SnnConvertError, match="has no callable 'missing'.*mlp"):
        get_recipe(f"{path}:missing")
    with pytest.raises(SnnConvertError, match="cannot import the module 'no_such_package_xyz.nets'"):
        get_recipe("no_such_package_xyz.nets:mlp")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [f"{path}:mlp", "--model-arg", "width=24", "--data", "embedded", "--no-finetune",
                                       "-T", "4", "--limit", "32", "--calib-samples", "32", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output  # the input size from the data's images
    spec = json.loads((out / "report.json").read_text())["spec"]["model"]
    assert spec["model_args"] == {"width": 24} and spec["input_size"] == [1, 28, 28]


def test_an_snn_step_is_told_from_an_ann_by_its_metadata(tmp_path):
    step = tmp_path / "step.onnx"
    assert CliRunner().invoke(main, ["export", "resnet_nano", "--what", "snn", "--out", str(step)]).exit_code == 0
    with pytest.raises(SnnConvertError, match="SNN step exported by snnconvert.*simulate"):
        import_onnx(step)
    ann = tmp_path / "ann.onnx"
    _export(SmallCNN(), ann, (1, 28, 28))
    refused = CliRunner().invoke(main, ["simulate", str(ann), "--limit", "8"])
    assert refused.exit_code != 0 and "is an ANN (not an SNN step, by its metadata)" in str(refused.exception)
    assert np.isfinite(import_onnx(ann).module(torch.zeros(1, 1, 28, 28)).detach().numpy()).all()
