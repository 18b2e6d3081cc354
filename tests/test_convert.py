"""convert(): every registered architecture converges to its ANN as T grows.

An IF neuron's rate over T steps is QCFS with T levels on constant input, so as T → ∞ the SNN
tends to the ANN whose QCFS has unbounded levels (``λ·clip(z/λ, 0, 1)``), at a rate of about 1/T;
the QCFS ANN with L levels is its quantized twin (equal in expectation, φ = 1/2).
"""
import pytest
import torch
from torch import nn

from snnconvert.calibrate import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds
from snnconvert.convert import convert, float_operations, prepare, PrepareConfig
from snnconvert.convert.qcfs import QCFS, rate_limit_model, with_levels
from snnconvert.errors import SnnConvertError
from snnconvert.runtime import ExpectationCompensated, IFNeuron, reset_states

from conftest import ARCHITECTURES, images


def _calibrated(arch: str, levels: int = 8):
    factory, spec = ARCHITECTURES[arch]
    x, _ = images(spec, 96, split="train")
    model = prepare(factory(), PrepareConfig(levels=levels))
    loader = [(x, None)]
    calibrate_batchnorm(model, loader, num_samples=96)
    calibrate_thresholds(model, loader, CalibrationConfig("percentile", 99.9, "layer", 96))
    return model.eval(), spec


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


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_signed_burst_snn_equals_qcfs_ann_with_t_levels(arch):
    """With signed burst neurons the SNN at step t computes the QCFS ANN with t levels exactly, so at
    t = L it is the QCFS ANN itself: a check of folding, operators and neurons together."""
    model, spec = _calibrated(arch, levels=8)
    x, _ = images(spec, 8)
    snn = convert(model, neuron="signed-burst-if")
    with torch.no_grad():
        reset_states(snn)
        total = 0
        for t in range(1, 17):
            total = total + snn(x)
            if t in (4, 8, 16):
                target = with_levels(model, t)(x)
                off = ((total / t - target).abs() > 1e-3 * target.abs().max()).float().mean().item()
                assert off <= 0.02, (t, off)  # float ties at floor boundaries may differ


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_snn_converges_to_its_ann_as_t_grows(arch):
    model, spec = _calibrated(arch)
    x, _ = images(spec, 16)
    errors = _relative_errors(rate_limit_model(model), convert(model), x, [8, 32, 128])
    assert errors[128] < errors[32] < errors[8], errors
    assert errors[128] < 0.25 * errors[8], errors


def test_compensated_attention_beats_per_step_attention():
    """On one attention layer the per-step products of the MST reference code stay biased as T grows;
    the compensated products converge to the ANN."""
    from snnconvert.convert.attention import SpikeAttention

    torch.manual_seed(0)
    attn = SpikeAttention(nn.Linear(16, 48), nn.Linear(16, 16), num_heads=2, levels=8, threshold=1.0)
    x = torch.randn(32, 10, 16)
    calibrate_thresholds(attn, [(x, None)], CalibrationConfig("percentile", 99.0, "layer", 32))
    attn.eval()
    limit = rate_limit_model(attn)
    compensated = _relative_errors(limit, convert(attn, "compensated"), x, [16, 256])
    per_step = _relative_errors(limit, convert(attn, "mst"), x, [16, 256])
    assert compensated[256] < 0.25 * compensated[16], compensated
    assert compensated[256] < 0.5 * per_step[256], (compensated, per_step)


def test_convert_swaps_modules_and_lists_float_ops():
    model, _ = _calibrated("swin")
    n_qcfs = sum(isinstance(m, QCFS) for m in model.modules())
    snn = convert(model)
    assert sum(isinstance(m, IFNeuron) for m in snn.modules()) == n_qcfs
    assert not any(isinstance(m, QCFS) for m in snn.modules())
    products = [m for m in snn.modules() if isinstance(m, ExpectationCompensated) and m.bilinear]
    assert len(products) == 2 * 4  # Q·Kᵀ and attention·V in 4 blocks
    ops = float_operations(snn)
    assert sorted(op.name for op in ops if op.kind == "Softmax") == [
        f"layers.{i}.blocks.{j}.attn.softmax" for i in (0, 1) for j in (0, 1)]
    # patch-embedding, patch-merging and final norms are folded; the residual-stream norms are not
    assert all(".norm1.norm" in op.name or ".norm2.norm" in op.name
               for op in ops if op.kind == "ChannelBatchNorm")
    mst = convert(model, "mst")
    assert not any(isinstance(m, ExpectationCompensated) for m in mst.modules())
    assert {op.why for op in float_operations(mst) if op.kind == "Softmax"} == {"nonlinearity applied to each step"}


def test_convert_refuses_unprepared_model_and_unknown_mode():
    with pytest.raises(SnnConvertError, match="prepare"):
        convert(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    model, _ = _calibrated("vit")
    with pytest.raises(SnnConvertError, match="compensated"):
        convert(model, "exact")
