"""Per-sample early exit: samples that stop leave the batch, and a run equals the offline curve."""
import pytest
import torch

from snnconvert import workflow
from snnconvert.convert import NeuronConfig
from snnconvert.errors import SnnConvertError
from snnconvert.model_zoo import get_recipe, shipped_checkpoint
from snnconvert.checkpoint import Job
from snnconvert.runtime import Watch, simulate
from snnconvert.runtime import reset_states
from snnconvert.runtime.early_exit import ExitRule, ExitTrace, Quiescence, confidence, exit_curve, exit_steps

from conftest import SPEC_28, DiesAfter, images

T = 16


def test_exit_steps_by_hand():
    predictions = torch.tensor([[3, 3, 3, 3, 3], [1, 2, 2, 2, 4], [0, 1, 0, 1, 0]])
    confidences = torch.tensor([[0.2, 0.6, 0.9, 0.95, 0.99], [0.5, 0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1, 0.1]])
    counted = torch.ones_like(predictions, dtype=torch.bool)
    assert exit_steps(ExitRule("confidence", 0.9), confidences, predictions, counted).tolist() == [3, 5, 5]
    assert exit_steps(ExitRule("confidence", 0.5), confidences, predictions, counted).tolist() == [2, 1, 5]
    assert exit_steps(ExitRule("stable", 2), confidences, predictions, counted).tolist() == [3, 4, 5]
    assert exit_steps(ExitRule("stable", 1), confidences, predictions, counted).tolist() == [2, 3, 5]
    # steps before the output's first event do not count towards stability
    late = torch.tensor([[False, False, True, True, True], [False] * 5, [True] * 5])
    assert exit_steps(ExitRule("stable", 2), confidences, predictions, late).tolist() == [4, 5, 5]
    silences = torch.tensor([[False, True, True, True, True], [False] * 5, [False, False, True, True, True]])
    assert exit_steps(ExitRule("quiet"), confidences, predictions, counted, silences).tolist() == [2, 5, 3]
    for kind, value in (("confidence", 0.0), ("confidence", 1.5), ("stable", 0), ("stable", 1.5), ("margin", 1)):
        with pytest.raises(SnnConvertError):
            ExitRule(kind, value)


def test_early_exit_drops_samples_and_equals_the_offline_curve():
    # the shipped vit_nano (trained: its confidence grows over the steps), in float64 so that the
    # batch a sample runs in does not change its rounding
    loaded = workflow.load_snn("vit_nano", str(shipped_checkpoint(get_recipe("vit_nano"))), "compensated",
                               NeuronConfig())
    snn = loaded.snn.double()
    x, y = images(SPEC_28, 32)
    x = x.double()
    trace = ExitTrace()
    full = simulate(snn, x, y, timesteps=T, watch=Watch(trace=trace))
    assert full.mean_steps == T
    rules = [ExitRule("confidence", c) for c in (0.5, 0.9, 0.99)] + [ExitRule("stable", k) for k in (2, 4)]
    curve = exit_curve(trace, rules)
    assert 1 < curve[0].mean_steps < curve[1].mean_steps < curve[2].mean_steps <= T
    assert curve[0].accuracy <= curve[1].accuracy <= curve[2].accuracy
    first_neuron = next(m for n, m in snn.named_modules() if n.endswith("_act"))
    for point in curve:
        seen = []
        hook = first_neuron.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
        online = simulate(snn, x, y, timesteps=T, watch=Watch(exit_rule=point.rule))
        hook.remove()
        assert online.accuracy[-1] == pytest.approx(point.accuracy)
        assert online.mean_steps == pytest.approx(point.mean_steps)
        assert sum(seen) == online.sample_steps and seen == sorted(seen, reverse=True)  # the model ran only those
        if 1 < point.mean_steps < T:  # samples left one by one: later steps ran on fewer rows, and cost less
            assert seen[-1] < seen[0]
            assert sum(o.macs for o in online.ops) < sum(o.macs for o in full.ops)
            assert sum(l.neuron_steps for l in online.layers) < sum(l.neuron_steps for l in full.layers)
    with pytest.raises(ValueError, match="drop exit_rule"):
        simulate(snn, x, y, timesteps=T, watch=Watch(exit_rule=rules[0], trace=ExitTrace()))


def test_command_line_early_exit(tmp_path):
    from click.testing import CliRunner

    from snnconvert.cli import main
    from snnconvert.spec import SimulateSpec

    run = CliRunner().invoke(main, ["simulate", "vit_nano", "-T", "16", "--limit", "32", "--quiet", "--out",
                                    str(tmp_path), "--early-exit", "0.5,0.99,stable:4"])
    assert run.exit_code == 0, run.output
    assert "| confidence ≥ 0.99 |" in run.output and "| prediction unchanged for 4 steps |" in run.output
    assert {p.name for p in tmp_path.iterdir()} >= {"early_exit.json", "early_exit.md", "early_exit.png", "report.md"}
    spec = SimulateSpec.read(tmp_path / "report.json")  # the simulation's spec, rules and T resolved
    assert spec.timesteps == 16 and [r.describe() for r in spec.exit_curve][-1] == "prediction unchanged for 4 steps"
    for bad in (["--exit", "1.5"], ["--exit", "stable:0"], ["--exit", "0.9", "--early-exit", "0.5"]):
        refused = CliRunner().invoke(main, ["simulate", "vit_nano", "-T", "4", "--limit", "8", *bad])
        message = refused.output + str(refused.exception or "")  # a bad value (click) or a bad combination (the spec)
        assert refused.exit_code != 0 and ("--exit" in message or "--early-exit" in message)


def test_an_interrupted_traced_run_resumes_to_the_same_curve(tmp_path):
    snn = workflow.load_snn("vit_nano", str(shipped_checkpoint(get_recipe("vit_nano"))), "compensated",
                            NeuronConfig()).snn
    x, y = images(SPEC_28, 24)
    batches = list(zip(x.split(8), y.split(8)))
    rules = [ExitRule("confidence", 0.9), ExitRule("stable", 2)]
    whole = ExitTrace()
    simulate(snn, batches, timesteps=6, watch=Watch(trace=whole))

    progress, resumed = tmp_path / "progress.pt", ExitTrace()
    with pytest.raises(KeyboardInterrupt):
        simulate(snn, DiesAfter(batches, 2), timesteps=6, watch=Watch(trace=ExitTrace()), job=Job(checkpoint=progress))
    assert simulate(snn, batches, timesteps=6, watch=Watch(trace=resumed), job=Job(checkpoint=progress)).resumed_from_batch == 2
    assert exit_curve(resumed, rules) == exit_curve(whole, rules)


@pytest.fixture(scope="module")
def counted_vit():
    """The shipped vit_nano, count-coded signed IF (k = 1), in float64, on 32 test images."""
    loaded = workflow.load_snn("vit_nano", str(shipped_checkpoint(get_recipe("vit_nano"))), "compensated",
                               NeuronConfig("signed-if", coding="count"))
    x, y = images(SPEC_28, 32)
    return loaded.snn.double(), x.double(), y


def test_a_quiet_sample_sends_nothing_at_any_later_step(counted_vit):
    snn, x, _ = counted_vit
    watch, quiet_at, outputs = Quiescence(snn), torch.full((len(x),), 10 ** 6), []
    reset_states(snn)
    with torch.no_grad():
        for t in range(1, 33):
            outputs.append(snn(x))
            settled = watch.settled(len(x))
            quiet_at = torch.where(settled & (quiet_at > t), torch.full_like(quiet_at, t), quiet_at)
    outputs = torch.stack(outputs, 1)  # [N, T, classes]
    assert (quiet_at < 32).all() and quiet_at.min() > 1  # every sample settled, none at once
    for sample, t in enumerate(quiet_at.tolist()):
        assert torch.all(outputs[sample, t:] == 0)  # nothing after the quiet step: the total is final


def test_quiet_exit_is_exact_and_stops_early(counted_vit):
    snn, x, y = counted_vit
    trace = ExitTrace()
    full = simulate(snn, x, y, timesteps=32, watch=Watch(trace=trace))
    quiet = simulate(snn, x, y, timesteps=32, watch=Watch(exit_rule=ExitRule("quiet")))
    assert quiet.accuracy[-1] == full.accuracy[-1]
    assert quiet.mean_steps < 24
    (point,) = exit_curve(trace, [ExitRule("quiet")])
    assert point.mean_steps == pytest.approx(quiet.mean_steps) and point.accuracy == pytest.approx(full.accuracy[-1])


def test_count_coded_confidence_reads_the_total_as_the_estimate():
    total = torch.tensor([[4.0, 0.0]])
    assert float(confidence(total, 8, "count")) == pytest.approx(float(torch.softmax(total, -1).max()))
    assert float(confidence(total, 8, "rate")) == pytest.approx(float(torch.softmax(total / 8, -1).max()))


def test_quiet_exit_refuses_models_it_is_not_exact_on():
    loaded = workflow.load_snn("vit_nano", str(shipped_checkpoint(get_recipe("vit_nano"))), "compensated",
                               NeuronConfig())
    x, y = images(SPEC_28, 4)
    with pytest.raises(SnnConvertError, match="rate coding"):
        simulate(loaded.snn, x, y, timesteps=4, watch=Watch(exit_rule=ExitRule("quiet")))
    trace = ExitTrace()
    simulate(loaded.snn, x, y, timesteps=4, watch=Watch(trace=trace))
    with pytest.raises(SnnConvertError, match="count coding"):
        exit_curve(trace, [ExitRule("quiet")])


def test_the_event_driven_route_adds_the_quiet_exit_and_says_what_does_not_apply(tmp_path):
    from click.testing import CliRunner

    from snnconvert.cli import main

    common = ["resnet_nano", "-T", "6", "--limit", "16", "--neuron", "signed-burst-if", "--coding", "count", "--quiet"]
    plain = CliRunner().invoke(main, [*common, "--out", str(tmp_path / "plain")])
    route = CliRunner().invoke(main, [*common, "--event-driven", "--out", str(tmp_path / "route")])
    assert plain.exit_code == 0 and route.exit_code == 0, route.output
    assert "not applied: QCFS on attention probabilities: the model has no softmax" in route.output
    sims = [next(iter(_report(tmp_path / name)["simulations"].values())) for name in ("plain", "route")]
    assert sims[0]["exit_rule"] is None and sims[1]["exit_rule"].startswith("quiet")
    assert sims[1]["mean_steps"] == 1 and sims[1]["accuracy_per_step"] == sims[0]["accuracy_per_step"]  # exact
    assert sims[1]["energy_uj_per_sample"] == pytest.approx(sims[0]["energy_uj_per_sample"])  # quiet steps cost 0
    chosen = CliRunner().invoke(main, ["simulate", "vit_nano", "-T", "2", "--limit", "4", "--coding", "count",
                                       "--neuron", "signed-if", "--event-driven", "--early-exit", "quiet"])
    assert chosen.exit_code == 0 and "early exit (quiet" not in chosen.output  # a chosen exit is kept


def _report(out) -> dict:
    import json
    return json.loads((out / "report.json").read_text())
