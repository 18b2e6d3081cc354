"""convert(): neurons, compensation, folding; the SNN converges to its ANN as T grows.

An IF neuron's rate over T steps is QCFS with T levels on constant input, so as T → ∞ the SNN
tends to the ANN whose QCFS has unbounded levels (``λ·clip(z/λ, 0, 1)``), at a rate of about 1/T;
the QCFS ANN with L levels is its quantized twin (equal in expectation, φ = 1/2).
"""
import pytest
import torch
from torch import nn

from snnconvert.convert import convert, float_operations
from snnconvert.prepare import PrepareConfig, QCFS, prepare
from snnconvert.prepare.qcfs import rate_limit_model
from snnconvert.errors import SnnConvertError
from snnconvert.runtime import ExpectationCompensated, IFNeuron, reset_states
from snnconvert.runtime.operators import MatMul

from conftest import SPEC_28, SPEC_32, calibrated, images, tiny_swin, tiny_timm_resnet, tiny_vit

FAMILIES = {"swin": (tiny_swin, SPEC_32), "vit": (tiny_vit, SPEC_28), "resnet": (tiny_timm_resnet, SPEC_28)}


def _relative_errors(ann: nn.Module, snn: nn.Module, x: torch.Tensor, steps: list[int]) -> dict[int, float]:
    with torch.no_grad():
        target = ann(x)
        reset_states(snn)
        total, errors = 0, {}
        for t in range(1, max(steps) + 1):
            total = total + snn(x)
            if t in steps:
                errors[t] = ((total / t - target).norm() / target.norm()).item()
    return errors


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_snn_converges_to_its_ann_as_t_grows(family):
    factory, spec = FAMILIES[family]
    x, _ = images(spec, 96, split="train")
    model, _ = calibrated(factory(), x)
    x, _ = images(spec, 16)
    errors = _relative_errors(rate_limit_model(model), convert(model), x, [8, 32, 128])
    assert errors[128] < errors[32] < errors[8], errors
    assert errors[128] < 0.25 * errors[8], errors


def test_compensated_attention_beats_per_step_attention():
    """On one attention layer the per-step products of the MST reference code stay biased as T grows;
    the compensated products converge to the ANN."""
    from snnconvert.graph.rules import SelfAttention

    torch.manual_seed(0)

    class OneAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = SelfAttention(nn.MultiheadAttention(16, 2, batch_first=True))

        def forward(self, x):
            return self.attn(x, x, x)[0]

    x = torch.randn(32, 10, 16)
    model, _ = calibrated(OneAttention(), x, calibration=__import__("snnconvert").calibrate.CalibrationConfig(
        "percentile", 99.0, "layer", 32))
    limit = rate_limit_model(model)
    compensated = _relative_errors(limit, convert(model, "compensated"), x, [16, 256])
    per_step = _relative_errors(limit, convert(model, "mst"), x, [16, 256])
    assert compensated[256] < 0.25 * compensated[16], compensated
    assert compensated[256] < 0.5 * per_step[256], (compensated, per_step)


def test_convert_swaps_modules_folds_and_lists_float_ops():
    x, _ = images(SPEC_32, 32, split="train")
    model, _ = calibrated(tiny_swin(), x)
    n_qcfs = sum(isinstance(m, QCFS) for m in model.modules())
    snn = convert(model)
    assert sum(isinstance(m, IFNeuron) for m in snn.modules()) == n_qcfs
    assert not any(isinstance(m, QCFS) for m in snn.modules())
    products = [m for m in snn.modules() if isinstance(m, ExpectationCompensated) and m.bilinear]
    assert len(products) == 2 * 4  # Q·Kᵀ and attention·V in 4 blocks
    ops = float_operations(snn)
    assert sorted(op.name for op in ops if op.kind == "Softmax") == [
        f"layers.{i}.blocks.{j}.attn.softmax" for i in (0, 1) for j in (0, 1)]
    # patch-embedding, patch-merging and final norms fold; the residual-stream norms (before QCFS) do not
    unfolded = sorted(op.name for op in ops if op.kind == "ChannelBatchNorm")
    assert unfolded == sorted(f"layers.{i}.blocks.{j}.norm{k}" for i in (0, 1) for j in (0, 1) for k in (1, 2))
    assert not any(name.endswith(("patch_embed.norm", "downsample.norm")) or name == "norm"
                   for name, m in snn.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    # the relative position bias is computed once, at conversion
    assert not any("relative_position_bias_table" in k for k in snn.state_dict())
    mst = convert(model, "mst")
    assert not any(isinstance(m, ExpectationCompensated) for m in mst.modules())
    assert {op.why for op in float_operations(mst) if op.kind == "Softmax"} == {"nonlinearity applied to each step"}


def test_folding_is_exact_through_rearrangements_and_pooling():
    """conv → flatten → transpose → BatchNorm (patch embedding), BatchNorm → mean → Linear (the head)
    and BatchNorm → Linear fold, in float64, to the same function."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.norm = nn.Conv2d(3, 6, 2, stride=2), nn.BatchNorm1d(6)
            self.bn2, self.fc, self.head = nn.BatchNorm1d(6), nn.Linear(6, 6), nn.Linear(6, 5)
            self.act = nn.ReLU()

        def forward(self, x):
            x = self.proj(x).flatten(2)  # [B, 6, N]
            x = self.act(self.norm(x)).transpose(1, 2)  # channels of the BatchNorm are the conv's
            x = self.act(self.fc(self.bn2(x.mean(1))))
            return self.head(x)

    torch.manual_seed(0)
    net = Net().double()
    for bn in (net.norm, net.bn2):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.normal_()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    model = prepare(net, x, PrepareConfig(sites="activations")).eval()
    for q in model.modules():
        if isinstance(q, QCFS):
            q.threshold.data.fill_(3.0)
    snn = convert(model, neuron="signed-burst-if")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in snn.modules())
    with torch.no_grad():
        total = sum(snn(x) for _ in range(8))
        assert torch.allclose(total / 8, model(x), atol=1e-12)


def test_convert_refuses_unprepared_model_and_unknown_mode():
    with pytest.raises(SnnConvertError, match="prepare"):
        convert(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    x, _ = images(SPEC_28, 2)
    model = prepare(tiny_vit(), x)
    with pytest.raises(SnnConvertError, match="compensated"):
        convert(model, "exact")
    with pytest.raises(SnnConvertError, match="signed-if"):
        convert(model, neuron="lif")
    assert isinstance(model.get_submodule("blocks.0.attn.qk"), MatMul)
