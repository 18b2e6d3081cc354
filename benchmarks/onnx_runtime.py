"""The exported SNN step in onnxruntime against the PyTorch simulator: parity, and step time.

    python benchmarks/onnx_runtime.py [--models swin_nano,vit_nano,resnet_nano,spikformer_nano]
                                      [--timesteps 64] [--images 256] [--start 10] [--repeats 5]

For each model (the shipped checkpoints; spikformer_nano with random weights, seed 0): export one
step and run T steps on the first test images of the embedded Fashion-MNIST sample, free-running
from the initial state and from PyTorch's state after ``--start`` steps, and given PyTorch's state
before every step (each step's own differences); print the differing predictions, the largest
relative output difference and the spikes that differ (see ``snnconvert.export.parity``). Then the time of one step on the same batch, each runtime on the
same threads, as a ratio measured in this run (median of ``--repeats``): the exported step (the
whole graph every step) against the PyTorch step graph as the simulator runs it (its input part
folded) and unfolded (the same graph as the export).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from snnconvert import workflow
from snnconvert.convert import NeuronConfig
from snnconvert.export.parity import parity
from snnconvert.export.session import OnnxStep
from snnconvert.model_zoo import build_spiking_classifier, direct_config, get_recipe, shipped_checkpoint
from snnconvert.runtime import Execution, SimulationOptions


def load(name: str):
    recipe = get_recipe(name)
    path = shipped_checkpoint(recipe)
    if path is None:  # a directly trained model without shipped weights: random ones
        torch.manual_seed(0)
        return build_spiking_classifier(recipe, direct_config(recipe)).for_inference(recipe.example_batch()), recipe
    loaded = workflow.load_snn(name, str(path), "compensated", NeuronConfig())
    return loaded.snn, loaded.recipe


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="swin_nano,vit_nano,resnet_nano,spikformer_nano")
    parser.add_argument("--timesteps", type=int, default=64)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--start", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; T = {args.timesteps}, {args.images} images")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            snn, recipe = load(name)
            images, _ = next(iter(workflow.eval_loader(recipe, "embedded", args.images, args.images)))
            path = Path(scratch) / f"{name}.onnx"
            workflow.export_snn(snn, path, recipe.example_batch(), workflow.model_metadata(recipe, args.timesteps))
            for start, forced in ((0, False), (args.start, False), (0, True)):
                p = parity(snn, path, images, args.timesteps, start, forced)
                how = "each step from PyTorch's state" if forced else f"free-running from t={start}"
                extra = ""
                if forced:
                    extra = f"; where every spike agreed {p.max_relative_output_same_spikes:.1e}"
                    if p.max_margin is not None:
                        extra += f"; first differing spikes within {p.max_margin:.1e}·θ of the threshold"
                print(f"{name:16s} {how:30s} predictions differing {p.differing_predictions}/"
                      f"{p.steps * p.samples}; spikes differing {p.differing_spikes} of {p.total_spikes} "
                      f"({100 * p.differing_spikes / max(1, p.total_spikes):.6f} %); max relative output "
                      f"difference {p.max_relative_output:.1e}{extra}")
            step = OnnxStep(path)
            x = images.numpy()
            state = step.initial_state(len(x))
            t = np.array(0, dtype=np.int64)
            onnx_s = median_time(lambda: step.run(x, t, state), args.repeats)
            timings = {}
            for fold in (True, False):
                with Execution(snn, SimulationOptions(chunk=1, fold=fold)) as execution, torch.no_grad():
                    execution.reset()
                    inputs = execution.inputs(images)
                    execution.run(inputs, 1)
                    timings[fold] = median_time(lambda: execution.run(inputs, 1), args.repeats)
            print(f"{name:16s} step time onnxruntime / PyTorch: {onnx_s / timings[True]:.2f} (PyTorch folded), "
                  f"{onnx_s / timings[False]:.2f} (unfolded); {1e3 * onnx_s:.1f} ms, {1e3 * timings[True]:.1f} ms, "
                  f"{1e3 * timings[False]:.1f} ms for {len(x)} images")


if __name__ == "__main__":
    main()
