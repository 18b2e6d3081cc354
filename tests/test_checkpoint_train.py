"""Checkpoints are atomic and safe to load; a killed training run resumes with nothing lost."""
import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from snnconvert.checkpoint import Job, atomic_save, kept_checkpoints, load_checkpoint, save_checkpoint
from snnconvert.prepare import prepare
from snnconvert.errors import CheckpointError
from snnconvert.train import TrainConfig, fit

from conftest import SPEC_28
from snnconvert.data import load_dataset


def test_plain_state_dict_loads_as_ann(tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "w.pt")
    ckpt = load_checkpoint(tmp_path / "w.pt")
    assert ckpt["stage"] == "ann" and set(ckpt["model"]) == {"weight", "bias"}


def test_corrupt_and_foreign_files_are_named(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"a": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="neither"):
        load_checkpoint(tmp_path / "odd.pt")


def test_truncated_checkpoint_is_refused(tmp_path):
    save_checkpoint(tmp_path / "c.pt", nn.Linear(8, 8).state_dict(), "prepared", {"name": "x"}, {"levels": 8})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|cannot be read"):
        load_checkpoint(tmp_path / "c.pt")


def test_pickled_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "c.pt"
    atomic_save({"x": torch.ones(1)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_save({"x": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


class _Crashing(Dataset):
    """Raises after ``crash_after`` item reads, like a run killed mid-epoch."""

    def __init__(self, base, crash_after):
        self.base, self.crash_after, self.reads = base, crash_after, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.crash_after:
            raise KeyboardInterrupt("killed")
        return self.base[i]


def _model():
    torch.manual_seed(0)
    return prepare(nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10)),
                   torch.zeros(2, 1, 28, 28))


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    data = load_dataset("embedded", "train", SPEC_28).subset(96)
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-2, warmup_epochs=0.5, checkpoint_every=2)
    meta = {"stage": "prepared", "recipe": {"name": "test"}, "prepare": {"levels": 8, "threshold": 4.0}}

    reference = _model()
    fit(reference, data, config, checkpoint_meta=meta, job=Job(checkpoint=tmp_path / "ref.pt"))

    killed = _model()
    with pytest.raises(KeyboardInterrupt):
        # 6 steps per epoch; dies during step 3 of epoch 2, after the checkpoint at its step 2
        fit(killed, _Crashing(data, 16 * 8 + 5), config, checkpoint_meta=meta, job=Job(checkpoint=tmp_path / "run.pt"))
    state = load_checkpoint(tmp_path / "run.pt")["train_state"]
    assert (state["epoch"], state["batch"]) == (1, 2)

    resumed = _model()
    result = fit(resumed, data, config, checkpoint_meta=meta, job=Job(checkpoint=tmp_path / "run.pt"))
    assert result.resumed_from == {"epoch": 1, "batch": 2}
    assert len(result.history) == 2
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    final = load_checkpoint(tmp_path / "run.pt")["train_state"]
    assert final["epoch"] == 2 and "optimizer" not in final


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path):
    """Kill a run, truncate its newest checkpoint (a crash mid-write on a file system without
    atomic renames): the resume says so, takes the previous one and ends with the weights of an
    uninterrupted run; the damaged file is kept aside, the finished run leaves one checkpoint."""
    data = load_dataset("embedded", "train", SPEC_28).subset(96)
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-2, warmup_epochs=0.5, checkpoint_every=2)
    meta = {"stage": "prepared", "recipe": {"name": "test"}, "prepare": None}
    reference = _model()
    fit(reference, data, config, checkpoint_meta=meta, job=Job(checkpoint=tmp_path / "ref.pt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.pt"]
    with pytest.raises(KeyboardInterrupt):  # dies in epoch 2 after its step-4 checkpoint: the one before is step 2
        fit(_model(), _Crashing(data, 16 * 10 + 5), config, checkpoint_meta=meta, job=Job(checkpoint=tmp_path / "run.pt"))
    newest, previous = kept_checkpoints(tmp_path / "run.pt", 2)
    assert previous.name == "run.previous.pt"
    assert [load_checkpoint(p)["train_state"]["batch"] for p in (newest, previous)] == [4, 2]
    whole = newest.read_bytes()
    newest.write_bytes(whole[: len(whole) // 3])

    resumed = _model()
    with pytest.warns(UserWarning, match=r"skipped run.pt \(checkpoint .* cannot be read .*\); kept it as "
                                         r"run.pt.damaged and resumed from run.previous.pt"):
        result = fit(resumed, data, config, checkpoint_meta=meta, job=Job(checkpoint=newest))
    assert result.resumed_from == {"epoch": 1, "batch": 2}
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # the same steps from the same state, in the same process: bit for bit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.pt", "run.pt", "run.pt.damaged"]

    newest.write_bytes(b"")  # and when no kept checkpoint reads: the newest one's error
    with pytest.raises(CheckpointError, match="is empty .*--no-resume"):
        fit(_model(), data, config, checkpoint_meta=meta, job=Job(checkpoint=newest))


def test_keep_checkpoints_keeps_that_many_and_resume_may_change_it(tmp_path):
    data = load_dataset("embedded", "train", SPEC_28).subset(96)
    meta = {"stage": "prepared", "recipe": {"name": "test"}, "prepare": None}
    config = TrainConfig(epochs=2, batch_size=16, checkpoint_every=1, keep_checkpoints=3)
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), _Crashing(data, 16 * 4 + 3), config, checkpoint_meta=meta, job=Job(checkpoint=tmp_path / "run.pt"))
    kept = kept_checkpoints(tmp_path / "run.pt", 3)
    assert [p.name for p in kept] == ["run.pt", "run.previous.pt", "run.previous2.pt"]
    assert [load_checkpoint(p)["train_state"]["batch"] for p in kept] == [4, 3, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)
    result = fit(_model(), data, dataclasses.replace(config, keep_checkpoints=1), checkpoint_meta=meta, job=Job(checkpoint=tmp_path / "run.pt"))
    assert result.resumed_from == {"epoch": 0, "batch": 4}
    with pytest.raises(ValueError, match="keep_checkpoints must be >= 1"):
        TrainConfig(keep_checkpoints=0)


_SLOW_WRITER = """
import sys, time, torch
from snnconvert import checkpoint
def stalled_save(obj, f):
    f.write(b"PK" * 1000)
    f.flush()
    print("writing", flush=True)
    time.sleep(600)
checkpoint.torch.save = stalled_save
checkpoint.atomic_save({"x": torch.ones(1)}, sys.argv[1])
"""


def test_a_writer_killed_mid_write_leaves_no_temporary_after_the_next_run(tmp_path):
    """SIGKILL a process inside ``atomic_save`` (its temporary file half written), then run the
    next command on that output place: the temporary is gone, the run's files are whole."""
    import subprocess
    import sys

    out = tmp_path / "sim"
    out.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out / "simulation.progress.pt")],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()
    writer.wait()
    (stale,) = out.glob(".*.tmp")
    assert stale.name.startswith(f".simulation.progress.pt.{writer.pid}.")
    run = _snnconvert("simulate", "vit_nano", "-T", "2", "--limit", "8", "--out", str(out))
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output
    assert not list(out.glob(".*.tmp")) and (out / "report.json").exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    data = load_dataset("embedded", "train", SPEC_28).subset(32)
    meta = {"stage": "prepared", "recipe": {"name": "test"}, "prepare": None}
    fit(_model(), data, TrainConfig(epochs=1, batch_size=16), checkpoint_meta=meta, job=Job(checkpoint=tmp_path / "c.pt"))
    with pytest.raises(CheckpointError, match="other settings"):
        fit(_model(), data, TrainConfig(epochs=2, batch_size=16), checkpoint_meta=meta, job=Job(checkpoint=tmp_path / "c.pt"))


def _snnconvert(*args):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "snnconvert", *args, "--threads", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_cli_training_resumes_and_says_so(tmp_path):
    """SIGKILL a `snnconvert train` mid-epoch, start it again: it resumes from the last checkpoint
    (augmentation RNG included) and ends with exactly the weights of an uninterrupted run."""
    import json
    import time

    args = ["train", "vit_nano", "--data", "embedded", "--epochs", "2", "--batch-size", "25", "--checkpoint-every", "4",
            "--limit", "50", "--seed", "3"]
    run = _snnconvert(*args, "--out", str(tmp_path / "run.pt"))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        path = tmp_path / "run.pt"
        if path.exists() and load_checkpoint(path)["train_state"]["batch"] >= 8:
            break
        time.sleep(0.05)
    run.kill()
    run.wait()
    killed_at = load_checkpoint(tmp_path / "run.pt")["train_state"]
    assert killed_at["epoch"] < 2, "the run finished before it could be killed"

    resumed = _snnconvert(*args, "--out", str(tmp_path / "run.pt"))
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert f"resumed from epoch {killed_at['epoch']}, batch {killed_at['batch']}" in output
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["resumed_from"] == {"epoch": killed_at["epoch"], "batch": killed_at["batch"]}
    assert [h["epoch"] for h in record["history"]] == [1, 2]

    whole = _snnconvert(*args, "--out", str(tmp_path / "whole.pt"))
    assert whole.wait(timeout=300) == 0
    a, b = (load_checkpoint(tmp_path / f"{n}.pt") for n in ("run", "whole"))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["train_state"]["history"] == b["train_state"]["history"]


def test_resume_of_another_models_run_is_refused(tmp_path):
    data = load_dataset("embedded", "train", SPEC_28).subset(32)
    config = TrainConfig(epochs=1, batch_size=16)
    fit(_model(), data, config, checkpoint_meta={"stage": "prepared", "recipe": {"name": "a"}, "prepare": None}, job=Job(checkpoint=tmp_path / "c.pt"))
    with pytest.raises(CheckpointError, match="run of 'a', not a prepared run of 'b'"):
        fit(_model(), data, config, checkpoint_meta={"stage": "prepared", "recipe": {"name": "b"}, "prepare": None}, job=Job(checkpoint=tmp_path / "c.pt"))
