"""The `snnconvert` command end to end on the embedded default, and its errors."""
import json
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from snnconvert.cli import main
from snnconvert.model_zoo import get_recipe, shipped_checkpoint
from snnconvert.spec import SweepSpec


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _entry(*args: str) -> subprocess.CompletedProcess:
    """Run the console entry point in a subprocess (as a user would)."""
    code = "import sys; from snnconvert.cli import entry; sys.argv = ['snnconvert', *sys.argv[1:]]; entry()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["swin_nano", "vit_nano", "resnet_nano"])
def test_shipped_checkpoints_exist_and_record_training(name):
    from snnconvert.checkpoint import load_checkpoint

    recipe = get_recipe(name)
    path = shipped_checkpoint(recipe)
    assert path is not None and path.stat().st_size < 3_000_000
    ckpt = load_checkpoint(path)
    assert ckpt["stage"] == "prepared" and ckpt["recipe"]["name"] == name
    assert ckpt["command"].startswith((f"snnconvert train {name}", f"snnconvert zoo build {name}"))
    history = ckpt["train_state"]["history"]
    assert history[-1]["val_accuracy"] > 80 and len(history) == recipe.build.qcfs["epochs"]
    record = json.loads(path.with_suffix(".json").read_text())  # how it was made, next to it
    assert record["checkpoint"] == path.name and record["history"] == history


def test_one_shot_run_writes_report(tmp_path):
    out = tmp_path / "run"
    result = _invoke("swin_nano", "--timesteps", "16", "--limit", "64", "--mode", "compensated", "--mode", "mst",
                     "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["simulations"]) == {"compensated", "mst"}
    sim = report["simulations"]["compensated"]
    assert len(sim["accuracy_per_step"]) == 16 and sim["samples"] == 64
    assert report["ann_accuracy"]["QCFS ANN"] > 50
    assert (out / "report.md").read_text().startswith("# snnconvert report: swin_nano")
    assert (out / "accuracy_vs_t.png").stat().st_size > 1000
    assert any(op["kind"] == "Softmax" for op in sim["float_operations"])
    assert "T=16" in result.output


def test_snn_agrees_with_qcfs_ann_more_as_t_grows():
    """On the trained, shipped ViT the SNN's predictions approach the QCFS ANN's as T grows."""
    from snnconvert.convert import convert
    from snnconvert.data import load_dataset, make_loader
    from snnconvert.model_zoo import load_model
    from snnconvert.runtime import reset_states

    loaded = load_model(get_recipe("vit_nano"))
    model = loaded.model.eval()
    x, _ = next(iter(make_loader(load_dataset("embedded", "test", loaded.recipe.input_spec), 128)))
    snn = convert(model)
    with torch.no_grad():
        ann = model(x).argmax(-1)
        reset_states(snn)
        total, agreement = 0, {}
        for t in range(1, 65):
            total = total + snn(x)
            if t in (4, 16, 64):
                agreement[t] = (total.argmax(-1) == ann).float().mean().item()
    assert agreement[4] < agreement[16] < agreement[64], agreement
    assert agreement[64] >= 0.9, agreement


def test_stages_chain(tmp_path):
    calibrated = tmp_path / "calibrated.pt"
    r = _invoke("calibrate", "vit_nano", "--calib-samples", "64", "--calib-method", "mse", "--granularity", "channel",
                "--out", str(calibrated), "--quiet")
    assert r.exit_code == 0, r.output
    converted = tmp_path / "snn.pt"
    r = _invoke("convert", "vit_nano", "--checkpoint", str(calibrated), "--mode", "mst", "--out", str(converted))
    assert r.exit_code == 0 and "floating point" in r.output
    r = _invoke("simulate", "vit_nano", "--checkpoint", str(converted), "-T", "8", "--limit", "32",
                "--out", str(tmp_path / "sim"), "--quiet")
    assert r.exit_code == 0, r.output
    assert "T=8" in r.output and (tmp_path / "sim" / "report.json").exists()
    r = _invoke("simulate", "vit_nano", "--checkpoint", str(converted), "-T", "8", "--limit", "32", "--chunk", "3",
                "--metrics", "basic", "--out", str(tmp_path / "basic"), "--quiet")
    assert r.exit_code == 0, r.output  # the same accuracy; the metrics not recorded read n/a, not 0
    assert r.output.splitlines()[:2] == _invoke("simulate", "vit_nano", "--checkpoint", str(converted), "-T", "8",
                                                "--limit", "32", "--quiet").output.splitlines()[:2]
    assert "| n/a | n/a | n/a |" in (tmp_path / "basic" / "report.md").read_text()


def test_prepare_and_train_from_scratch(tmp_path):
    prepared = tmp_path / "p.pt"
    r = _invoke("prepare", "resnet_nano", "--no-pretrained", "--levels", "4", "--out", str(prepared))
    assert r.exit_code == 0 and "9 QCFS sites" in r.output and "relu → QCFS" in r.output
    trained = tmp_path / "t.pt"
    r = _invoke("train", "resnet_nano", "--data", "embedded", "--epochs", "1", "--batch-size", "250",
                "--calib-samples", "32", "--out", str(trained), "--quiet")
    assert r.exit_code == 0, r.output
    r = _invoke("train", "resnet_nano", "--data", "embedded", "--epochs", "1", "--batch-size", "250",
                "--calib-samples", "32", "--out", str(trained), "--quiet")
    assert "resumed from epoch 1" in r.output


def test_finetune_needs_an_ann_and_says_so(tmp_path):
    proc = _entry("finetune", "vit_nano", "--checkpoint", str(shipped_checkpoint(get_recipe("vit_nano"))),
                  "--data", "embedded", "--out", str(tmp_path / "f.pt"), "--quiet")
    assert proc.returncode == 2 and "finetune starts from a trained ANN" in proc.stderr


def test_zoo_show_and_build_errors():
    shown = json.loads(_invoke("zoo", "show", "swin_t").output)
    assert shown["crop_pct"] == 0.9 and shown["interpolation"] == "bicubic"
    assert shown["finetune_settings"]["distill_alpha"] > 0
    proc = _entry("zoo", "build", "swin_t", "--out", "/tmp/never")
    assert proc.returncode == 2 and "no build plan" in proc.stderr


def test_help_explains_every_option():
    for command in ("run", "prepare", "train", "finetune", "calibrate", "convert", "simulate"):
        text = _invoke(command, "--help").output
        assert "--" in text and "Show this message" in text


@pytest.mark.parametrize("args, message", [
    (["swin_tiny_oops"], "unknown model 'swin_tiny_oops'"),
    (["vit_nano", "--data", "/nonexistent/path"], "unknown dataset"),
    (["vit_nano", "--checkpoint", "/nonexistent.pt"], "does not exist"),
])
def test_errors_are_one_clear_line(args, message):
    proc = _entry(*args, "--quiet")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_checkpoint_of_another_model_is_refused(tmp_path):
    proc = _entry("swin_nano", "--checkpoint", str(shipped_checkpoint(get_recipe("vit_nano"))), "--quiet")
    assert proc.returncode == 2 and "was made for 'vit_nano'" in proc.stderr


def test_offline_pretrained_download_says_how_to_pass_weights(monkeypatch, tmp_path):
    from snnconvert.errors import CheckpointError
    from snnconvert.model_zoo import build

    monkeypatch.setattr(build, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(CheckpointError, match="--checkpoint FILE"):
        build.load_model(get_recipe("swin_t"))
    assert get_recipe("swin_t").timm_name == "swin_tiny_patch4_window7_224"


def test_one_shot_run_fine_tunes_an_ann_with_distillation(tmp_path):
    ann = tmp_path / "ann.pt"
    r = _invoke("train", "vit_nano", "--ann", "--data", "embedded", "--epochs", "1", "--batch-size", "100",
                "--limit", "100", "--out", str(ann), "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads(ann.with_suffix(".json").read_text())["stage"] == "ann"
    out = tmp_path / "run"
    r = _invoke("vit_nano", "--checkpoint", str(ann), "--data", "embedded", "-T", "4", "--limit", "50",
                "--epochs", "1", "--calib-samples", "64", "--out", str(out), "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    training = report["training"]
    assert training["distilled"] and training["config"]["distill_alpha"] == get_recipe("vit_nano").finetune_settings[
        "distill_alpha"]
    assert "original ANN" in report["ann_accuracy"] and training["teacher_accuracy"] == report["ann_accuracy"][
        "original ANN"]
    assert "distilled from the original ANN" in (out / "report.md").read_text()


def test_reports_carry_energy_with_configurable_costs(tmp_path):
    runs = {}
    for e_ac in ("0.9", "0.03"):
        out = tmp_path / e_ac
        r = _invoke("swin_nano", "-T", "8", "--limit", "32", "--e-ac", e_ac, "--out", str(out), "--quiet")
        assert r.exit_code == 0 and "SOPs" in r.output, r.output
        runs[e_ac] = json.loads((out / "report.json").read_text())
    a, b = (runs[k]["simulations"]["compensated"] for k in ("0.9", "0.03"))
    assert a["sops_per_sample"] == b["sops_per_sample"] > 0 and a["macs_per_sample"] == b["macs_per_sample"] > 0
    assert a["energy_uj_per_sample"] - b["energy_uj_per_sample"] == pytest.approx(
        (0.9 - 0.03) * a["sops_per_sample"] / 1e6, rel=1e-9)
    assert runs["0.03"]["energy_costs_pj"] == {"ac_pj": 0.03, "mac_pj": 4.6}
    assert runs["0.9"]["ann_energy_uj_per_sample"] > 0


def test_mask_sweep_writes_table_and_plot(tmp_path):
    out = tmp_path / "sweep"
    r = _invoke("mask-sweep", "vit_nano", "-T", "8", "--limit", "32", "--ratios", "0,0.5", "--targets", "mlp",
                "--block-ratio", "0.5", "--out", str(out), "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "sweep.json").read_text())
    rows = report["rows"]
    assert [(row["target"], row["ratio"], row["blocks"]) for row in rows] == [
        ("none", 0.0, "all"), ("mlp", 0.5, "all"), *[("mlp", 0.5, k) for k in range(1, 5)]]
    assert rows[0]["power_ratio"] == 1.0 and rows[1]["power_ratio"] < 0.9
    assert rows[-1]["spikes_per_sample"] == pytest.approx(rows[1]["spikes_per_sample"], rel=1e-9)  # k = all 4 blocks
    assert (out / "sweep.png").stat().st_size > 1000 and "| mlp | 0.50 |" in (out / "sweep.md").read_text()
    assert not list(out.glob("*.progress*"))
    spec = SweepSpec.read(out / "sweep.json")  # the sweep's spec, T resolved
    assert spec.timesteps == 8 and spec.targets == ("mlp",) and spec.ratios == (0.0, 0.5) and spec.block_ratio == 0.5
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    again = _invoke("mask-sweep", "--config", str(out / "sweep.json"), "--out", str(tmp_path / "again"), "--quiet")
    assert again.exit_code == 0, again.output  # rerun from the report: the same sweep
    rerun = json.loads((tmp_path / "again" / "sweep.json").read_text())["rows"]
    assert [(r["target"], r["ratio"], r["blocks"], r["spikes_per_sample"]) for r in rerun] == [
        (r["target"], r["ratio"], r["blocks"], r["spikes_per_sample"]) for r in rows]
    proc = _entry("mask-sweep", "vit_nano", "--targets", "values", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "unknown masking targets" in proc.stderr


def test_mask_sweep_fine_tunes_each_masked_model_against_the_unmasked_one(tmp_path):
    out = tmp_path / "sweep"
    args = ("mask-sweep", "vit_nano", "-T", "8", "--limit", "200", "--ratios", "0.75", "--targets", "mlp",
            "--finetune-epochs", "1", "--lr", "1e-3", "--warmup-epochs", "0", "--out", str(out), "--quiet")
    r = _invoke(*args)
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(row["target"], row["fine_tuned"]) for row in rows] == [("none", False), ("mlp", False), ("mlp", True)]
    unmasked, masked, tuned = rows
    assert masked["qcfs_accuracy"] < unmasked["qcfs_accuracy"] - 10  # 75 % of the MLP spikes gone, no rescaling
    assert tuned["qcfs_accuracy"] > masked["qcfs_accuracy"] + 10  # distillation wins most of it back
    assert tuned["power_ratio"] < 1.0 and tuned["accuracy"] > masked["accuracy"]
    record = json.loads((out / "finetuned_mlp_0.75_all.json").read_text())
    assert record["teacher"] == "unmasked prepared model" and record["prepare"]["masks"]["ratios"] == {"mlp": 0.75}
    again = _invoke(*args)  # everything finished: reloaded, not retrained
    assert again.exit_code == 0 and json.loads((out / "sweep.json").read_text())["rows"] == rows
    assert "fine-tuned" in (out / "sweep.md").read_text() or "| yes |" in (out / "sweep.md").read_text()


def test_finetune_and_run_take_masks(tmp_path):
    r = _invoke("finetune", "vit_nano", "--checkpoint", str(shipped_checkpoint(get_recipe("vit_nano"))), "--mask", "mlp=0.5", "--data", "embedded",
                "--epochs", "1", "--limit", "100", "--out", str(tmp_path / "m.pt"), "--quiet")
    assert r.exit_code == 0, r.output
    assert "teacher (unmasked prepared model)" in r.output
    r = _invoke("simulate", "vit_nano", "--checkpoint", str(tmp_path / "m.pt"), "-T", "4", "--limit", "16",
                "--out", str(tmp_path / "sim"))
    assert r.exit_code == 0, r.output
    r = _invoke("run", "vit_nano", "-T", "4", "--limit", "16", "--mask", "sa=0.5", "--mask-blocks", "1",
                "--out", str(tmp_path / "run"), "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["masks"] == "sa 0.5 (first 1 blocks)"
    proc = _entry("run", "vit_nano", "--mask", "attn", "--out", str(tmp_path / "bad"))
    assert proc.returncode != 0 and "TARGET=P" in proc.stderr
    proc = _entry("run", "vit_nano", "--mask", "attn=1.5", "--out", str(tmp_path / "bad"))
    assert proc.returncode != 0 and "[0, 1)" in proc.stderr


def test_direct_train_simulate_and_compare_with_a_converted_model(tmp_path):
    out = tmp_path / "direct"
    args = ("direct-train", "spikformer_nano", "--data", "embedded", "--epochs", "1", "--batch-size", "100",
            "--limit", "100", "--neuron", "plif", "--surrogate", "atan", "--out", str(out), "--quiet")
    r = _invoke(*args)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "direct" and report["direct"]["neuron"] == "plif" and report["timesteps"] == 4
    sim = report["simulations"]["direct"]
    assert sim["samples"] == 100 and sim["spikes_per_sample"] > 0 and sim["energy_uj_per_sample"] > 0
    assert report["training"]["seconds"] > 0 and (out / "direct.json").exists()
    again = _invoke(*args)  # finished: resumed, not retrained
    assert again.exit_code == 0 and "resumed from epoch 1" in again.output
    other = _entry(*[a if a != "plif" else "lif" for a in args])  # other settings, same folder
    assert other.returncode != 0 and "other settings" in other.stderr, other.stderr
    r = _invoke("simulate", "spikformer_nano", "--checkpoint", str(out / "direct.pt"), "--data", "embedded",
                "--limit", "100", "-T", "4")
    assert r.exit_code == 0 and f"{sim['accuracy_at']['4']:6.2f} %" in r.output
    conv = tmp_path / "conv"
    assert _invoke("vit_nano", "-T", "8", "--limit", "100", "--out", str(conv), "--quiet").exit_code == 0
    r = _invoke("compare", str(out), str(conv / "report.json"), "--out", str(tmp_path / "cmp"))
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["rows"]
    assert [(row["model"], row["method"], row["timesteps"]) for row in rows] == [
        ("spikformer_nano", "direct", 4), ("vit_nano", "conversion", 8)]
    assert (tmp_path / "cmp" / "comparison.png").exists() and "| direct |" in (tmp_path / "cmp" / "comparison.md").read_text()
    proc = _entry("direct-train", "swin_nano", "--data", "embedded", "--out", str(tmp_path / "x"))
    assert proc.returncode != 0 and "not a directly trained SNN" in proc.stderr and "spikformer_nano" in proc.stderr
    proc = _entry("direct-train", "spikformer_nano", "--alpha", "0.5", "--data", "embedded", "--out", str(tmp_path / "x"))
    assert proc.returncode != 0 and "no teacher" in proc.stderr
    small = tmp_path / "small"
    assert _invoke("vit_nano", "-T", "4", "--limit", "50", "--out", str(small), "--quiet").exit_code == 0
    proc = _entry("compare", str(out), str(small), "--out", str(tmp_path / "bad"))
    assert proc.returncode != 0 and "different test sets" in proc.stderr


def _random_ann(tmp_path, name: str = "resnet_nano"):
    """A plain (never QCFS-trained) ANN checkpoint, as users bring one."""
    from snnconvert.model_zoo import build_ann

    path = tmp_path / f"{name}_ann.pth"
    torch.save(build_ann(get_recipe(name)).state_dict(), path)
    return path


def test_no_finetune_run_converts_by_calibration_alone_and_reports_agreement(tmp_path):
    ann, out = _random_ann(tmp_path), tmp_path / "run"
    r = _invoke("resnet_nano", "--checkpoint", str(ann), "--no-finetune", "-T", "8", "--limit", "32",
                "--neuron", "signed-if", "--correct", "potential", "--calib-samples", "64", "--out", str(out), "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["route"] == "calibration only (no training)" and report["training"] is None
    sim = report["simulations"]["compensated"]
    assert sim["agreement_with"] == "original ANN" and len(sim["agreement_per_step"]) == 8
    assert all(0 <= a <= 100 for a in sim["agreement_per_step"])
    sites = report["snn_calibration"]["compensated"]["sites"]
    assert sites and all(s["correction"] is not None and "8" in s["errors_after"] for s in sites)
    assert "agreement with the original ANN" in r.output and "## SNN calibration" in (out / "report.md").read_text()
    refused = _invoke("resnet_nano", "--checkpoint", str(ann), "--no-finetune", "--epochs", "1", "--out", str(out))
    assert refused.exit_code != 0 and "--no-finetune" in refused.output


def test_calibrate_corrects_reports_per_layer_and_writes_a_converted_checkpoint(tmp_path):
    ann, snn = _random_ann(tmp_path), tmp_path / "snn.pt"
    r = _invoke("calibrate", "resnet_nano", "--checkpoint", str(ann), "--no-finetune", "--calib-samples", "32",
                "-T", "4", "--coding", "count", "--neuron", "signed-if", "--correct", "bias", "--report",
                "--error-at", "2", "--error-at", "4", "--out", str(snn), "--quiet")
    assert r.exit_code == 0, r.output
    assert "count coding" in r.output and "act1" in r.output and "converted checkpoint" in r.output
    ckpt = torch.load(snn, weights_only=True)
    assert ckpt["stage"] == "converted" and ckpt["neuron"]["coding"] == "count"
    r = _invoke("simulate", "resnet_nano", "--checkpoint", str(snn), "-T", "4", "--limit", "16", "--quiet")
    assert r.exit_code == 0 and "T=4" in r.output, r.output
    dense = _invoke("simulate", "resnet_nano", "--checkpoint", str(snn), "-T", "4", "--limit", "16", "--quiet",
                    "--dense-energy")
    energy = {run: float(re.search(r"energy per sample: ([0-9.]+) µJ \((event-driven|dense)\)", run.output)[1])
              for run in (r, dense)}
    assert "(event-driven)" in r.output and "(dense)" in dense.output  # count coding: event-driven by default
    assert energy[r] < energy[dense]


def test_every_report_stores_its_run_spec_and_reruns_from_it(tmp_path):
    from snnconvert.errors import ArgumentError
    from snnconvert.spec import RunSpec

    first = tmp_path / "first"
    _invoke("resnet_nano", "-T", "3", "--limit", "16", "--coding", "count", "--neuron", "signed-if", "--quiet",
            "--out", str(first))
    report = json.loads((first / "report.json").read_text())
    spec = report["spec"]
    assert spec["model"]["name"] == "resnet_nano" and spec["timesteps"] == 3 and spec["epochs"] == 0  # resolved
    assert spec["neuron"] == {"neuron": "signed-if", "max_spikes": 1, "coding": "count"} and spec["data"]["limit"] == 16
    again = tmp_path / "again"
    _invoke("run", "--config", str(first / "report.json"), "--quiet", "--out", str(again))
    rerun = json.loads((again / "report.json").read_text())
    for key in ("spec", "ann_accuracy", "preparation", "energy_costs_pj"):
        assert rerun[key] == report[key]
    sims = [next(iter(r["simulations"].values())) for r in (report, rerun)]
    assert all(a[k] == b[k] for a, b in [sims] for k in ("accuracy_per_step", "energy_uj_per_sample", "ops"))
    # a spec of one's own, in YAML: what it leaves out takes the defaults, resolved by the run
    (tmp_path / "spec.yaml").write_text("model: {name: resnet_nano}\ndata: {limit: 8}\nneuron: {coding: count}\n")
    own = tmp_path / "own"
    _invoke("--config", str(tmp_path / "spec.yaml"), "--quiet", "--out", str(own))
    resolved = json.loads((own / "report.json").read_text())["spec"]
    assert resolved["timesteps"] == get_recipe("resnet_nano").timesteps and resolved["neuron"]["coding"] == "count"
    # bad specs and mixed command lines are refused, naming the problem
    (tmp_path / "bad.yaml").write_text("model: {name: resnet_nano}\nneurons: {coding: count}\n")
    with pytest.raises(ArgumentError, match="unknown field.*neurons"):
        RunSpec.read(tmp_path / "bad.yaml")
    done = _entry("run", "--config", str(first / "report.json"), "-T", "5", "--out", str(tmp_path / "mixed"))
    assert done.returncode != 0 and "drop --timesteps" in done.stderr
    assert RunSpec.from_dict(spec) == RunSpec.read(first / "report.json")
