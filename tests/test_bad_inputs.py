"""A battery of bad inputs and faults through the real command line, as a new user meets them.

Every case must end with a non-zero exit and no traceback, with a message that names the problem;
nothing in a malicious file runs, and nothing already written is lost. Run this file as a script
(``python -m tests.test_bad_inputs``) to print the battery's table: case, exit code, message.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from snnconvert.model_zoo import build_ann, get_recipe, shipped_checkpoint

VIT = str(shipped_checkpoint(get_recipe("vit_nano")))
SWIN = str(shipped_checkpoint(get_recipe("swin_nano")))


class _Evil:
    """Unpickling it would create the file ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def make_files(root: Path) -> dict[str, str]:
    """The bad files and folders the cases use, under ``root``."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    files = {"root": str(root), "marker": str(root / "EXECUTED")}
    (root / "empty.pt").write_bytes(b"")
    (root / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    whole = Path(VIT).read_bytes()
    (root / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    torch.save({"model": _Evil(files["marker"])}, root / "malicious.pt")
    with open(root / "malicious-raw.pt", "wb") as f:
        pickle.dump({"model": _Evil(files["marker"])}, f)
    ckpt = torch.load(VIT, weights_only=True)
    nan = {**ckpt, "model": dict(ckpt["model"])}
    name = next(k for k, v in nan["model"].items() if k.endswith(".weight") and v.dim() == 2)
    nan["model"][name] = nan["model"][name].clone()
    nan["model"][name][0, 0] = float("nan")
    torch.save(nan, root / "nan.pt")
    plain = build_ann(get_recipe("vit_nano")).state_dict()
    plain["head.weight"], plain["head.bias"] = torch.zeros(1000, plain["head.weight"].shape[1]), torch.zeros(1000)
    torch.save(plain, root / "thousand-classes.pt")  # keys match vit_nano's, the head's shapes do not
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, root / "resnet.pt")
    (root / "not-a-report.json").write_text(json.dumps({"accuracy": 90}))
    (root / "not-json.json").write_text("accuracy: 90")
    (root / "empty-data").mkdir(exist_ok=True)
    (root / "ckpt-folder").mkdir(exist_ok=True)
    for split in ("train", "val"):
        for c in range(10):
            folder = root / "tree" / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.fromarray((np.random.default_rng(c * 10 + i).random((28, 28)) * 255).astype("uint8")).save(
                    folder / f"{i}.png")
    (root / "tree" / "val" / "class0" / "broken.png").write_text("not an image")
    (root / "tree" / "val" / "class3" / "notes.jpg").write_bytes(b"\0" * 64)
    resume = root / "resume" / "run.pt"
    resume.parent.mkdir(exist_ok=True)
    resume.write_bytes(whole[: len(whole) // 3])  # a resume file cut short
    held = root / "held"
    held.mkdir(exist_ok=True)
    (held / "report.json").write_text('{"written": "before"}')
    return files


@dataclass
class Case:
    """One bad input: the command line (``{root}`` and ``{holder}`` filled in), what the message must
    say, and files that must be unchanged afterwards (nothing already written lost)."""

    name: str
    args: list[str]
    message: str
    kept: list[str] = field(default_factory=list)


CASES = [
    Case("unknown model", ["swin_tiny_oops"], "unknown model 'swin_tiny_oops'"),
    Case("T = 0", ["vit_nano", "-T", "0"], "0 is not in the range x>=1"),
    Case("data path that does not exist", ["simulate", "vit_nano", "--data", "/nonexistent/path"], "unknown dataset"),
    Case("data folder with no dataset", ["simulate", "vit_nano", "--data", "{root}/empty-data"], "holds no dataset"),
    Case("image tree with files that are not images", ["simulate", "vit_nano", "--data", "{root}/tree", "-T", "2"],
         "2 of 22 files under {root}/tree/val are not readable images: {root}/tree/val/class0/broken.png (not an image)"),
    Case("checkpoint that does not exist", ["simulate", "vit_nano", "--checkpoint", "/nonexistent.pt"], "does not exist"),
    Case("checkpoint that is a folder", ["simulate", "vit_nano", "--checkpoint", "{root}/ckpt-folder"], "is a directory"),
    Case("empty checkpoint", ["simulate", "vit_nano", "--checkpoint", "{root}/empty.pt"], "is empty (0 bytes)"),
    Case("checkpoint of random bytes", ["simulate", "vit_nano", "--checkpoint", "{root}/random.pt"],
         "cannot be read (Unsupported operand"),
    Case("truncated checkpoint", ["simulate", "vit_nano", "--checkpoint", "{root}/truncated.pt"],
         "it is truncated, damaged or not a PyTorch file"),
    Case("malicious checkpoint (torch.save)", ["simulate", "vit_nano", "--checkpoint", "{root}/malicious.pt"],
         "holds Python objects (posix.system), not just tensors; snnconvert loads tensors only and ran none of it"),
    Case("malicious checkpoint (raw pickle)", ["simulate", "vit_nano", "--checkpoint", "{root}/malicious-raw.pt"],
         "cannot be read"),
    Case("checkpoint with a NaN weight", ["simulate", "vit_nano", "--checkpoint", "{root}/nan.pt"],
         "holds non-finite values in 1 tensor(s)"),
    Case("checkpoint of another model", ["simulate", "vit_nano", "--checkpoint", SWIN], "was made for 'swin_nano'"),
    Case("state dict with other shapes", ["vit_nano", "--checkpoint", "{root}/thousand-classes.pt", "-T", "2"],
         "2 tensors differ in shape (head.weight (1000, 48) vs (10, 48)"),
    Case("state dict of another architecture", ["vit_nano", "--checkpoint", "{root}/resnet.pt", "-T", "2"],
         "does not fit the model"),
    Case("mask ratio above 1", ["vit_nano", "--mask", "sa=1.5", "-T", "2"], "must be in [0, 1)"),
    Case("unknown mask target", ["vit_nano", "--mask", "heads=0.5", "-T", "2"], "unknown masking targets ['heads']"),
    Case("mask without a ratio", ["vit_nano", "--mask", "sa", "-T", "2"], "is not TARGET=P"),
    Case("output that cannot be written", ["vit_nano", "--out", "/proc/x", "-T", "2"], "cannot write to /proc/x"),
    Case("output another run is writing", ["vit_nano", "--out", "{root}/held", "-T", "2"],
         "{root}/held is being written by another snnconvert run (pid {holder}", kept=["held/report.json"]),
    Case("input size that is not C,H,W", ["vit_nano", "--input-size", "1,28"], "is not C,H,W"),
    Case("unsupported layers", ["prepare", "sequencer2d_s", "--no-pretrained", "--out", "{root}/seq.pt"],
         "36 op(s) cannot be converted to spiking form:\n  - LSTM ×36"),
    Case("negative thread count", ["simulate", "vit_nano", "--threads", "-1"], "-1 is not in the range x>=1"),
    Case("zero threads", ["simulate", "vit_nano", "--threads", "0"], "0 is not in the range x>=1"),
    Case("compare on a JSON that is not a report", ["compare", "{root}/not-a-report.json"],
         "is not an snnconvert report"),
    Case("compare on a file that is not JSON", ["compare", "{root}/not-json.json"], "is not a JSON report"),
    Case("resume file cut short", ["train", "vit_nano", "--data", "embedded", "--epochs", "1", "--out",
                                   "{root}/resume/run.pt"], "start the run afresh with --no-resume",
         kept=["resume/run.pt"]),
    Case("CUDA on a machine without it", ["simulate", "vit_nano", "--device", "cuda"], "torch sees no CUDA device"),
    Case("options that need dynamic time steps", ["direct-train", "spikformer_nano", "--lambda-m", "1e-4"],
         "need dynamic time steps: add --dynamic-timesteps"),
    Case("export to NIR", ["export", "vit_nano", "--what", "snn", "--format", "nir", "--out", "{root}/x.nir"],
         "cannot export vit_nano to NIR exactly"),
]


def _command(args: list[str]) -> list[str]:
    """The console entry point as a subprocess's command line (``--quiet`` where it applies)."""
    code = "import sys; from snnconvert.cli import entry; sys.argv = ['snnconvert', *sys.argv[1:]]; entry()"
    return [sys.executable, "-c", code, *args, *([] if args[0] == "compare" else ["--quiet"])]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The console entry point in a subprocess, as a user would run it."""
    return subprocess.run(_command(args), capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    files = make_files(root)
    holder = subprocess.Popen(["sleep", "600"])  # a live process holding the lock of held/
    (root / "held" / ".snnconvert.lock").write_text(str(holder.pid))
    files["holder"] = str(holder.pid)
    yield files
    holder.kill()
    holder.wait()


def _fill(text: str, files: dict[str, str]) -> str:
    return text.replace("{root}", files["root"]).replace("{holder}", files["holder"])


def run_case(case: Case, files: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict[str, bytes]]:
    root = Path(files["root"])
    before = {k: (root / k).read_bytes() for k in case.kept}
    proc = _run([_fill(a, files) for a in case.args], root)
    return proc, before


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_error(case, bad_files):
    proc, before = run_case(case, bad_files)
    root = Path(bad_files["root"])
    assert proc.returncode not in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    assert _fill(case.message, bad_files) in proc.stderr, proc.stderr
    assert not Path(bad_files["marker"]).exists()  # nothing in a malicious file ran
    for name, content in before.items():
        assert (root / name).read_bytes() == content, name
    assert not list(root.rglob(".*.tmp"))  # no temporary file left behind


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)


def test_bad_image_files_can_be_left_out_and_are_named(bad_files):
    proc = _run(["simulate", "vit_nano", "--data", f"{bad_files['root']}/tree", "-T", "2", "--skip-bad-files"],
                Path(bad_files["root"]))
    assert proc.returncode == 0, proc.stderr
    assert "warning: left out 2 of 22 files" in proc.stderr and "notes.jpg (not an image)" in proc.stderr
    assert "(20 samples" in proc.stdout


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / ".snnconvert.lock").write_text(str(dead.pid))
    proc = _run(["simulate", "vit_nano", "-T", "2", "--limit", "8", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.json").exists() and not (out / ".snnconvert.lock").exists()


def test_a_simulation_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    args = ["simulate", "vit_nano", "-T", "8", "--limit", "256", "--batch-size", "32", "--threads", "1"]
    run = subprocess.Popen(_command([*args, "--out", str(tmp_path / "a")]), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    progress = list((tmp_path / "a").glob("*.progress.pt"))
    while time.monotonic() < deadline and not progress:
        time.sleep(0.05)
        progress = list((tmp_path / "a").glob("*.progress.pt"))
    time.sleep(0.5)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert progress and not (tmp_path / "a" / "report.json").exists(), "the run finished before it could be killed"
    resumed = _run([*args, "--out", str(tmp_path / "a")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after" in resumed.stdout
    whole = _run([*args, "--out", str(tmp_path / "b")], tmp_path)
    assert whole.returncode == 0, whole.stderr
    a, b = (json.loads((tmp_path / n / "report.json").read_text())["simulations"] for n in ("a", "b"))
    for mode in a:
        for key in ("accuracy_per_step", "spikes_per_sample", "sops_per_sample", "energy_uj_per_sample"):
            assert a[mode][key] == b[mode][key], key


def main() -> None:
    """Print the battery's table (case, exit code, message)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp) / "bad")
        holder = subprocess.Popen(["sleep", "600"])
        (Path(files["root"]) / "held" / ".snnconvert.lock").write_text(str(holder.pid))
        files["holder"] = str(holder.pid)
        try:
            print("| case | exit | message |\n|---|---|---|")
            for case in CASES:
                proc, _ = run_case(case, files)
                message = " ".join(proc.stderr.split()).replace(files["root"], "…").replace("|", "\\|")
                print(f"| {case.name} | {proc.returncode} | {message[:300]} |", flush=True)
        finally:
            holder.kill()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
