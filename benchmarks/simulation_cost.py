"""What simulating a converted model costs, relative to its ANN, next to SpikingJelly stepping it.

Run: python benchmarks/simulation_cost.py [--models swin_nano vit_nano resnet_nano] [--batch 128]
     [--timesteps 32] [--chunk 8] [--repeats 3] [--threads 1] [--memory swin_nano] [--device cpu]
     [--timm efficientnet_lite0 --timm-size 224 --timm-batch 16]

For each model (its QCFS ANN, converted in the compensated mode, IF neurons), on one batch of the
embedded Fashion-MNIST sample, interleaved in one run (so that load changes hit every variant
alike), median over the repeats:

* ``simulate()`` as users run it (accuracy at every t, every spiking statistic, spike counts for
  the energy accounting): per step, i.e. ``(time(T) − time(1)) / (T − 1)`` (the one-time setup
  left out), ÷ one ANN forward on the same batch; and in total, ``time(T) ÷ (T ANN forwards)``
  (setup included). Variants: one step per call without folding the input (``plain``); with the
  input folded (``fold``); folded with the default K steps per call (one on a CPU, about 8192 samples
  per call on a GPU: ``fold+K (default)``); folded with ``--chunk`` steps per call; the default with basic metrics
  (spikes and energy only: ``fold+K basic``).
* SpikingJelly 2.0 (``pip install -e ".[bench]"``): the same converted model with every IF
  neuron replaced by ``spikingjelly.activation_based.neuron.IFNode`` (soft reset, v(0) = θ/2),
  stepped one step per call, bare and with SpikingJelly's ``OutputMonitor`` counting spikes; whether
  it gets the same number of correct predictions as ``simulate()`` is printed (the same math).

* The time to the answer under count coding (signed IF, k = 1, and its burst form, k unbounded),
  each image stopped by the exact ``quiet`` exit (``--answer-timesteps`` steps at most): the whole
  ``simulate()`` ÷ one ANN forward (``total``, the one-time setup included: tracing, the static
  energy analysis), the same for each further batch of a run (``per batch``: ``(time(3 batches) −
  time(1 batch)) / 2``, the setup left out), mean steps per image, and whether it gets the same
  correct count as the same SNN run for every step. And what skipping silent layers saves on the
  run of every step (``--answer-timesteps`` steps, no exit: a weight layer fed only zeros at a step
  does not run): ``1 − time(skipping) ÷ time(running them)``.

``--timm NAME …`` adds timm architectures at full size with random weights (nothing can be
downloaded here), converted by calibration alone; the ANN timed is the original one.
``--memory MODEL`` adds the peak resident memory of ``simulate()`` at T = 32, 256 and 1024 (each in
a fresh process, batch 32): it must not grow with T. Absolute times mean little on a shared
machine; compare the ratios, measured in one run.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time

import timm
import torch
from torch import nn

from snnconvert.calibrate import CalibrationConfig, calibrate_thresholds
from snnconvert.convert import NeuronConfig, convert
from snnconvert.prepare import PrepareConfig, prepare_with_report
from snnconvert.data import load_dataset, make_loader
from snnconvert.model_zoo import get_recipe, load_model
from snnconvert.runtime import IFNeuron, SimulationOptions, Watch, reset_states, simulate
from snnconvert.runtime.early_exit import ExitRule



def _zoo(name: str, batch: int, device: str):
    """A zoo model and a batch of the embedded test images: ``(ANN, prepared model, x, y)``, its
    QCFS ANN being both the ANN timed and the model converted."""
    loaded = load_model(get_recipe(name))
    x, y = next(iter(make_loader(load_dataset("embedded", "test", loaded.recipe.input_spec), batch)))
    model = loaded.model.eval().to(device)
    return model, model, x.to(device), y.to(device)


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


class _SpikingJellyIF(nn.Module):
    """One of our IF neurons as SpikingJelly runs it: ``θ·IFNode(v_threshold=θ, v_reset=None)``
    with the membrane reset to v(0) = θ/2 (its reset value) instead of 0."""

    def __init__(self, neuron: IFNeuron):
        from spikingjelly.activation_based import neuron as sj_neuron
        super().__init__()
        theta = float(neuron.threshold)
        self.node = sj_neuron.IFNode(v_threshold=theta, v_reset=None, step_mode="s")
        self.node._memories_rv["v"] = float(neuron.initial_potential) * theta
        self.node.reset()
        self.theta = theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.node(x) * self.theta


def _spikingjelly_model(snn: nn.Module) -> nn.Module:
    """A copy of ``snn`` with every IF neuron stepped by SpikingJelly (layer-wise θ, rate coding)."""
    twin = copy.deepcopy(snn)
    for name, module in list(twin.named_modules()):
        if isinstance(module, IFNeuron):
            if type(module) is not IFNeuron or module.threshold.numel() != 1 or module.tracks_count or module.mask:
                raise ValueError(f"{name}: SpikingJelly's IFNode has no counterpart for {module.extra_repr()}")
            parent, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent) if parent else twin, child, _SpikingJellyIF(module))
    return twin


def _spikingjelly_run(net: nn.Module, x: torch.Tensor, steps: int, monitored: bool) -> torch.Tensor:
    """Step ``net`` as a SpikingJelly user does (reset, T single steps, optionally an
    ``OutputMonitor`` summing each neuron's spikes); returns the predictions after T steps."""
    from spikingjelly.activation_based import functional, monitor, neuron as sj_neuron
    functional.reset_net(net)
    reset_states(net)
    recorder = monitor.OutputMonitor(net, sj_neuron.IFNode, lambda s: s.sum()) if monitored else None
    total = None
    for _ in range(steps):
        out = net(x)
        total = out if total is None else total + out
    if recorder is not None:
        sum(recorder.records)
        recorder.remove_hooks()
    return total.argmax(-1)


ANSWER_NEURONS = ("signed-if", "signed-burst-if")


def _variants(chunk: int) -> dict[str, SimulationOptions]:
    return {"plain": SimulationOptions(chunk=1, fold=False), "fold": SimulationOptions(chunk=1),
            "fold+K (default)": SimulationOptions(), f"fold+{chunk}": SimulationOptions(chunk=chunk),
            "fold+K basic": SimulationOptions(metrics="basic")}


def _timm_random(name: str, size: int, batch: int, device: str):
    """A timm architecture with random weights (nothing is downloaded) converted by calibration
    alone, thresholds from the random batch itself: ``(ANN, prepared model, x, y)``."""
    ann = timm.create_model(name, pretrained=False, num_classes=10).eval().to(device)
    x, y = torch.randn(batch, 3, size, size, device=device), torch.randint(0, 10, (batch,), device=device)
    prepared, _ = prepare_with_report(ann, x[:2], PrepareConfig.calibration_only(8))
    calibrate_thresholds(prepared, [(x, y)], CalibrationConfig("percentile", 99.9, "layer", batch))
    return ann, prepared.eval(), x, y


@torch.no_grad()
def _cost(name: str, model: nn.Module, prepared: nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> dict:
    """Times of ``model`` (the ANN) and of ``prepared`` converted, stepped in every variant."""
    snn = convert(prepared, "compensated")
    variants = _variants(args.chunk)
    times: dict[str, list[float]] = {k: [] for k in ["ann", *variants, *(f"{v} T=1" for v in variants)]}
    try:
        jelly = _spikingjelly_model(snn)
    except (ImportError, ValueError) as e:
        print(f"  ({name}: no SpikingJelly comparison: {e})")
        jelly = None
    if jelly is not None:
        times.update({"spikingjelly": [], "spikingjelly+monitor": []})
    counted = {neuron: convert(prepared, "compensated", NeuronConfig(neuron=neuron, coding="count"))
               for neuron in ANSWER_NEURONS} if args.answer_timesteps else {}
    times.update({f"answer {neuron}": [] for neuron in counted})
    times.update({f"answer {neuron} ×3": [] for neuron in counted})
    times.update({f"every step {neuron} {how}": [] for neuron in counted for how in ("skipping", "running")})
    answers = {}

    def every_step(neuron: str, skip: bool) -> None:
        simulate(counted[neuron], x, y, timesteps=args.answer_timesteps, device=args.device,
                 options=SimulationOptions(skip_silent=skip))

    def answer(neuron: str, batches: int = 1) -> None:
        answers[neuron] = simulate(counted[neuron], [(x, y)] * batches, timesteps=args.answer_timesteps, device=args.device, watch=Watch(exit_rule=ExitRule("quiet")))

    T = args.timesteps
    for _ in range(args.repeats):
        times["ann"].append(_timed(lambda: [model(x) for _ in range(T)]) / T)
        for neuron in counted:
            times[f"answer {neuron} ×3"].append(_timed(lambda: answer(neuron, 3)))
            times[f"answer {neuron}"].append(_timed(lambda: answer(neuron)))
            for skip, how in ((True, "skipping"), (False, "running")):
                times[f"every step {neuron} {how}"].append(_timed(lambda: every_step(neuron, skip)))
        for key, options in variants.items():
            times[key].append(_timed(lambda: simulate(snn, x, y, timesteps=T, device=args.device, options=options)))
            times[f"{key} T=1"].append(_timed(lambda: simulate(snn, x, y, timesteps=1, device=args.device, options=options)))
        if jelly is not None:
            times["spikingjelly"].append(_timed(lambda: _spikingjelly_run(jelly, x, T, False)))
            times["spikingjelly+monitor"].append(_timed(lambda: _spikingjelly_run(jelly, x, T, True)))
    median = {k: statistics.median(v) for k, v in times.items()}
    ann = median["ann"]
    row = {"model": name, "ann_forward_ms": 1e3 * ann}
    for key in variants:
        row[f"{key}: step/ANN"] = (median[key] - median[f"{key} T=1"]) / (T - 1) / ann
        row[f"{key}: total/(T·ANN)"] = median[key] / (T * ann)
    for neuron, counting in counted.items():
        full = simulate(counting, x, y, timesteps=args.answer_timesteps, device=args.device)
        row[f"count, {neuron}, quiet exit: total/ANN"] = median[f"answer {neuron}"] / ann
        row[f"count, {neuron}, quiet exit: per batch/ANN"] = (median[f"answer {neuron} ×3"]
                                                              - median[f"answer {neuron}"]) / 2 / ann
        row[f"count, {neuron}, quiet exit: mean steps"] = answers[neuron].mean_steps
        row[f"count, {neuron}, quiet exit: same correct count"] = answers[neuron].correct[-1] == full.correct[-1]
        row[f"count, {neuron}, every step: skipping silent layers saves"] = (
            1 - median[f"every step {neuron} skipping"] / median[f"every step {neuron} running"])
    if jelly is not None:
        row["spikingjelly: step/ANN"] = median["spikingjelly"] / T / ann
        row["spikingjelly+monitor: step/ANN"] = median["spikingjelly+monitor"] / T / ann
        ours = simulate(snn, x, y, timesteps=T, device=args.device).correct[-1]
        theirs = int((_spikingjelly_run(jelly, x, T, False) == y).sum())
        row["spikingjelly: same correct count"] = ours == theirs
    return row


def _peak_rss_mib() -> float:
    """This process's peak resident memory: ``VmHWM`` (a fresh count after exec, unlike
    ``ru_maxrss``, which keeps the parent's peak from before the fork), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_child(name: str, timesteps: int, chunk: int) -> None:
    _, model, x, y = _zoo(name, 32, "cpu")
    simulate(convert(model, "compensated"), x, y, timesteps=timesteps, options=SimulationOptions(chunk=chunk))
    print(json.dumps({"peak_rss_mib": _peak_rss_mib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["swin_nano", "vit_nano", "resnet_nano"],
                        help="models to time (none: only --memory)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--timm", nargs="*", default=[], metavar="NAME",
                        help="also timm architectures with random weights, converted by calibration alone "
                             "(e.g. efficientnet_lite0 mobilenetv3_large_100)")
    parser.add_argument("--timm-size", type=int, default=224)
    parser.add_argument("--timm-batch", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=8, help="K, steps per call for one more time-batched variant")
    parser.add_argument("--answer-timesteps", type=int, default=48,
                        help="T at most for the time to the answer under count coding (0: not measured)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory", metavar="MODEL", help="also measure peak RSS at T = 32, 256, 1024")
    parser.add_argument("--rss-child", nargs=2, metavar=("MODEL", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        _peak_rss_child(args.rss_child[0], int(args.rss_child[1]), args.chunk)
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.device}, batch {args.batch}, "
          f"T = {args.timesteps}, median of {args.repeats}")
    runs = [(name, lambda name=name: _zoo(name, args.batch, args.device)) for name in args.models]
    runs += [(f"{name} (random weights, {args.timm_size}², batch {args.timm_batch})",
              lambda name=name: _timm_random(name, args.timm_size, args.timm_batch, args.device)) for name in args.timm]
    for name, build in runs:
        row = _cost(name, *build(), args)
        print(f"\n{name}: one ANN forward {row.pop('model') and row.pop('ann_forward_ms'):.1f} ms")
        for key, value in row.items():
            print(f"  {key:<48} {value:.2f}" if isinstance(value, float) else f"  {key:<48} {value}")
    if args.memory:
        print(f"\npeak RSS of simulate() on {args.memory}, batch 32, K = {args.chunk} (fresh process each):")
        for T in (1, 32, 256, 1024):
            out = subprocess.run([sys.executable, __file__, "--rss-child", args.memory, str(T), "--chunk",
                                  str(args.chunk), "--threads", str(args.threads)],
                                 check=True, capture_output=True, text=True).stdout
            print(f"  T = {T:<5} {json.loads(out.strip().splitlines()[-1])['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
