"""Synaptic operations, MACs, float ops and additions, counted by hand on tiny graphs."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnconvert.convert import convert
from snnconvert.prepare import PrepareConfig, prepare
from snnconvert.graph.events import EVENTS, REAL, classify
from snnconvert.runtime import SimulationOptions, reset_states, simulate
from snnconvert.errors import ArgumentError
from snnconvert.runtime.coding import InputOnce
from snnconvert.runtime.energy.conventions import TwinCosts, energy_conventions
from snnconvert.runtime.energy import EnergyCosts, EventCounts, LayerOps, OpAccounting
from snnconvert.runtime.neurons import IFNeuron
from snnconvert.runtime.operators import ExpectationCompensated, MatMul
from snnconvert.runtime.simulator import _as_graph
from snnconvert.runtime.streams import PREFIX, watching

from conftest import SPEC_28, images, tiny_vit


def _ops(model: nn.Module, x: torch.Tensor, timesteps: int = 1) -> dict:
    return {o.name: o for o in simulate(model, x, torch.zeros(len(x), dtype=torch.long), timesteps=timesteps).ops}


def test_linear_sops_and_macs_by_hand():
    # image → Linear(4, 3) (real input: MACs) → IF (θ = 1, v0 = 0) → Linear(3, 2) (events: SOPs)
    first = nn.Linear(4, 3)
    with torch.no_grad():
        first.weight.copy_(torch.eye(3, 4))
        first.bias.zero_()
    model = nn.Sequential(first, IFNeuron(1.0, initial_potential=0.0), nn.Linear(3, 2))
    x = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # row 0 fires neurons 0 and 2
    ops = _ops(model, x)
    assert (ops["0"].macs, ops["0"].sops) == (2 * 4 * 3, 0)
    assert (ops["2"].macs, ops["2"].sops) == (0, 2 * 2)  # 2 spikes × 2 outputs
    assert EnergyCosts().of(ops["2"].sops, ops["2"].macs) == pytest.approx(4 * 0.9)
    assert EnergyCosts(1.0, 2.0).of(10, 3, 1, 5) == 10 + 5 + 2 * 4 and EnergyCosts().of(0, 1) == 4.6
    with pytest.raises(ValueError, match=">= 0"):
        EnergyCosts(-1.0)
    dense = {o.name: o.macs for o in OpAccounting(_as_graph(model, x, x, "cpu"), dense=True).per_sample()}
    assert dense == {"0": 12, "2": 6}  # the ANN: every input real, per sample


def test_conv_sops_count_every_connection_at_the_edges():
    model = nn.Sequential(IFNeuron(1.0, initial_potential=0.0), nn.Conv2d(1, 2, 3, padding=1))
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = 1.0  # a corner spike reaches 4 outputs, the centre one all 9
    assert _ops(model, x)["1"].sops == (4 + 9) * 2


def test_events_through_rearrangements_pooling_and_sums():
    """Fan-out is counted through what lies between a neuron and a layer: a sum of two neurons'
    spikes (each spike is an event), an average pool (each spike reaches its window's output) and
    a reshape; a real value plus spikes costs one addition per spike."""
    a, b = IFNeuron(1.0, initial_potential=0.0), IFNeuron(1.0, initial_potential=0.0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.pool, self.fc = a, b, nn.AvgPool2d(2), nn.Linear(4, 3)

        def forward(self, x):
            s = self.pool(self.a(x) + self.b(x))  # [1, 1, 2, 2]
            return self.fc(s.reshape(1, 4)) + x.mean()

    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = x[0, 0, 3, 3] = 1.0  # 2 spikes in a, 2 in b
    graph = _as_graph(Net(), x, x, "cpu")
    classes, _ = classify(graph)
    by_name = {n.name: c for n, c in classes.items()}
    assert by_name["pool"] == EVENTS and by_name["fc"] == REAL
    ops = _ops(Net(), x)
    assert ops["fc"].sops == 4 * 3 and ops["fc"].macs == 0


def _product_net():
    class Net(nn.Module):
        """z: [1, 3, 6]; a = A(z[:, :, :2]ᵀ) ([1, 2, 3] spikes), b = B(z[:, :, 2:]) ([1, 3, 4]); a @ b compensated."""

        def __init__(self):
            super().__init__()
            self.a, self.b = IFNeuron(1.0, initial_potential=0.0), IFNeuron(1.0, initial_potential=0.0)
            self.product = ExpectationCompensated(MatMul(), bilinear=True)

        def forward(self, z):
            return self.product(self.a(z[:, :, :2].transpose(1, 2)), self.b(z[:, :, 2:]))

    return Net()


def test_compensated_product_counts_by_hand():
    z = torch.zeros(1, 3, 6)
    z[0, 0, 0] = z[0, 2, 1] = 1.0  # 2 events in a (n=2, k=3)
    graph = _as_graph(_product_net(), z, z, "cpu")
    accounting = OpAccounting(graph)
    second = torch.zeros(1, 3, 6)
    second[0, 1, 3] = 1.0  # 1 event in b (k=3, m=4)
    with EventCounts({n: graph.get_submodule(n) for n in accounting.sources}) as events, torch.no_grad():
        reset_states(graph)
        graph(z)  # t = 1: a_1·B_1 only (A_0 = 0): 2 events × m=4; emit 2×4 outputs
        graph(second)  # t = 2: no event in a, 1 in b: A_1·b_2 → 1 × n=2
        events.end_batch(1)
    (op,) = [o for o in accounting.results(events.totals, events.at, 1, {None: 2, 1: 1}) if o.kind == "product"]
    assert (op.sops, op.macs, op.float_ops) == (8 + 2, 0, 16)
    dense = [o for o in OpAccounting(graph, dense=True).per_sample() if o.kind == "product"]
    assert dense[0].macs == 2 * 4 * 3  # an ANN multiplies densely: n·m outputs × k


def test_functional_ops_are_counted():
    """Ops written as function calls (F.linear, @, F.gelu) are counted like modules."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 4))
            self.q, self.k = IFNeuron(0.5, 0.0), IFNeuron(0.5, 0.0)

        def forward(self, x):
            q = self.q(F.linear(x, self.w))
            k = self.k(x @ self.w.t())
            return F.gelu(q @ k.transpose(-2, -1)).mean(-1)

    x = torch.randn(2, 3, 4).abs()
    ops = _ops(Net(), x, timesteps=2)
    kinds = sorted(o.kind for o in ops.values())
    assert kinds == ["add", "elementwise", "linear", "linear", "product"], ops
    assert all(o.sops + o.macs + o.float_ops + o.adds > 0 for o in ops.values())


def test_a_converted_vit_counts_its_first_layer_once_as_macs_and_spiking_layers_as_sops():
    x, _ = images(SPEC_28, 4)
    snn = convert(prepare(tiny_vit(), x).eval())
    ops = _ops(snn, x, timesteps=3)
    # the image is the same at every step: its patch embedding is computed, and counted, once per image
    assert ops["patch_embed.proj"].sops == 0 and ops["patch_embed.proj"].macs == 4 * 16 * 24 * 49
    assert ops["blocks.0.mlp.fc2"].macs == 0 and ops["blocks.0.attn.proj"].macs == 0
    assert ops["head"].sops == 0 and ops["head"].macs > 0  # the class token of a real residual stream


def test_spikes_are_classified_through_swin_windows_shifts_and_merging():
    from snnconvert.model_zoo import get_recipe, load_model

    loaded = load_model(get_recipe("swin_nano"))  # trained: every layer carries events
    snn = convert(loaded.model)
    x, _ = images(loaded.recipe.input_spec, 2)
    ops = _ops(snn, x, timesteps=4)
    layers = [o for o in ops.values() if o.kind == "linear"]
    real = {o.name for o in layers if o.macs}
    # only the layers fed real values: the image, and the first stage's residual stream into patch merging
    # (the second stage's stream starts from the merging's QCFS: a sum of spikes, so the head is event-driven)
    assert real == {"patch_embed.proj", "layers.1.downsample.reduction"}
    assert all(o.sops > 0 for o in layers if o.name not in real)
    products = {o.name.rsplit(".", 1)[-1]: o for o in ops.values() if o.kind == "product"}
    assert set(products) == {"qk", "av"} and products["qk"].macs == 0  # Q·Kᵀ: spikes × spikes, additions only
    assert products["av"].macs > 0 and products["av"].sops > 0  # softmax (real) × V (spikes)


def test_masks_count_only_the_spikes_they_let_through():
    from snnconvert.prepare import MaskConfig

    x, _ = images(SPEC_28, 4)
    plain = prepare(tiny_vit(), x).eval()
    for m in plain.modules():
        if hasattr(m, "threshold"):
            m.threshold.data.fill_(0.1)
    masked = prepare(tiny_vit(), x, PrepareConfig(masks=MaskConfig({"mlp": 0.9})))
    masked.load_state_dict(plain.state_dict())
    a = _ops(convert(plain), x, timesteps=8)["blocks.0.mlp.fc2"].sops
    b = _ops(convert(masked.eval()), x, timesteps=8)["blocks.0.mlp.fc2"].sops
    assert a > 5000 and 0.05 < b / a < 0.15  # the mask lets 10 % of the hidden layer's spikes through


class _CountCodedSoftmax(nn.Module):
    """image once → IF (θ = 1, v0 = 0) → compensated softmax over rows (count coding) → Linear(4, 2)."""

    def __init__(self):
        super().__init__()
        self.once, self.neuron = InputOnce(), IFNeuron(1.0, initial_potential=0.0)
        self.softmax = ExpectationCompensated(nn.Softmax(dim=-1), coding="count")
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.softmax(self.neuron(self.once(x)))).sum(1)


def test_event_driven_costs_only_what_the_sent_increments_reach():
    # rows [2.5, 0, 0, 0] (spikes at steps 1, 2), [1.2, 0, 0, 1] (step 1), [0.5, 0, 0, 0] (never)
    x = torch.tensor([[[2.5, 0, 0, 0], [1.2, 0, 0, 1.0], [0.5, 0, 0, 0]]])
    model = _CountCodedSoftmax()
    dense = _ops_of(model, x, 4, event_driven=False)
    driven = _ops_of(model, x, 4, event_driven=True)
    # dense: the softmax recomputes 3 rows × 4 every step, fc multiplies 12 values × 2 outputs
    assert (dense["softmax"].float_ops, dense["fc"].macs) == (4 * 12, 4 * 12 * 2)
    # event-driven: step 1 computes all 12 outputs and sends all 12 (softmax of a zero row is 1/4);
    # step 2 recomputes and sends row 0 only (4 values); steps 3 and 4 send nothing
    assert driven["softmax"].float_ops == 12 + 4
    assert driven["fc"].macs == (12 + 4) * 2


class _CountCodedScores(nn.Module):
    """image once → two IF (θ = 1, v0 = 0) → compensated ``a @ bᵀ`` (count coding) × 0.5 → Linear(2, 1)."""

    def __init__(self):
        super().__init__()
        self.once = InputOnce()
        self.a, self.b = IFNeuron(1.0, initial_potential=0.0), IFNeuron(1.0, initial_potential=0.0)
        self.product = ExpectationCompensated(MatMul(), bilinear=True, coding="count")
        self.fc = nn.Linear(2, 1)

    def forward(self, x):
        x = self.once(x)
        return self.fc(self.product(self.a(x), self.b(x).transpose(1, 2)) * 0.5).sum(1)


def test_event_driven_products_emit_by_additions_and_fold_their_scaling():
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])  # a = b = x: 1 spike at step 1, 1 at steps 1 and 2
    driven = _ops_of(_CountCodedScores(), x, 3, event_driven=True)
    # A_1 = B_1 = [[1,0,0],[0,0,1]]: step 1 a_1·B_1ᵀ reaches 2 spikes × 2 rows; outputs that changed:
    # (0, 0), (1, 1); step 2 (one spike at (1, 2) in a and in b): a_2·B_2ᵀ 1 × 2, A_1·b_2ᵀ 1 × 2,
    # output (1, 1) changed; step 3 sends nothing
    product = driven["product"]
    assert (product.sops, product.float_ops, product.adds) == (4 + 2 + 2, 0, 2 + 1)
    assert "mul" not in driven  # × 0.5 folded into the product: no float op per changed score
    assert driven["fc"].macs == (2 + 1) * 1  # the 3 scores sent, 1 output each


class _MixedStream(nn.Module):
    """image once → Linear(2, 2) (real, once) + IF (θ = 1, v0 = 0) spikes → Linear(2, 3): a
    residual stream's real part at the first step, then events."""

    def __init__(self):
        super().__init__()
        self.once, self.neuron = InputOnce(), IFNeuron(1.0, initial_potential=0.0)
        self.embed, self.fc = nn.Linear(2, 2, bias=False), nn.Linear(2, 3, bias=False)

    def forward(self, x):
        x = self.once(x)
        return self.fc(self.embed(x) + self.neuron(x))


def test_event_driven_weight_layers_take_a_mixed_stream_as_its_real_part_once_then_events():
    x = torch.tensor([[2.5, 0.4]])  # element 0 spikes at steps 1 and 2, element 1 never
    driven = _ops_of(_MixedStream(), x, 4, event_driven=True)
    assert (driven["fc"].macs, driven["fc"].sops) == (2 * 3, 1 * 3)  # dense once; the step-2 spike × 3
    dense = _ops_of(_MixedStream(), x, 4, event_driven=False)
    assert (dense["fc"].macs, dense["fc"].sops) == (4 * 2 * 3, 0)


def _ops_of(model: nn.Module, x: torch.Tensor, timesteps: int, event_driven: bool) -> dict:
    result = simulate(model, x, torch.zeros(len(x), dtype=torch.long), timesteps=timesteps, options=SimulationOptions(event_driven=event_driven))
    return {o.name: o for o in result.ops}


def test_event_driven_runs_leave_the_model_as_it_was():
    x = torch.tensor([[[2.5, 0, 0, 0], [1.2, 0, 0, 1.0], [0.5, 0, 0, 0]]])
    graph = _as_graph(_CountCodedSoftmax(), x, x, "cpu")
    code = graph.code
    accounting = OpAccounting(graph, event_driven=True)
    assert set(accounting.streams) and set(accounting.streams) <= set(accounting.sources)
    outputs = {}
    for watched in (False, True):
        reset_states(graph)
        with (watching(graph, accounting.streams) if watched else contextlib.nullcontext()), torch.no_grad():
            outputs[watched] = torch.stack([graph(x) for _ in range(4)])
    assert torch.equal(outputs[False], outputs[True]) and graph.code == code
    assert not any(name.startswith(PREFIX) for name, _ in graph.named_modules())


def test_event_driven_needs_count_coding():
    model = nn.Sequential(IFNeuron(1.0), nn.Linear(4, 2))
    x = torch.rand(2, 4)
    with pytest.raises(ArgumentError, match="count-coded"):
        simulate(model, x, torch.zeros(2, dtype=torch.long), timesteps=2, options=SimulationOptions(event_driven=True))


def test_energy_conventions_by_hand():
    # per sample: an encoding conv of 100 MACs, a spike-fed linear of 40 SOPs (the ANN: 80 MACs), a
    # softmax of 10 float ops, 5 additions; 2 samples; 30 neuron-steps on 10 neurons (3 steps)
    snn = [LayerOps("conv", "linear", 0, 200, 0, 0, once=True), LayerOps("fc", "linear", 80, 0, 0, 0),
           LayerOps("softmax", "elementwise", 0, 0, 20, 10)]
    ann = [LayerOps("conv", "linear", 0, 100, 0, 0, once=True), LayerOps("fc", "linear", 0, 80, 0, 0),
           LayerOps("softmax", "elementwise", 0, 0, 10, 5)]
    out = energy_conventions(snn, ann, 2, 30, 10, 8, EnergyCosts(1.0, 4.0), TwinCosts(8, 0.2, 0.1, 5.0))
    assert out["every_op"]["snn_uj"] * 1e6 == pytest.approx(40 + 5 + 4 * (100 + 10))
    assert out["every_op"]["ann_uj"] * 1e6 == pytest.approx(5 + 4 * (180 + 10))
    assert out["papers"]["snn_uj"] * 1e6 == pytest.approx(40 + 4 * 100) and out["papers"]["ann_uj"] * 1e6 == 4 * 180
    assert out["memory"]["snn_uj"] * 1e6 == pytest.approx(5 * (40 + 100 + 2 * 30))
    assert out["memory"]["ann_uj"] * 1e6 == pytest.approx(5 * (180 + 2 * 10))
    assert out["quantized_twin_activation_bits"] == 4  # 9 values of L = 8
    twin = 100 * (0.2 * 8 * 8 / 64 + 0.1) + 80 * (0.2 * 4 * 8 / 64 + 0.1) + 4 * 10 + 5  # the image is 8-bit
    assert out["quantized_twin"]["ann_uj"] * 1e6 == pytest.approx(twin)
    assert out["spikes_per_synapse"] == pytest.approx(40 / 80)
    assert "quantized_twin" not in energy_conventions(snn, ann, 2, 30, 10, None)
