"""BatchNorm folding is exact."""
import pytest
import torch
from torch import nn

from snnconvert.convert import ChannelBatchNorm, fold_batchnorms, prepare
from snnconvert.convert.prepare import qcfs_modules

from conftest import ARCHITECTURES


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


@pytest.mark.parametrize("pair", ["conv_bn", "linear_bn", "bn_linear", "channel_bn_linear"])
def test_fold_pair_exact(pair):
    layers = {
        "conv_bn": nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)),
        "linear_bn": nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5)),
        "bn_linear": nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 5, bias=False)),
        "channel_bn_linear": nn.Sequential(ChannelBatchNorm(6), nn.Linear(6, 5)),
    }[pair].double()
    _randomize_bn(layers)
    layers.eval()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64) if pair == "conv_bn" else torch.randn(4, 6, dtype=torch.float64)
    if pair == "channel_bn_linear":
        x = torch.randn(4, 9, 6, dtype=torch.float64)
    expected = layers(x)
    folded = fold_batchnorms(layers)
    assert len(folded) == 1
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in layers.modules())
    assert torch.allclose(layers(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_fold_whole_model_exact(arch):
    factory, spec = ARCHITECTURES[arch]
    model = prepare(factory()).double()
    _randomize_bn(model)
    for q in qcfs_modules(model).values():
        q.threshold.data.fill_(1.0)
    model.eval()
    x = torch.randn(3, *spec.size, dtype=torch.float64)
    expected = model(x)
    had_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    folded = fold_batchnorms(model)
    assert bool(folded) == had_bn
    assert torch.allclose(model(x), expected, rtol=1e-9, atol=1e-9)
