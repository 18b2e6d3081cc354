"""Synaptic operations and MACs counted by hand on tiny layers."""
import pytest
import torch
from torch import nn

from snnconvert.convert import convert, prepare
from snnconvert.runtime import reset_states
from snnconvert.runtime.energy import EnergyCosts, OpCounter
from snnconvert.runtime.neurons import IFNeuron

from conftest import SPEC_28, images, tiny_vit


def test_linear_sops_and_macs_by_hand():
    # image → Linear(4, 3) (real input: MACs) → IF (θ = 1, v0 = 0) → Linear(3, 2) (spikes: SOPs)
    first = nn.Linear(4, 3)
    with torch.no_grad():
        first.weight.copy_(torch.eye(3, 4))
        first.bias.zero_()
    model = nn.Sequential(first, IFNeuron(1.0, initial_potential=0.0), nn.Linear(3, 2))
    x = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # row 0 fires neurons 0 and 2
    with OpCounter(model) as counter:
        model(x)
    ops = {o.name: o for o in counter.results()}
    assert (ops["0"].macs, ops["0"].sops) == (2 * 4 * 3, 0)
    assert (ops["2"].macs, ops["2"].sops) == (0, 2 * 2)  # 2 spikes × 2 outputs
    assert EnergyCosts().of(ops["2"].sops, ops["2"].macs) == pytest.approx(4 * 0.9)
    assert EnergyCosts(1.0, 2.0).of(10, 3) == 16.0 and EnergyCosts().of(0, 1) == 4.6
    with pytest.raises(ValueError, match=">= 0"):
        EnergyCosts(-1.0)
    reset_states(model)
    with OpCounter(model, all_real=True) as ann:
        model(x)
    assert [o.macs for o in ann.results()] == [24, 12]


def test_conv_sops_count_every_connection_at_the_edges():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    model = nn.Sequential(IFNeuron(1.0, initial_potential=0.0), conv)
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = 1.0  # a corner spike reaches 4 outputs, the centre one all 9
    with OpCounter(model) as counter:
        model(x)
    assert counter.results()[0].sops == (4 + 9) * 2


def test_a_converted_vit_counts_its_first_layer_as_macs_and_spiking_layers_as_sops():
    snn = convert(prepare(tiny_vit()).eval())
    x, _ = images(SPEC_28, 4)
    with OpCounter(snn) as counter, torch.no_grad():
        for _ in range(3):
            snn(x)
    ops = {o.name: o for o in counter.results()}
    assert ops["patch_embed.proj"].sops == 0 and ops["patch_embed.proj"].macs == 3 * 4 * 16 * 24 * 49
    assert ops["blocks.0.mlp.fc2"].macs == 0 and ops["blocks.0.attn.proj"].macs == 0
    assert ops["head"].sops == 0 and ops["head"].macs > 0


def test_spikes_are_recognized_after_swin_window_partition_and_shift():
    from snnconvert.model_zoo import get_recipe, load_model

    loaded = load_model(get_recipe("swin_nano"))  # trained: every layer carries events
    snn = convert(loaded.model)
    x, _ = images(loaded.recipe.input_spec, 2)
    with OpCounter(snn) as counter, torch.no_grad():
        for _ in range(4):
            snn(x)
    real = {o.name for o in counter.results() if o.macs}
    # only the layers fed real values: the image, the residual stream into patch merging, the head
    assert real == {"patch_embed.proj", "layers.1.downsample.reduction.linear", "head.fc"}
    assert all(o.sops > 0 for o in counter.results() if o.name not in real)
