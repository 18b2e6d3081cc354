"""Random Spike Masking: the fraction it drops, exactness at ratio 0, seeds, sites and conversion."""
import copy

import pytest
import torch

from snnconvert.convert import NeuronConfig, RandomSpikeMask, convert
from snnconvert.prepare import MASK_TARGETS, MaskConfig, PrepareConfig, add_spike_masks, prepare, spike_masks
from snnconvert.prepare.qcfs import QCFS
from snnconvert.prepare.rsm import TARGETS
from snnconvert.errors import SnnConvertError
from snnconvert.runtime import simulate
from snnconvert.runtime.neurons import IFNeuron

from conftest import SPEC_28, SPEC_32, images, tiny_swin, tiny_timm_resnet, tiny_vit


@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
def test_mask_removes_a_fraction_p(p):
    spikes = (torch.rand(200_000) < 0.3).float()
    kept = RandomSpikeMask(p, seed=1)(spikes).sum() / spikes.sum()
    n = spikes.sum()
    assert abs(kept - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5  # within 5 standard deviations


def test_same_seed_same_masks_and_reseed_restarts():
    x = torch.ones(1000)
    a, b, c = (RandomSpikeMask(0.5, seed=s).eval() for s in (3, 3, 4))
    first = a(x)
    assert torch.equal(first, b(x)) and not torch.equal(first, c(x))
    assert not torch.equal(a(x), first)  # a new draw every step
    a.reseed()
    assert torch.equal(a(x), first)


def test_training_masks_draw_from_the_global_generator():
    x, mask = torch.ones(1000), RandomSpikeMask(0.5, seed=3).train()
    torch.manual_seed(11)
    first = mask(x)
    torch.manual_seed(11)
    assert torch.equal(mask(x), first)  # reproducible through the trainer's seed and RNG checkpoints
    assert (first == 0).float().mean() == pytest.approx(0.5, abs=0.08)
    with pytest.raises(SnnConvertError, match=r"\[0, 1\)"):
        MaskConfig({"attn": 1.0})


def _low_thresholds(model):
    for m in model.modules():
        if isinstance(m, QCFS):
            m.threshold.data.fill_(0.5)
    return model


def _prepared_vit():
    x, _ = images(SPEC_28, 2)
    return _low_thresholds(prepare(tiny_vit(), x).eval())


def test_ratio_zero_changes_nothing_bit_for_bit():
    x, y = images(SPEC_28, 16)
    plain = _prepared_vit()
    masked = copy.deepcopy(plain)
    add_spike_masks(masked, MaskConfig({"q": 0.0, "k": 0.0, "attn": 0.0, "mlp": 0.0}))
    with torch.no_grad():
        assert torch.equal(plain(x), masked(x))
    a, b = simulate(convert(plain), x, y, timesteps=6), simulate(convert(masked), x, y, timesteps=6)
    assert a.correct == b.correct and [l.spikes for l in a.layers] == [l.spikes for l in b.layers]


def test_sites_blocks_and_conversion():
    model = _prepared_vit()  # 2 blocks
    masked = add_spike_masks(model, MaskConfig({"q": 0.5, "mlp": 0.75}, blocks=1, seed=7))
    assert masked == ["blocks.0.attn.q_act", "blocks.0.mlp.act"]
    masks = spike_masks(model)
    assert [m.ratio for m in masks.values()] == [0.5, 0.75] and [m.seed for m in masks.values()] == [7, 8]
    snn = convert(model)  # the masks go into the IF neurons the sites become: they mask what the neuron sends
    q0, q1 = snn.get_submodule("blocks.0.attn.q_act"), snn.get_submodule("blocks.1.attn.q_act")
    assert isinstance(q0, IFNeuron) and isinstance(q0.mask, RandomSpikeMask)
    assert isinstance(q1, IFNeuron) and q1.mask is None
    with pytest.raises(SnnConvertError, match="masked already"):
        add_spike_masks(model, MaskConfig({"q": 0.5}))
    with pytest.raises(SnnConvertError, match="unknown masking targets"):
        MaskConfig({"values": 0.5})


def test_sa_target_masks_q_k_and_scores_of_the_first_blocks():
    model = _prepared_vit()
    assert add_spike_masks(model, MaskConfig({"sa": 0.5}, blocks=1)) == [
        "blocks.0.attn.q_act", "blocks.0.attn.k_act", "blocks.0.attn.attn_act"]
    assert set(TARGETS) | {"conv"} == set(MASK_TARGETS)


def test_masks_travel_in_the_prepare_config_and_checkpoints(tmp_path):
    from snnconvert import workflow
    from snnconvert.model_zoo import get_recipe

    recipe = get_recipe("vit_nano")
    masks = MaskConfig({"attn": 0.75, "mlp": 0.25}, blocks=2, seed=5)
    loaded = workflow.load("vit_nano", None)
    masked = workflow.prepare_masked(loaded.model, masks)
    config = PrepareConfig(levels=loaded.prepare_config.levels, masks=masks)
    workflow.save_prepared(tmp_path / "masked.pt", masked, recipe, config)
    again = workflow.load("vit_nano", str(tmp_path / "masked.pt"))
    assert again.prepare_config == config and again.prepare_config.masks == masks
    assert {n: (m.ratio, m.seed) for n, m in spike_masks(again.model).items()} == {
        n: (m.ratio, m.seed) for n, m in spike_masks(masked).items()} and len(spike_masks(masked)) == 4
    snn = workflow.load_snn("vit_nano", str(tmp_path / "masked.pt"), "compensated", NeuronConfig()).snn
    assert len(spike_masks(snn)) == 4
    x, y = images(recipe.input_spec, 8)
    reference = convert(masked)
    assert simulate(snn, x, y, timesteps=4).correct == simulate(reference, x, y, timesteps=4).correct  # same seeds


def test_masks_drop_spikes_in_simulation_and_swin_windows():
    model = _low_thresholds(prepare(tiny_swin(), images(SPEC_32, 2)[0]).eval())
    add_spike_masks(model, MaskConfig({"attn": 0.5, "mlp": 0.5}))
    snn = convert(model)
    seen = {"in": 0.0, "out": 0.0}

    def count(module, inputs, out):
        seen["in"] += float((inputs[0] != 0).sum())
        seen["out"] += float((out != 0).sum())

    for mask in spike_masks(snn).values():
        mask.register_forward_hook(count)
    x, y = images(SPEC_32, 8)
    simulate(snn, x, y, timesteps=8)
    assert seen["in"] > 1000 and seen["out"] / seen["in"] == pytest.approx(0.5, abs=0.03)


def test_conv_target_masks_every_cnn_activation():
    model = prepare(tiny_timm_resnet(), images(SPEC_28, 2)[0]).eval()
    n_sites = sum(isinstance(m, QCFS) for m in model.modules())
    masked = add_spike_masks(model, MaskConfig({"conv": 0.25}))
    assert len(masked) == n_sites and all(m.ratio == 0.25 for m in spike_masks(model).values())
    x, _ = images(SPEC_28, 4)
    with torch.no_grad():
        assert convert(model)(x).shape == (4, 10)


def test_monitor_counts_only_transmitted_spikes():
    from snnconvert.runtime import SpikeMonitor

    model = _prepared_vit()
    add_spike_masks(model, MaskConfig({"mlp": 0.5}))
    snn = convert(model)
    mask = snn.get_submodule("blocks.0.mlp.act").mask
    passed, fired = [], []

    def record(_mask, inputs, out):
        passed.append(float((out != 0).sum()))
        fired.append(float((inputs[0] != 0).sum()))

    mask.register_forward_hook(record)
    x, _ = images(SPEC_28, 8)
    with SpikeMonitor(snn) as monitor, torch.no_grad():
        for _ in range(5):
            snn(x)
    layer = {l.name: l for l in monitor.results()}["blocks.0.mlp.act"]
    assert layer.spikes == sum(passed) and sum(fired) > 1.5 * sum(passed)  # fired, then half dropped
