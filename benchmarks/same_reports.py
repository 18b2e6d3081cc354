"""Whether a change of the code changed what the commands report: the reports of the same command
lines, run by the code of another revision and by this tree, compared field by field.

    python benchmarks/same_reports.py [--before REV] [--out runs/same_reports]

REV (default ``HEAD``) is checked out in a temporary git worktree and run with ``PYTHONPATH``
pointing at it; this tree runs as installed. Compared: ``snnconvert swin_nano -T 16 --coding count
--neuron signed-if --limit 200`` (report.json), a ``mask-sweep`` (sweep.json) and a short
``direct-train`` (report.json), each side writing to a folder of its own (named ``OUT`` in both).
Wall times (``seconds``) are left out, and the run spec where only the newer report stores it;
every other difference is printed, and the script exits 1 if there is one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

COMMANDS = {
    "run": (["swin_nano", "-T", "16", "--coding", "count", "--neuron", "signed-if", "--limit", "200"], "report.json"),
    "mask-sweep": (["mask-sweep", "vit_nano", "-T", "8", "--targets", "attn", "--ratios", "0.5", "--limit", "64"],
                   "sweep.json"),
    "direct-train": (["direct-train", "spikformer_nano", "--data", "embedded", "--epochs", "1", "--train-samples",
                      "128", "--batch-size", "64", "--limit", "64"], "report.json"),
}
IGNORED = {"seconds"}
NEW = {"spec"}  # stored by reports since 0.2: compared where both have it


def run(command: list[str], out: Path, pythonpath: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-m", "snnconvert", *command, "--threads", "1", "--quiet", "--out",
                           str(out)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip().splitlines()[-1:]}")
    return out


def differences(a, b, where: str = "") -> list[str]:
    """Every place where ``a`` and ``b`` differ (dicts by key, lists by position)."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            if key in IGNORED or (key in NEW and key not in a):
                continue
            if key not in a or key not in b:
                found.append(f"{where}.{key}: only in the {'new' if key in b else 'old'} report")
            else:
                found += differences(a[key], b[key], f"{where}.{key}")
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} → {b!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="HEAD")
    parser.add_argument("--out", default="runs/same_reports")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    failed = False
    with tempfile.TemporaryDirectory() as tree:
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", tree, args.before], check=True,
                       capture_output=True)
        try:
            for name, (command, file) in COMMANDS.items():
                old = run(command, Path(args.out) / name / "before", tree)
                new = run(command, Path(args.out) / name / "after", None)
                found = differences(*(json.loads((out / file).read_text().replace(str(out), "OUT")) for out in (old, new)))
                print(f"{name}: {'the same' if not found else f'{len(found)} difference(s)'}")
                for line in found[:20]:
                    print(f"  {line}")
                failed |= bool(found)
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", tree], capture_output=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
