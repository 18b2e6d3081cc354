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

import snnconvert
from snnconvert import NeuronConfig, PrepareConfig
from snnconvert.calibrate import CalibrationConfig, calibrate_batchnorm, calibrate_thresholds, correct
from snnconvert.direct import DirectConfig
from snnconvert.errors import ArgumentError
from snnconvert.export import export_ann, export_snn
from snnconvert.model_zoo import build_ann, get_recipe, shipped_checkpoint
from snnconvert.runtime import SimulationOptions, simulate
from snnconvert.train import TrainConfig

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
    Case("event-driven on a rate-coded model", ["simulate", "vit_nano", "-T", "2", "--limit", "4", "--event-driven"],
         "needs a count-coded model"),
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
    Case("T_max without dynamic time steps", ["direct-train", "spikformer_nano", "--max-timesteps", "4"],
         "--max-timesteps is T_max of dynamic time steps: add --dynamic-timesteps"),
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


@pytest.fixture(scope="module")
def api_objects():
    """A tiny CNN, its prepared and converted forms and an example batch, for the API's misuses."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)).eval()
    x = torch.randn(4, 1, 8, 8)
    prepared = snnconvert.prepare(model, x)
    return {"model": model, "x": x, "prepared": prepared, "snn": snnconvert.convert(prepared),
            "y": torch.zeros(4, dtype=torch.long)}


#: (case, call on the objects of ``api_objects``, words the error must hold)
API_CASES = [
    ("config where the example goes", lambda o: snnconvert.prepare(o["model"], PrepareConfig()),
     "example must be an input batch tensor [N, C, H, W], got a PrepareConfig; call prepare(model, example, config)"),
    ("prepare: swapped arguments", lambda o: snnconvert.prepare(o["x"], o["model"]),
     "model must be an nn.Module, got a torch.float32 tensor of shape (4, 1, 8, 8); the arguments may be swapped"),
    ("prepare: empty batch", lambda o: snnconvert.prepare(o["model"], o["x"][:0]), "of at least one sample"),
    ("prepare: integer images", lambda o: snnconvert.prepare(o["model"], o["x"].long()), "floating-point batch"),
    ("prepare: a shape the model does not take", lambda o: snnconvert.prepare(o["model"], torch.randn(2, 3, 8, 8)),
     "the model does not run on the example batch of shape (2, 3, 8, 8)"),
    ("prepare: a dict for the config", lambda o: snnconvert.prepare(o["model"], o["x"], {"levels": 4}),
     "config must be a PrepareConfig or None, got a dict"),
    ("config field of the wrong type", lambda o: PrepareConfig(levels="8"), "levels must be an int, got str '8'"),
    ("config field of the wrong type (bool)", lambda o: CalibrationConfig(num_samples=True),
     "num_samples must be an int, got bool True"),
    ("neuron config: a fractional spike bound", lambda o: NeuronConfig(max_spikes=1.5),
     "max_spikes must be an int or None, got float 1.5"),
    ("neuron config: a spike bound on signed-burst-if", lambda o: NeuronConfig("signed-burst-if", max_spikes=3),
     "signed-burst-if has no bound on spikes per step: use the neuron signed-if with max_spikes 3"),
    ("direct config: a mask-loss weight without dynamic time steps", lambda o: DirectConfig(lambda_m=0.1),
     "lambda_m need dynamic time steps: add --dynamic-timesteps"),
    ("simulation options: an unknown precision", lambda o: SimulationOptions(precision="fp8"), "unknown precision"),
    ("train config: epochs as a string", lambda o: TrainConfig(epochs="3"), "epochs must be an int"),
    ("convert: swapped mode and neuron", lambda o: snnconvert.convert(o["prepared"], NeuronConfig()),
     "mode must be one of compensated, mst, got a NeuronConfig; the arguments may be swapped"),
    ("convert: a tensor", lambda o: snnconvert.convert(o["x"]), "convert: model must be an nn.Module"),
    ("convert: an ANN never prepared", lambda o: snnconvert.convert(o["model"]), "has no QCFS activations"),
    ("calibrate: a tensor for the loader", lambda o: calibrate_thresholds(o["prepared"], o["x"]),
     "wrap a tensor batch x as [(x, None)]"),
    ("calibrate: an empty loader", lambda o: calibrate_thresholds(o["prepared"], []), "the loader yielded no samples"),
    ("calibrate: batches without labels", lambda o: calibrate_thresholds(o["prepared"], [o["x"]]),
     "each batch of the loader must be an (images, labels) pair"),
    ("calibrate: images of another size", lambda o: calibrate_thresholds(o["prepared"], [(torch.randn(2, 1, 9, 9), None)]),
     "has shape (2, 1, 9, 9), the model expects [N, 1, 8, 8]"),
    ("calibrate: a model never prepared", lambda o: calibrate_thresholds(o["model"], [(o["x"], None)]),
     "has no QCFS sites to calibrate"),
    ("calibrate BatchNorm: an empty loader", lambda o: calibrate_batchnorm(o["prepared"], []),
     "the loader yielded no samples"),
    ("calibrate: zero samples", lambda o: calibrate_batchnorm(o["prepared"], [(o["x"], None)], 0),
     "num_samples must be an int >= 1"),
    ("simulate: no labels for a batch", lambda o: simulate(o["snn"], o["x"]),
     "labels must be a tensor of 4 class indices"),
    ("simulate: labels of another length", lambda o: simulate(o["snn"], o["x"], o["y"][:3]),
     "labels must be a tensor of 4 class indices (one per image), got a torch.int64 tensor of shape (3,)"),
    ("simulate: T = 0", lambda o: simulate(o["snn"], o["x"], o["y"], timesteps=0), "timesteps must be an int >= 1"),
    ("simulate: images of another size", lambda o: simulate(o["snn"], torch.randn(4, 1, 9, 9), o["y"]),
     "has shape (4, 1, 9, 9), the model expects [N, 1, 8, 8]"),
    ("simulate: an empty loader", lambda o: simulate(o["snn"], []), "the data yielded no samples"),
    ("simulate: swapped arguments", lambda o: simulate(o["x"], o["snn"]), "snn must be an nn.Module"),
    ("correct: swapped models and images", lambda o: correct(o["snn"], o["x"], o["prepared"], 4),
     "prepared must be an nn.Module"),
    ("export: path and example swapped", lambda o: export_ann(o["model"], o["x"], "ann.onnx", {}),
     "path must be a file path (str or Path)"),
    ("export: an example of another size", lambda o: export_snn(o["snn"], "snn.onnx", torch.randn(2, 1, 9, 9), {}),
     "the model expects [N, 1, 8, 8]"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_misuse_is_one_clear_error_before_any_work(case, api_objects, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {k: v.clone() for k, v in api_objects["prepared"].state_dict().items()}
    with pytest.raises(ArgumentError) as err:
        case[1](api_objects)
    assert case[2] in str(err.value) and "\n" not in str(err.value)
    after = api_objects["prepared"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was calibrated half-way
    assert not list(tmp_path.iterdir())  # nothing was written


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
