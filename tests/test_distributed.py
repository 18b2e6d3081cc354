"""torchrun with 2 CPU processes (gloo): the same results as one process, one set of files."""
import json
import subprocess
import sys

import pytest
import torch

from snnconvert.checkpoint import load_checkpoint


def _snnconvert(*args: str, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    result = subprocess.run([*launcher, "-m", "snnconvert", *args, "--threads", "1", "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("command", [["simulate", "vit_nano"], ["vit_nano", "--epochs", "0"]])
def test_simulation_is_the_same_with_two_processes(tmp_path, command):
    """`simulate` and the one-shot command under torchrun: one report, the numbers of one process."""
    args = [*command, "-T", "8", "--limit", "90", "--batch-size", "16"]
    _snnconvert(*args, "--out", str(tmp_path / "two"), processes=2)
    _snnconvert(*args, "--out", str(tmp_path / "one"))
    two, one = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("two", "one"))
    assert (two["processes"], one["processes"]) == (2, 1)
    assert not list((tmp_path / "two").glob("*.progress*")), "progress files are removed once the report is written"
    # each process simulates batches of other sizes than one process does, so its float32 matmuls
    # may round otherwise (by CPU and BLAS), and a membrane within rounding of θ may fire in one
    # run only: accuracies may differ by a sample or two (1/90 = 1.1 points), spikes by a fraction
    for metric in two["ann_accuracy"]:
        assert two["ann_accuracy"][metric] == pytest.approx(one["ann_accuracy"][metric], abs=2.3)
    a, b = two["simulations"]["compensated"], one["simulations"]["compensated"]
    assert a["samples"] == b["samples"] == 90
    assert a["accuracy_per_step"] == pytest.approx(b["accuracy_per_step"], abs=2.3)
    assert [lay["spikes_per_sample"] for lay in a["layers"]] == \
        pytest.approx([lay["spikes_per_sample"] for lay in b["layers"]], rel=1e-2)


def test_calibration_with_two_processes_sees_the_same_samples(tmp_path):
    for processes in (1, 2):
        _snnconvert("calibrate", "vit_nano", "--calib-method", "max", "--calib-samples", "64",
                    "--out", str(tmp_path / f"c{processes}.pt"), processes=processes)
    one, two = (load_checkpoint(tmp_path / f"c{p}.pt")["model"] for p in (1, 2))
    lambdas = [k for k in one if k.endswith("threshold")]
    # the same 64 samples, observed in batches of other sizes: each λ is the max of activations
    # whose float32 matmuls may round otherwise (a few units of 2^-24 per layer passed)
    assert lambdas and all(torch.allclose(one[k], two[k], rtol=1e-5, atol=0) for k in lambdas)


def test_training_with_two_processes_matches_one(tmp_path):
    """Fine-tuning the shipped ViT for one epoch: one checkpoint and record, rank 0's, and the
    same accuracy within noise as one process (BatchNorm statistics are per process)."""
    records = {}
    for processes in (1, 2):
        out = tmp_path / f"t{processes}.pt"
        result = _snnconvert("train", "vit_nano", "--checkpoint", _shipped("vit_nano"), "--data", "embedded",
                             "--epochs", "1", "--batch-size", "50", "--lr", "1e-4", "--out", str(out),
                             processes=processes)
        assert result.stdout.count("trained vit_nano") == 1  # printed once
        records[processes] = json.loads(out.with_suffix(".json").read_text())
        assert records[processes]["processes"] == processes
        assert sorted(p.name for p in tmp_path.glob(f"t{processes}*")) == [f"t{processes}.json", f"t{processes}.pt"]
    acc = {p: r["history"][-1]["val_accuracy"] for p, r in records.items()}
    assert abs(acc[1] - acc[2]) < 2.0, acc
    assert abs(records[1]["history"][-1]["train_loss"] - records[2]["history"][-1]["train_loss"]) < 0.05


def _shipped(name: str) -> str:
    from snnconvert.model_zoo import get_recipe, shipped_checkpoint

    return str(shipped_checkpoint(get_recipe(name)))
