"""Synaptic operations and MACs counted by hand on tiny layers."""
import pytest
import torch
from torch import nn

from snnconvert.convert import convert, prepare
from snnconvert.runtime import reset_states
from snnconvert.runtime.energy import EnergyCosts, OpCounter
from snnconvert.runtime.neurons import IFNeuron
from snnconvert.runtime.operators import ExpectationCompensated, MatMul

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
    layers = [o for o in counter.results() if o.kind == "linear"]
    real = {o.name for o in layers if o.macs}
    # only the layers fed real values: the image, the residual stream into patch merging, the head
    assert real == {"patch_embed.proj", "layers.1.downsample.reduction.linear", "head.fc"}
    assert all(o.sops > 0 for o in layers if o.name not in real)
    products = {o.name.rsplit(".", 1)[-1]: o for o in counter.results() if o.kind == "product"}
    assert set(products) == {"qk", "av"} and products["qk"].macs == 0  # Q·Kᵀ: spikes × spikes, additions only
    assert products["av"].macs > 0 and products["av"].sops > 0  # softmax (real) × V (spikes)


def _two_spike_streams(n, k, m):
    """IF neurons (θ = 1, v0 = 0) feeding a compensated product a @ b: inputs ≥ 1 fire at once."""
    a, b = IFNeuron(1.0, initial_potential=0.0), IFNeuron(1.0, initial_potential=0.0)
    product = ExpectationCompensated(MatMul(), bilinear=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.product = a, b, product

        def forward(self, x, y):
            return self.product(self.a(x), self.b(y))

    return Net()


def test_compensated_product_counts_by_hand():
    net = _two_spike_streams(2, 3, 4)
    x, y = torch.zeros(2, 3), torch.zeros(3, 4)
    x[0, 0] = x[1, 2] = 1.0  # 2 events in a (n=2, k=3)
    y[1, 1] = 1.0  # 1 event in b (k=3, m=4)
    with OpCounter(net) as counter:
        net(x, y)  # t = 1: a_1·B_1 only (A_0 = 0): 2 events × m=4; emit 2×4 outputs
        first = counter.results()[0]
        assert (first.kind, first.sops, first.macs, first.float_ops) == ("product", 2 * 4, 0, 8)
        net(torch.zeros(2, 3), y * 0.0 + (y > 0))  # t = 2: no event in a, 1 in b: A_1·b_2 → 1 × n=2
    op = counter.results()[0]
    assert (op.sops, op.macs, op.float_ops) == (8 + 2, 0, 16)
    reset_states(net)
    with OpCounter(net, all_real=True) as ann:  # an ANN multiplies densely: n·m outputs × k
        net(x, y)
    assert ann.results()[0].macs == 2 * 4 * 3


def test_real_operands_softmax_and_energy_sum():
    product = ExpectationCompensated(MatMul(), bilinear=True)
    spikes = IFNeuron(1.0, initial_potential=0.0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.softmax, self.v, self.product = ExpectationCompensated(nn.Softmax(-1)), spikes, product

        def forward(self, scores, v):
            return self.product(self.softmax(scores), self.v(v))

    net = Net()
    scores, v = torch.randn(5, 5), torch.zeros(5, 3)
    v[0, 0] = v[4, 2] = 1.0
    with OpCounter(net) as counter:
        net(scores, v)
        net(scores, v)
    ops = {o.name: o for o in counter.results()}
    assert ops["softmax"].float_ops == 2 * 25 and ops["softmax"].kind == "elementwise"
    # t=1: softmax (real, 5×5) × B → 25 × m=3 MACs; t=2: + the same, and 2 events of v × n=5 additions
    assert (ops["product"].macs, ops["product"].sops, ops["product"].float_ops) == (2 * 75, 2 * 5, 2 * 15)
    assert EnergyCosts(1.0, 2.0).of(10, 150, 80) == 10 + 2 * 230
