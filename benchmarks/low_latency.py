"""Low-T conversion without training, on the Fashion-MNIST test set.

Run: python benchmarks/low_latency.py [--part cnn transformers] [--limit N] [--iso-limit N] [--out results.json]

**cnn**: a ReLU CNN trained here as a plain ANN (resnet_nano, never QCFS-trained; trained by the
command in ``artifacts/resnet_nano_ann.json`` if the checkpoint is missing) converted by calibration
alone: accuracy and agreement with the ANN's predictions at T = 8, 16, 32, 64 for naive (max)
thresholds, each threshold method, bias / potential corrections (computed for each T of
8, 16, 32 on the calibration images, then simulated for that T), and signed / count-coded
neurons, all with at most one spike per step.

**transformers**: the shipped swin_nano and vit_nano (QCFS, L = 8): the gap to the QCFS ANN at
T = 8, 16, 32 with count coding and k = 1 or 2 spikes per step, spikes and energy per image at
each T; then, on the first ``--iso-limit`` images, the plain IF neuron (rate coding) at its own
iso-accuracy T: the first T at which it is as accurate as each count-coded run on the same images,
with its spikes and energy there.

Every figure is measured in this run; times are for orientation only.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from snnconvert import workflow
from snnconvert.calibrate import CalibrationConfig, CorrectionConfig
from snnconvert.convert import NeuronConfig, convert
from snnconvert.prepare import PrepareConfig
from snnconvert.runtime import Watch, evaluate, simulate

DATA = "fashion-mnist"
ANN = Path(__file__).parent / "artifacts" / "resnet_nano_ann.pt"
CNN_STEPS = (8, 16, 32, 64)
CORRECTED_STEPS = (8, 16, 32)  # a correction is for one T: corrected, then simulated, for each of these
TRANSFORMER_STEPS = (8, 16, 32)


@dataclass(frozen=True)
class Route:
    """One calibration-only conversion: thresholds, neurons, levels L (count coding) and correction."""

    label: str
    thresholds: CalibrationConfig
    neuron: NeuronConfig
    levels: int = 8
    correction: str | None = None


PERCENTILE = CalibrationConfig("percentile", 99.99, "layer", 256)
CNN_ROUTES = [
    Route("IF, max thresholds (naive)", CalibrationConfig("max", num_samples=256), NeuronConfig("if")),
    Route("IF, percentile 99.99", PERCENTILE, NeuronConfig("if")),
    Route("IF, MSE thresholds (channel)", CalibrationConfig("mse", granularity="channel", num_samples=256),
          NeuronConfig("if")),
    Route("IF, max + bias correction", CalibrationConfig("max", num_samples=256), NeuronConfig("if"),
          correction="bias"),
    Route("IF, max + potential correction", CalibrationConfig("max", num_samples=256), NeuronConfig("if"),
          correction="potential"),
    Route("signed IF (k=1), percentile 99.99", PERCENTILE, NeuronConfig("signed-if")),
    Route("signed IF (k=1), percentile + potential", PERCENTILE, NeuronConfig("signed-if"), correction="potential"),
    Route("signed IF (k=1), count coding L=32, percentile", PERCENTILE, NeuronConfig("signed-if", 1, "count"), 32),
]


def _ensure_ann() -> Path:
    if not ANN.exists():
        record = json.loads(ANN.with_suffix(".json").read_text())
        command = record["command"].replace(record["checkpoint"], str(ANN)).split()
        print("training the ANN:", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return ANN


def _row(label: str, accuracy: dict[int, float], agreement: dict[int, float]) -> str:
    cells = " | ".join(f"{accuracy[t]:.2f} / {agreement[t]:.1f}" if t in accuracy else "—" for t in CNN_STEPS)
    return f"| {label} | {cells} |"


def cnn(limit: int | None, batch_size: int, routes: list[int] | None) -> dict:
    loaded = workflow.load("resnet_nano", str(_ensure_ann()))
    test = workflow.eval_loader(loaded.recipe, DATA, batch_size, limit)
    ann_accuracy = evaluate(loaded.model, test)
    images, _ = workflow.calibration_batch(workflow.calibration_loader(loaded.recipe, DATA), 256)
    print(f"\nresnet_nano ANN (plain ReLU, {ANN.name}): {ann_accuracy:.2f} % on {len(test.dataset)} test images; "
          "calibration on 256 training images, no training")
    print("accuracy % / agreement with the ANN % at T =", ", ".join(map(str, CNN_STEPS)))
    print("| route | " + " | ".join(f"T={t}" for t in CNN_STEPS) + " |")
    print("|---|" + "---|" * len(CNN_STEPS))
    rows = []
    for number, route in enumerate(CNN_ROUTES, 1):
        if routes and number not in routes:
            continue
        start = time.perf_counter()
        prepared, _, _ = workflow.ensure_prepared(loaded, DATA, route.thresholds, "cpu", False,
                                                  PrepareConfig.calibration_only(route.levels))
        accuracy, agreement = {}, {}
        if route.correction is None:  # one run gives every t
            result = simulate(convert(prepared, "compensated", route.neuron), test, timesteps=max(CNN_STEPS), watch=Watch(reference=loaded.model))
            accuracy = {t: result.accuracy[t - 1] for t in CNN_STEPS}
            agreement = {t: result.agreement[t - 1] for t in CNN_STEPS}
        else:
            for t in CORRECTED_STEPS:
                snn = convert(prepared, "compensated", route.neuron)
                workflow.calibrate_snn(snn, prepared, images, t, CorrectionConfig(route.correction), [], "ann")
                result = simulate(snn, test, timesteps=t, watch=Watch(reference=loaded.model))
                accuracy[t], agreement[t] = result.accuracy[-1], result.agreement[-1]
        print(_row(route.label, accuracy, agreement) + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
        rows.append({"route": route.label, "accuracy": accuracy, "agreement": agreement})
    return {"ann_accuracy": ann_accuracy, "test_images": len(test.dataset), "routes": rows}


def _count_runs(snn_of, test, reference, qcfs: float, label: str) -> list[dict]:
    """Count coding with k = 1 at every T of :data:`TRANSFORMER_STEPS` and k = 2 at the first."""
    runs = []
    for k, steps in ((1, TRANSFORMER_STEPS), (2, TRANSFORMER_STEPS[:1])):
        for t in steps:
            result = simulate(snn_of(NeuronConfig("signed-if", k, "count")), test, timesteps=t, watch=Watch(reference=reference))
            runs.append({"k": k, "T": t, "accuracy": result.accuracy[-1], "gap": qcfs - result.accuracy[-1],
                         "agreement": result.agreement[-1], "spikes": result.spikes_per_sample,
                         "energy_uj": result.energy_per_sample_pj() / 1e6})
            print(f"| {label} | count, k={k} | {t} | {result.accuracy[-1]:.2f} | {qcfs - result.accuracy[-1]:+.2f} | "
                  f"{result.agreement[-1]:.2f} | {result.spikes_per_sample:,.0f} | "
                  f"{result.energy_per_sample_pj() / 1e6:.3f} |", flush=True)
    return runs


def transformers(models: list[str], limit: int | None, iso_limit: int, max_if_steps: int, batch_size: int) -> dict:
    found = {}
    for name in models:
        loaded = workflow.load(name, None)
        qcfs_ann = loaded.model.eval()

        def snn_of(neuron):
            return convert(qcfs_ann, "compensated", neuron)

        test = workflow.eval_loader(loaded.recipe, DATA, batch_size, limit)
        qcfs = evaluate(qcfs_ann, test)
        print(f"\n{name}: QCFS ANN (L = {loaded.prepare_config.levels}) {qcfs:.2f} % on {len(test.dataset)} test images")
        print("| model | neurons | T | accuracy % | gap (points) | agreement with the QCFS ANN % | spikes/image | "
              "energy µJ/image |")
        print("|---|---|---|---|---|---|---|---|")
        count = _count_runs(snn_of, test, qcfs_ann, qcfs, name)

        subset = workflow.eval_loader(loaded.recipe, DATA, batch_size, iso_limit)
        qcfs_subset = evaluate(qcfs_ann, subset)
        print(f"\n{name}, first {iso_limit} test images (QCFS ANN {qcfs_subset:.2f} %): count coding next to the plain "
              f"IF neuron (rate coding, ≤ 1 spike/step) at the first T ≤ {max_if_steps} as accurate")
        print("| model | count-coded run | its accuracy % | spikes | energy µJ | IF at T | IF accuracy % | IF spikes | "
              "IF energy µJ |")
        print("|---|---|---|---|---|---|---|---|---|")
        plain = simulate(snn_of(NeuronConfig("if")), subset, timesteps=max_if_steps, watch=Watch(reference=qcfs_ann))
        iso, plain_at = [], {}  # IF runs stopped at an iso-accuracy T, by T
        for run in count:
            mine = simulate(snn_of(NeuronConfig("signed-if", run["k"], "count")), subset, timesteps=run["T"])
            target = mine.accuracy[-1]
            t_iso = next((t for t, a in enumerate(plain.accuracy, 1) if a >= target), None)
            row = {"k": run["k"], "T": run["T"], "accuracy": target, "spikes": mine.spikes_per_sample,
                   "energy_uj": mine.energy_per_sample_pj() / 1e6, "if_T": t_iso}
            text = f"| {name} | k={run['k']}, T={run['T']} | {target:.2f} | {mine.spikes_per_sample:,.0f} | " \
                   f"{row['energy_uj']:.3f} | "
            if t_iso is None:
                text += f"not reached by T={max_if_steps} ({plain.accuracy[-1]:.2f} there) | | | |"
            else:
                if t_iso not in plain_at:
                    plain_at[t_iso] = simulate(snn_of(NeuronConfig("if")), subset, timesteps=t_iso)
                at = plain_at[t_iso]
                row.update(if_accuracy=at.accuracy[-1], if_spikes=at.spikes_per_sample,
                           if_energy_uj=at.energy_per_sample_pj() / 1e6)
                text += f"{t_iso} | {at.accuracy[-1]:.2f} | {at.spikes_per_sample:,.0f} | {row['if_energy_uj']:.3f} |"
            print(text, flush=True)
            iso.append(row)
        found[name] = {"qcfs_accuracy": qcfs, "test_images": len(test.dataset), "count": count,
                       "iso": {"images": iso_limit, "qcfs_accuracy": qcfs_subset, "rows": iso,
                               "if_accuracy_per_step": plain.accuracy}}
    return found


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=["cnn", "transformers"], default=["cnn", "transformers"])
    parser.add_argument("--routes", type=int, nargs="+", default=None,
                        help="cnn: only these routes (numbered from 1 in CNN_ROUTES order)")
    parser.add_argument("--models", nargs="+", default=["swin_nano", "vit_nano"], help="transformers: these models")
    parser.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--iso-limit", type=int, default=1000, help="test images for the IF iso-accuracy search")
    parser.add_argument("--max-if-steps", type=int, default=256, help="longest IF simulation in that search")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {args.threads} thread(s); data: {DATA} test split")
    results = {}
    if "cnn" in args.part:
        results["cnn"] = cnn(args.limit, args.batch_size, args.routes)
    if "transformers" in args.part:
        results["transformers"] = transformers(args.models, args.limit, args.iso_limit, args.max_if_steps,
                                               args.batch_size)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
