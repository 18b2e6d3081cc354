"""Per-sample early exit: samples that stop leave the batch, and a run equals the offline curve."""
import pytest
import torch

from snnconvert import pipeline
from snnconvert.convert import NeuronConfig
from snnconvert.errors import SnnConvertError
from snnconvert.model_zoo import get_recipe, shipped_checkpoint
from snnconvert.runtime import simulate
from snnconvert.runtime.early_exit import ExitRule, ExitTrace, exit_curve, exit_steps

from conftest import SPEC_28, DiesAfter, images

T = 16


def test_exit_steps_by_hand():
    predictions = torch.tensor([[3, 3, 3, 3, 3], [1, 2, 2, 2, 4], [0, 1, 0, 1, 0]])
    confidences = torch.tensor([[0.2, 0.6, 0.9, 0.95, 0.99], [0.5, 0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1, 0.1]])
    assert exit_steps(ExitRule("confidence", 0.9), confidences, predictions).tolist() == [3, 5, 5]
    assert exit_steps(ExitRule("confidence", 0.5), confidences, predictions).tolist() == [2, 1, 5]
    assert exit_steps(ExitRule("stable", 2), confidences, predictions).tolist() == [3, 4, 5]
    assert exit_steps(ExitRule("stable", 1), confidences, predictions).tolist() == [2, 3, 5]
    for kind, value in (("confidence", 0.0), ("confidence", 1.5), ("stable", 0), ("stable", 1.5), ("margin", 1)):
        with pytest.raises(SnnConvertError):
            ExitRule(kind, value)


def test_early_exit_drops_samples_and_equals_the_offline_curve():
    # the shipped vit_nano (trained: its confidence grows over the steps), in float64 so that the
    # batch a sample runs in does not change its rounding
    loaded = pipeline.load_snn("vit_nano", str(shipped_checkpoint(get_recipe("vit_nano"))), "compensated",
                               NeuronConfig())
    snn = loaded.snn.double()
    x, y = images(SPEC_28, 32)
    x = x.double()
    trace = ExitTrace()
    full = simulate(snn, x, y, timesteps=T, trace=trace)
    assert full.mean_steps == T
    rules = [ExitRule("confidence", c) for c in (0.5, 0.9, 0.99)] + [ExitRule("stable", k) for k in (2, 4)]
    curve = exit_curve(trace, rules)
    assert 1 < curve[0].mean_steps < curve[1].mean_steps < curve[2].mean_steps <= T
    assert curve[0].accuracy <= curve[1].accuracy <= curve[2].accuracy
    first_neuron = next(m for n, m in snn.named_modules() if n.endswith("_act"))
    for point in curve:
        seen = []
        hook = first_neuron.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
        online = simulate(snn, x, y, timesteps=T, exit_rule=point.rule)
        hook.remove()
        assert online.accuracy[-1] == pytest.approx(point.accuracy)
        assert online.mean_steps == pytest.approx(point.mean_steps)
        assert sum(seen) == online.sample_steps and seen == sorted(seen, reverse=True)  # the model ran only those
        if 1 < point.mean_steps < T:  # samples left one by one: later steps ran on fewer rows, and cost less
            assert seen[-1] < seen[0]
            assert sum(o.macs for o in online.ops) < sum(o.macs for o in full.ops)
            assert sum(l.neuron_steps for l in online.layers) < sum(l.neuron_steps for l in full.layers)
    with pytest.raises(ValueError, match="drop exit_rule"):
        simulate(snn, x, y, timesteps=T, exit_rule=rules[0], trace=ExitTrace())


def test_command_line_early_exit(tmp_path):
    from click.testing import CliRunner

    from snnconvert.cli import main

    run = CliRunner().invoke(main, ["simulate", "vit_nano", "-T", "16", "--limit", "32", "--quiet", "--out",
                                    str(tmp_path), "--early-exit", "0.5,0.99,stable:4"])
    assert run.exit_code == 0, run.output
    assert "| confidence ≥ 0.99 |" in run.output and "| prediction unchanged for 4 steps |" in run.output
    assert {p.name for p in tmp_path.iterdir()} >= {"early_exit.json", "early_exit.md", "early_exit.png", "report.md"}
    for bad in (["--exit", "1.5"], ["--exit", "stable:0"], ["--exit", "0.9", "--early-exit", "0.5"]):
        refused = CliRunner().invoke(main, ["simulate", "vit_nano", "-T", "4", "--limit", "8", *bad])
        assert refused.exit_code != 0 and ("--exit" in refused.output or "--early-exit" in refused.output)


def test_an_interrupted_traced_run_resumes_to_the_same_curve(tmp_path):
    snn = pipeline.load_snn("vit_nano", str(shipped_checkpoint(get_recipe("vit_nano"))), "compensated",
                            NeuronConfig()).snn
    x, y = images(SPEC_28, 24)
    batches = list(zip(x.split(8), y.split(8)))
    rules = [ExitRule("confidence", 0.9), ExitRule("stable", 2)]
    whole = ExitTrace()
    simulate(snn, batches, timesteps=6, trace=whole)

    progress, resumed = tmp_path / "progress.pt", ExitTrace()
    with pytest.raises(KeyboardInterrupt):
        simulate(snn, DiesAfter(batches, 2), timesteps=6, trace=ExitTrace(), checkpoint=progress)
    assert simulate(snn, batches, timesteps=6, trace=resumed, checkpoint=progress).resumed_from_batch == 2
    assert exit_curve(resumed, rules) == exit_curve(whole, rules)
