"""Dynamic time steps (DTSS): the score tensor, the mask's surrogate gradient, the mask loss, and
a simulation that stops computing a layer after its last step (and counts only what it ran)."""
import json

import pytest
import torch
from torch import nn

from snnconvert.direct import DirectConfig, SpikingClassifier, make_encoder
from snnconvert.direct.dynamic_timesteps import TimestepMask, average_steps, layer_steps, mask_loss, timestep_masks
from snnconvert.errors import SnnConvertError
from snnconvert.model_zoo import build_spiking_classifier, get_recipe
from snnconvert.runtime import simulate
from snnconvert.runtime.execution import Execution, SimulationOptions, run_steps
from snnconvert.runtime.state import reset_states
from tests.test_cli import _entry, _invoke


def _set_steps(mask: TimestepMask, steps: int) -> None:
    """Scores 1.5 for the first ``steps`` steps, 0.75 after."""
    scores = torch.full((mask.max_steps,), 0.75)
    scores[:steps] = 1.5
    with torch.no_grad():
        mask.tp.copy_(scores - torch.cat([scores[1:], torch.zeros(1)]))


def test_the_score_tensor_never_rises_and_the_mask_keeps_a_prefix():
    torch.manual_seed(0)
    for _ in range(50):
        mask = TimestepMask(8, 3, "qkv")
        with torch.no_grad():
            mask.tp.normal_(0, 1)  # negative parameters too
        scores = mask.scores()
        assert bool((scores[1:] <= scores[:-1]).all())
        tm = mask.mask()
        assert bool((tm[1:] <= tm[:-1]).all()) and mask.steps == int(tm.sum())
    mask = TimestepMask(6, 4, "mlp")
    assert torch.allclose(mask.scores(), torch.tensor([1.5, 1.5, 1.5, 1.5, 0.75, 0.75]))
    assert mask.steps == 4 and [float(mask.at(t).detach()) for t in range(1, 9)] == [1, 1, 1, 1, 0, 0, 0, 0]
    with torch.no_grad():
        mask.tp.fill_(-1.0)  # every score 0: the first step is kept all the same
    assert mask.mask().tolist() == [1, 0, 0, 0, 0, 0] and mask.steps == 1
    with pytest.raises(SnnConvertError, match="initial time steps must be in 1..4"):
        TimestepMask(4, 5, "qkv")
    with pytest.raises(SnnConvertError, match="unknown layer group 'ffn'"):
        TimestepMask(4, 2, "ffn")


def test_the_mask_gradient_is_the_papers_surrogate_by_hand():
    """∂TM_t/∂TS_t = 1 on 0 < TS_t < 2, TS_t = Σ_{i≥t} max(TP_i, 0) (the clamp's gradient passed
    straight through), so ∂(Σ_t w_t TM_t)/∂TP_i = Σ_{t≤i} w_t·[0 < TS_t < 2] (TM_0 is always 1, with
    the gradient of [TS_0 ≥ 1]: a layer at one step can grow)."""
    mask = TimestepMask(5, 2, "attn")
    with torch.no_grad():
        mask.tp.copy_(torch.tensor([-0.1, -0.2, 0.9, 0.6, 0.4]))
    scores = [1.9, 1.9, 1.9, 1.0, 0.4]  # by hand: 0 + 0 + 0.9 + 0.6 + 0.4, …
    assert torch.allclose(mask.scores(), torch.tensor(scores))
    assert mask.mask().tolist() == [1, 1, 1, 1, 0]
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (mask.mask() * w).sum().backward()
    window = [0.0 < s < 2.0 for s in scores]
    expected = [sum(w[t] * window[t] for t in range(i + 1)) for i in range(5)]
    assert torch.allclose(mask.tp.grad, torch.tensor(expected))


def _spikformer(**neuron) -> SpikingClassifier:
    from snnconvert.direct.models import Spikformer
    net = Spikformer(embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0, neuron="lif",
                     dynamic_timesteps=(4, 2), **neuron)
    return SpikingClassifier(net, make_encoder("direct", 4), 4)


def test_the_mask_loss_counts_the_chosen_groups_and_only_they_get_its_gradient():
    model = _spikformer()
    masks = timestep_masks(model)
    assert {m.group for m in masks.values()} == {"sps", "qkv", "attn", "mlp"}
    qkv = [m for m in masks.values() if m.group == "qkv"]
    loss = mask_loss(model, ["qkv"])
    assert float(loss.detach()) == 2 * len(qkv)  # every layer starts with 2 steps
    loss.backward()
    for m in masks.values():
        assert (m.tp.grad is not None and bool(m.tp.grad.abs().sum() > 0)) == (m.group == "qkv")
    assert float(mask_loss(model, [])) == 0.0


def test_a_layer_sends_nothing_after_its_last_step_and_t_avg_is_the_papers():
    model = _spikformer()
    masks = list(timestep_masks(model).values())
    for i, m in enumerate(masks):
        _set_steps(m, 1 + i % 4)
    layers = layer_steps(model)
    assert average_steps(layers) == sum(1 + i % 4 for i in range(len(masks))) / len(masks)
    q = model.network.blocks[0].attn.q.sn
    sent = []
    q.register_forward_hook(lambda _m, _i, out: sent.append(float(out.detach().abs().sum())))
    x = torch.randn(4, 1, 28, 28) * 4
    model.train()
    model(x).sum().backward()  # training runs every step, masked: the mask's parameters get gradients
    steps = q.timestep_mask.steps
    assert all(s == 0 for s in sent[steps:]) and any(s > 0 for s in sent[:steps])
    assert q.timestep_mask.tp.grad is not None


def _inference(model: SpikingClassifier, steps: dict[str, int]):
    """The single-step graph of ``model`` with the layers' steps set, its weights scaled up so
    that random weights make every layer spike."""
    for name, mask in timestep_masks(model).items():
        _set_steps(mask, steps.get(name, 4))
    snn = model.for_inference(torch.zeros(1, 1, 28, 28))
    with torch.no_grad():
        for module in snn.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.mul_(6.0)
    return snn


STEPS = {"network.blocks.0.attn.q.sn": 1, "network.blocks.0.attn.attn_sn": 2, "network.blocks.0.mlp.fc2.sn": 3,
         "network.patch_embed.stem.12": 2}


def test_a_stopped_layer_and_what_only_it_reads_are_not_computed_and_the_result_is_unchanged():
    torch.manual_seed(1)
    snn = _inference(_spikformer(), STEPS).double()
    stops = {n.target: k for n, k in run_steps(snn).items() if n.op == "call_module"}
    assert stops["1.blocks.0.attn.q.sn"] == 1 and stops["1.blocks.0.attn.q.linear"] == 1
    assert stops["1.blocks.0.attn.attn_sn"] == 2 and stops["1.blocks.0.attn.qk"] == 2
    assert stops["1.blocks.0.attn.k.linear"] == 2  # read only by the attention, which stops after 2
    assert stops["1.patch_embed.stem.6"] == 2  # the stem before its last layer stops with it
    assert "1.blocks.0.mlp.fc1.linear" in stops and stops["1.blocks.0.mlp.fc1.linear"] == 3
    calls: dict[str, int] = {}
    for name, module in snn.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and "." in name:
            module.register_forward_hook(  # steps computed: a call takes K steps of the 3 samples
                lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + len(o) // 3))
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    T = 6  # past T_max: every masked layer has stopped
    reset_states(snn)
    with torch.no_grad():
        plain = torch.stack([snn(x) for _ in range(T)])  # the whole graph, every step
    expected_calls = {name: min(T, stops.get(name, T)) for name in calls}
    for chunk in (1, 4):
        calls.clear()
        with Execution(snn, SimulationOptions(chunk=chunk, fold=False)) as execution, torch.no_grad():
            execution.reset()
            inputs = execution.inputs(x)
            out = torch.cat([execution.run(inputs, k) for k in ([chunk] * (T // chunk) + [T % chunk]) if k])
        assert (out - plain).abs().max() <= 1e-12 * plain.abs().max()  # float64: K-step matmuls may round otherwise
        assert calls == expected_calls, chunk
    assert calls["1.blocks.0.attn.q.linear"] == 1 and calls["1.head"] == T


def test_the_energy_counts_only_the_steps_a_layer_ran():
    """Every Linear fed spikes does (spikes in) × (outputs) accumulates per step it runs: the
    accounting must give what the simulation did, measured by hooks on the layers."""
    torch.manual_seed(2)
    snn = _inference(_spikformer(), STEPS)
    done: dict[str, float] = {}

    def count(name):
        def hook(module, inputs):
            x = inputs[0]
            if x.dtype == torch.float64:  # the accounting's float64 twin (a deep copy, hooks too), not the simulation
                return
            assert bool((x >= 0).all() and (x == x.round()).all())  # spikes, or sums of spikes: events
            done[name] = done.get(name, 0.0) + float(x.sum()) * module.out_features
        return hook

    for name, module in snn.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("1.blocks"):
            module.register_forward_pre_hook(count(name))
    x = torch.randn(8, 1, 28, 28)
    result = simulate(snn, x, torch.zeros(8, dtype=torch.long), timesteps=6)
    sops = {op.name: op.sops for op in result.ops}
    assert len(done) == 6  # q, k, v, proj, fc1, fc2
    assert all(v > 0 for v in done.values())
    for name in done:
        assert sops[name] == pytest.approx(done[name], rel=1e-9), name


def test_direct_train_with_dynamic_timesteps_from_the_command_line(tmp_path):
    out = tmp_path / "dtss"
    r = _invoke("direct-train", "spikformer_nano", "--data", "embedded", "--epochs", "1", "--batch-size", "50",
                "--train-samples", "100", "--limit", "64", "--dynamic-timesteps", "--max-timesteps", "4",
                "--initial-timesteps", "2", "--mask-loss", "qkv,mlp", "--lambda-m", "0.01", "--out", str(out),
                "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    steps = report["dynamic_timesteps"]
    assert steps["max"] == 4 and steps["initial"] == 2 and steps["mask_loss"] == ["qkv", "mlp"]
    assert len(steps["layers"]) == 19 and steps["average"] == sum(l["steps"] for l in steps["layers"]) / 19
    assert all(1 <= l["computed"] <= l["steps"] <= 4 for l in steps["layers"])
    assert "T_avg" in r.output and "## Dynamic time steps" in (out / "report.md").read_text()
    assert report["direct"]["dynamic_timesteps"] is True
    for args, message in [(("--lambda-m", "1e-4"), "need dynamic time steps: add --dynamic-timesteps"),
                          (("--dynamic-timesteps", "--mask-loss", "qkv,ffn"), "unknown mask-loss group(s) 'ffn'"),
                          (("--dynamic-timesteps", "-T", "4", "--initial-timesteps", "6"),
                           "initial time steps must be in 1..4"),
                          (("--dynamic-timesteps", "-T", "4", "--max-timesteps", "8"), "disagree")]:
        proc = _entry("direct-train", "spikformer_nano", "--data", "embedded", "--out", str(tmp_path / "x"), *args)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_fixed_t_config_is_unchanged_and_a_stored_config_loads():
    recipe = get_recipe("spikformer_nano")
    plain = build_spiking_classifier(recipe, DirectConfig(timesteps=2))
    assert not timestep_masks(plain)
    config = DirectConfig(timesteps=8, dynamic_timesteps=True, mask_loss=["qkv", "attn"])
    assert config.initial_timesteps == 4 and config.mask_loss == ("qkv", "attn")
    assert "dynamic time steps ≤ 8 (from 4" in config.describe()
