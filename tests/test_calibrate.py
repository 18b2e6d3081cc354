"""Threshold calibration: max, percentile and MSE, layer- and channel-wise; BatchNorm statistics."""
import pytest
import torch
from torch import nn

from snnconvert.calibrate import ActivationObserver, CalibrationConfig, calibrate_batchnorm, calibrate_thresholds
from snnconvert.prepare import QCFS, prepare
from snnconvert.prepare.rewrite import qcfs_modules

from conftest import images, tiny_swin, SPEC_32


def test_observer_statistics_layer_wise():
    obs = ActivationObserver(None)
    x = torch.cat([torch.linspace(0, 1, 10001), -torch.ones(100)])
    obs.observe(x[:5000])
    obs.observe(x[5000:])
    assert obs.threshold("max") == pytest.approx(1.0)
    assert obs.threshold("percentile", 99.0) == pytest.approx(0.99, abs=1e-3)
    mse = obs.threshold("mse", levels=8)
    assert 0.8 < mse <= 1.0  # uniform data: the best clip is near the maximum


def test_mse_threshold_clips_outliers():
    obs = ActivationObserver(None)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(100000, generator=g), torch.tensor([50.0])])
    obs.observe(x)
    assert obs.threshold("mse", levels=4) < 2.0 < obs.threshold("max")


def test_observer_channel_wise_shapes():
    obs = ActivationObserver(1)
    x = torch.rand(4, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    obs.observe(x)
    lam = obs.threshold("max")
    assert lam.shape == (3, 1, 1)
    assert torch.allclose(lam.flatten(), x.amax(dim=(0, 2, 3)))
    tokens = ActivationObserver(-1)
    tokens.observe(torch.rand(2, 7, 6))
    assert tokens.threshold("percentile", 99.9).shape == (6,)


def test_calibrate_thresholds_on_a_model():
    x, _ = images(SPEC_32, 32)
    model = prepare(tiny_swin(), x)
    calibrate_batchnorm(model, [(x, None)], num_samples=32)
    cfg = CalibrationConfig(method="percentile", percentile=99.9, granularity="channel", num_samples=32)
    thresholds = calibrate_thresholds(model, [(x, None)], cfg)
    sites = qcfs_modules(model)
    assert set(thresholds) == set(sites)
    for name, q in sites.items():
        assert torch.all(q.threshold > 0)
        if q.channel_axis is None:
            assert q.threshold.dim() == 0, name
        else:
            assert q.threshold.numel() > 1, name
    assert model(x).shape == (32, 10)


def test_calibrate_uses_only_the_requested_samples():
    seen = []
    model = nn.Sequential(nn.Linear(3, 3), QCFS(4, 1.0, channel_axis=1))
    model.register_forward_pre_hook(lambda _m, inp: seen.append(len(inp[0])))
    loader = [(torch.randn(10, 3), None)] * 5
    calibrate_thresholds(model, loader, CalibrationConfig(num_samples=25))
    assert seen == [10, 10, 5]


def test_calibrate_batchnorm_estimates_statistics_and_restores_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
    x = torch.randn(64, 4) * 3 + 1
    calibrate_batchnorm(model, [(x[:32], None), (x[32:], None)], num_samples=64)
    assert not model.training
    h = model[0](x)
    assert torch.allclose(model[1].running_mean, h.mean(0), atol=1e-5)
    assert model[1].momentum == 0.1


def test_calibrate_batchnorm_only_touches_the_named_ones():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
    calibrate_batchnorm(model, [(torch.randn(32, 4), None)], num_samples=32, only=["3"])
    assert torch.equal(model[1].running_mean, torch.full((4,), 3.0))  # a pretrained BatchNorm keeps its statistics
    assert not torch.equal(model[3].running_mean, torch.zeros(4))


def test_relu6_cap_is_kept_by_calibration():
    from snnconvert.prepare import prepare_with_report

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    x = torch.randn(16, 1, 28, 28) * 20  # activations far above 6
    prepared, report = prepare_with_report(model, x[:2])
    assert [c.what for c in report.function_changes] == ["relu6 → QCFS"]
    site = qcfs_modules(prepared)["1"]
    assert site.cap == 6.0 and float(site.threshold.detach()) == 6.0
    calibrate_thresholds(prepared, [(x, None)], CalibrationConfig("max", num_samples=16))
    assert float(site.effective_threshold().detach()) == 6.0  # observed maxima are far larger: λ stays at the cap
    with torch.no_grad():
        assert float(site(torch.full((1,), 50.0))) == 6.0


def test_bad_calibration_options():
    with pytest.raises(ValueError, match="method"):
        CalibrationConfig(method="kl")
    with pytest.raises(ValueError, match="granularity"):
        CalibrationConfig(granularity="head")
