"""Direct training: surrogate gradients, neuron dynamics by hand, encoders' statistics, event frames,
spiking transformers unrolled over T and run by the conversion path's simulator."""
import math

import pytest
import timm
import torch
from torch import nn

from snnconvert.direct import (ChannelReduction, DirectConfig, SpikingClassifier, events_to_frames, make_encoder,
                               make_node, surrogate)
from snnconvert.errors import SnnConvertError
from snnconvert.runtime import simulate
from snnconvert.runtime.neurons import IFNeuron


@pytest.mark.parametrize("name, alpha, derivative", [
    ("sigmoid", 4.0, lambda x, a: a * torch.sigmoid(a * x) * (1 - torch.sigmoid(a * x))),
    ("atan", 2.0, lambda x, a: a / 2 / (1 + (math.pi / 2 * a * x) ** 2)),
    ("softsign", 2.0, lambda x, a: a / (2 * (1 + (a * x).abs()) ** 2)),
    ("triangle", 1.0, lambda x, a: torch.clamp(a - a * a * x.abs(), min=0)),
])
def test_surrogate_gradients_match_their_analytic_derivatives(name, alpha, derivative):
    sg = surrogate(name)
    assert sg.alpha == alpha
    x = torch.linspace(-2, 2, 401, dtype=torch.float64, requires_grad=True)
    y = sg(x)
    assert torch.equal(y.detach(), (x >= 0).double())  # forward: the Heaviside step
    y.sum().backward()
    assert torch.allclose(x.grad, derivative(x.detach(), alpha), atol=1e-12)
    smooth = x.detach().clone().requires_grad_(True)
    sg.primitive(smooth).sum().backward()  # the backward is the derivative of the smooth primitive g
    assert torch.allclose(x.grad, smooth.grad, atol=1e-9)
    assert float(sg.primitive(torch.tensor(-50.0))) == pytest.approx(0, abs=1e-2)
    assert float(sg.primitive(torch.tensor(50.0))) == pytest.approx(1, abs=1e-2)
    with pytest.raises(SnnConvertError, match="unknown surrogate"):
        surrogate("relu")


def _run(node, inputs):
    return [float(node(torch.tensor([x])).detach()) for x in inputs]


def test_neuron_dynamics_by_hand():
    # IF, θ = 1: 0.6 → 1.2 fires; hard reset to 0 leaves 0.6; soft reset keeps 0.2 → 0.8
    hard, soft = make_node("if", reset="hard"), make_node("if", reset="soft")
    assert _run(hard, [0.6, 0.6, 0.6]) == [0, 1, 0] and float(hard.v.detach()) == pytest.approx(0.6)
    assert _run(soft, [0.6, 0.6, 0.6]) == [0, 1, 0] and float(soft.v) == pytest.approx(0.8)
    # LIF, τ = 2: H = V + (X − V)/2: 0.75, 1.125 (fires, → 0), 0.75
    lif = make_node("lif", tau=2.0)
    assert _run(lif, [1.5, 1.5]) == [0, 1] and float(lif.v) == 0.0  # the 0.125 over θ is discarded
    assert _run(lif, [1.5]) == [0] and float(lif.v) == pytest.approx(0.75)
    lif_soft = make_node("lif", tau=2.0, reset="soft")
    assert _run(lif_soft, [1.5, 1.5]) == [0, 1] and float(lif_soft.v) == pytest.approx(0.125)
    # KLIF: ReLU(k·H) keeps the potential from going negative; LIF goes to −0.5
    klif, lif = make_node("klif", tau=2.0), make_node("lif", tau=2.0)
    _run(klif, [-1.0]), _run(lif, [-1.0])
    assert float(klif.v.detach()) == 0.0 and float(lif.v) == pytest.approx(-0.5)
    # PLIF starts as LIF with τ₀ (1/τ = sigmoid(w)) and learns w through the surrogate gradient
    plif = make_node("plif", tau=2.0)
    assert float(torch.sigmoid(plif.w)) == pytest.approx(0.5)
    x = torch.full((64,), 1.5)
    sum(plif(x).sum() for _ in range(3)).backward()
    assert plif.w.grad is not None and plif.w.grad != 0
    plif.reset()
    assert _run(plif, [1.5, 1.5, 1.5]) == [0, 1, 0]
    with pytest.raises(SnnConvertError, match="unknown neuron"):
        make_node("hodgkin-huxley")


def test_time_batched_steps_equal_stepping():
    from snnconvert.runtime.state import set_steps

    x = torch.rand(6, 4, 5) * 2
    single, batched = make_node("lif", tau=3.0), make_node("lif", tau=3.0)
    set_steps(batched, 6)  # six steps per call, time outermost: [6·4, 5]
    assert torch.equal(torch.stack([single(x_t) for x_t in x]), batched(x.flatten(0, 1)).unflatten(0, (6, 4)))


def test_encoders_spike_statistics():
    torch.manual_seed(0)
    p = torch.rand(1, 1, 16, 16)
    x = (p - 0.3) / 0.4  # normalized the way the datasets do it; encoders map back to p
    rate = make_encoder("poisson", 4, (0.3,), (0.4,))
    mean = torch.stack([rate(x) for _ in range(2000)]).mean(0)
    assert set(rate(x).unique().tolist()) <= {0.0, 1.0}
    assert (mean - p).abs().max() < 5 * math.sqrt(0.25 / 2000)
    T = 8
    latency = make_encoder("latency", T, (0.3,), (0.4,))
    spikes = torch.stack([latency(x) for _ in range(T)])
    assert torch.equal(spikes.sum(0), torch.ones_like(p))  # one spike per (nonzero) pixel
    first = spikes.argmax(0).float()
    assert torch.equal(first, torch.round((1 - p) * (T - 1)))  # brighter pixels fire earlier
    phase = make_encoder("phase", 8, (0.3,), (0.4,))
    out = torch.stack([phase(x) for _ in range(8)])
    assert (out.sum(0) - p).abs().max() <= 2.0 ** -8  # 8 weighted bits recover the intensity
    assert set(out[0].unique().tolist()) <= {0.0, 0.5} and set(out[7].unique().tolist()) <= {0.0, 2.0 ** -8}
    direct = make_encoder("direct", 4)
    assert torch.equal(direct(x), x) and not direct.emits_spikes and rate.emits_spikes
    assert DirectConfig(encoding="rate").encoding == "poisson"  # the name checkpoints of 0.1 stored


def test_events_to_frames_and_channel_reduction():
    x, y = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2])
    t, polarity = torch.tensor([0.0, 4.0, 5.0, 10.0]), torch.tensor([1, -1, 1, 1])
    frames = events_to_frames(x, y, t, polarity, size=(3, 3), frames=2)  # bins [0, 5) and [5, 10]
    assert frames.shape == (2, 2, 3, 3) and frames.sum() == 4
    assert frames[0, 1, 0, 0] == 1 and frames[0, 0, 0, 1] == 1 and frames[1, 1, 1, 1] == 1 and frames[1, 1, 2, 2] == 1
    with pytest.raises(SnnConvertError, match="outside"):
        events_to_frames(x, y, t, polarity, size=(2, 2), frames=2)
    reduce = ChannelReduction(frames=2, channels=2, out_channels=3)
    assert reduce(frames.unsqueeze(0)).shape == (1, 3, 3, 3)


def _spikformer(neuron="lif", **kw):
    config = DirectConfig(neuron=neuron, **kw)
    net = timm.create_model("spikformer_nano", img_size=28, in_chans=1, num_classes=10, embed_dim=32, depth=1,
                            **config.neuron_args())
    return SpikingClassifier(net, make_encoder(config.encoding, config.timesteps), config.timesteps)


def test_spikformer_trains_through_time_and_simulates_the_same():
    torch.manual_seed(0)
    model = _spikformer("plif", surrogate="atan")
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    stem = model.network.patch_embed.stem[0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0  # gradients reach the first layer through time
    model.eval()
    with torch.no_grad():
        expected = model(x).argmax(-1)
    result = simulate(model.stepper(), x, expected, timesteps=model.timesteps)
    assert result.accuracy[-1] == 100.0  # the simulator sums the same T outputs
    folded = model.for_inference(x[:2])
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert simulate(folded, x, expected, timesteps=model.timesteps).accuracy[-1] >= 87.5
    layers = {layer.name for layer in result.layers}
    assert "1.blocks.0.attn.attn_sn" in layers and all(0 <= l.rate <= 1 for l in result.layers)


def test_spiking_vit_and_sums_of_spikes_count_as_spike_events():
    net = timm.create_model("spiking_vit_nano", img_size=28, in_chans=1, num_classes=10, neuron="if").eval()
    vit = simulate(net, torch.randn(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), timesteps=2).ops
    kinds = {o.name.rsplit(".", 1)[-1]: o.kind for o in vit}
    assert kinds["qkv"] == "linear" and kinds["qk"] == "product" and kinds["softmax"] == "elementwise"
    assert all(o.sops + o.macs + o.float_ops + o.adds > 0 for o in vit)  # every op is seen doing work
    a, b = IFNeuron(1.0, initial_potential=0.0), IFNeuron(1.0, initial_potential=0.0)
    layer = nn.Linear(3, 2)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.layer = a, b, layer

        def forward(self, x):
            return self.layer(self.a(x) + self.b(x))  # spikes summed: values 0, 1 or 2

    result = simulate(Residual(), torch.tensor([[1.0, 0.0, 1.0]]), torch.zeros(1, dtype=torch.long), timesteps=1)
    layer_ops = {o.name: o for o in result.ops}["layer"]  # both fire at 0 and 2: 4 events reach 2 outputs
    assert layer_ops.sops == 4 * 2 and layer_ops.macs == 0
