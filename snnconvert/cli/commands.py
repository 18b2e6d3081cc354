"""The ``snnconvert`` command: the whole pipeline in one call, or one stage at a time. Each
command parses its options into a spec (:mod:`snnconvert.cli.options`), runs its workflow stage
(:mod:`snnconvert.workflow`) and prints the stage's record (:mod:`snnconvert.report.console`).

    snnconvert MODEL --timesteps T [--data NAME|PATH] [--checkpoint FILE] [--calib-samples N] [--out DIR]
    snnconvert prepare | train | finetune | calibrate | convert | simulate | export | mask-sweep | …
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from snnconvert import distributed, workflow
from snnconvert.checkpoint import Job
from snnconvert.cli import options
from snnconvert.errors import SnnConvertError
from snnconvert.model_zoo import get_recipe, list_recipes
from snnconvert.report import comparison, console, write_comparison
from snnconvert.spec import DirectSpec, RunSpec, SimulateSpec, SweepSpec


class _DefaultToRun(click.Group):
    """A group whose first argument, when it is not a subcommand, is the MODEL of ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _echo(lines: list[str] | str) -> None:
    """Print once (rank 0 under torchrun)."""
    if distributed.is_main():
        for line in [lines] if isinstance(lines, str) else lines:
            click.echo(line)


@click.group(cls=_DefaultToRun, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snnconvert")
def main() -> None:
    """Convert trained vision transformers and CNNs into spiking neural networks (ANN-to-SNN,
    Masked Spiking Transformer pipeline), simulate them and measure them.

    \b
    snnconvert MODEL --timesteps T ...     the whole pipeline (see `snnconvert run --help`)
    snnconvert STAGE ...                   one stage: prepare, train, calibrate, convert, simulate
    snnconvert zoo list                    the model recipes
    """


@main.command("run")
@options.RUN
def run_cmd(model, config, out, **given):
    """Run the whole pipeline on MODEL (a zoo name such as swin_nano, vit_nano, swin_t, or a timm
    architecture): load weights, prepare (LayerNorm→BatchNorm, activations→QCFS) and calibrate if
    needed, optionally train (with --mask: the masked model) or, with --no-finetune, convert by
    calibration alone, convert to spiking neurons (optionally corrected layer by layer), simulate T
    steps and write a report."""
    device, progress = options.setup(given)
    spec = options.spec_of(RunSpec, model, config, given, options.run_spec)
    _echo(console.run_lines(workflow.run(spec, out, device, progress), out))


@main.command("prepare")
@options.PREPARE
def prepare_cmd(model, out, **given):
    """Trace MODEL and rewrite it for conversion (LayerNorm→BatchNorm, activations→QCFS, the MST
    sites, no dropout) and save it uncalibrated. Prints every change it made; lists every op it
    cannot convert."""
    options.setup(given)
    config = options.prepare_config(model, given)
    report, sites = workflow.prepare_checkpoint(options.model_source(model, given), config, out)
    _echo(console.prepared_lines(report, sites, model, config.levels, out))


@main.command("train")
@options.TRAIN
def train_cmd(model, out, resume, **given):
    """Train MODEL on DATA's training split from scratch or from a checkpoint: the prepared (QCFS)
    model (an ANN is prepared first, BatchNorm statistics and thresholds initialized from data), or
    with --ann the original ANN. Runs under torchrun too (one process per core or GPU)."""
    device, progress = options.setup(given)
    record = workflow.training(options.train_spec(model, given, finetune=False), device, Job(progress, out, resume))
    _echo(console.loading_lines(record.loading) + console.training_lines(record, "trained", model, out))


@main.command("finetune")
@options.FINETUNE
def finetune_cmd(model, out, resume, **given):
    """Prepare a trained ANN MODEL (LayerNorm→BatchNorm, GELU/ReLU→QCFS), calibrate it and fine-tune
    it with distillation from the original ANN (the MST recipe). With --mask the student gets Random
    Spike Masks, with --spike-probabilities / --spike-streams spiking attention probabilities /
    streams; starting from a prepared checkpoint, the model as it came is the teacher (MST §4.3).
    Unset hyper-parameters come from the recipe (`snnconvert zoo show MODEL`). Runs under torchrun
    too (one process per core or GPU)."""
    device, progress = options.setup(given)
    record = workflow.training(options.train_spec(model, given, finetune=True), device, Job(progress, out, resume))
    _echo(console.loading_lines(record.loading) + console.training_lines(record, "fine-tuned", model, out))


@main.command("calibrate")
@options.CALIBRATE
def calibrate_cmd(model, out, **given):
    """Set QCFS thresholds λ (= IF thresholds θ) of MODEL from N sample images: max, a percentile
    (99.9, 99.99 …) or the MSE-optimal value, per layer or per channel (capped where the activation
    is, ReLU6 at 6). An ANN is prepared first; what each change costs on the calibration images is
    printed. With --correct the model is also converted and each layer's mean conversion error at T
    removed, layer by layer, by a bias or the initial potential (Li et al. 2021)."""
    device, progress = options.setup(given)
    spec = options.calibrate_spec(model, given)
    record = workflow.calibrate(spec, out, device, progress)
    what = f"{spec.calibration.method}, {spec.calibration.granularity}-wise, {spec.calibration.num_samples} samples"
    _echo(console.loading_lines(record.loading)
          + console.calibration_lines(record, model, out, what, spec.neuron.describe()))


@main.command("convert")
@options.CONVERT
def convert_cmd(model, mode, out, **given):
    """Convert a prepared MODEL to an SNN (IF neurons, folded BatchNorm, spike-correct attention)
    and list the operations that still run in floating point."""
    options.setup(given)
    neuron = options.neuron_config(given)
    ops = workflow.convert_checkpoint(options.model_source(model, given), mode, neuron, out)
    _echo(console.converted_lines(ops, model, mode, neuron.describe(), out))


@main.command("simulate")
@options.SIMULATE
def simulate_cmd(model, config, out, **given):
    """Simulate a converted MODEL (a recipe name, or a MODEL.onnx step from `snnconvert export`) for T
    steps on DATA's test split; print accuracy at t = 4, 8, …, T (all t in the report) and spikes
    per sample."""
    device, progress = options.setup(given)
    report = workflow.simulate_model(options.spec_of(SimulateSpec, model, config, given, options.simulate_spec), out,
                                     device, progress)
    _echo(console.simulation_lines(report) + ([f"report: {Path(out) / 'report.md'}"] if out else []))


@main.command("export")
@options.EXPORT
def export_cmd(model, what, fmt, out, timesteps, mode, **given):
    """Write MODEL to ONNX: its SNN as one stateless time step `(x, t, state…) → (y, t+1, state′…)`
    (run it with `snnconvert simulate FILE.onnx`), or its ANN. The metadata says what it is, its
    input, classes, neurons, T and how to build the initial state."""
    options.setup(given)
    _echo(console.exported_line(workflow.export(options.model_source(model, given), what, out, fmt, mode,
                                                options.neuron_config(given), timesteps), model))


@main.command("mask-sweep")
@options.MASK_SWEEP
def mask_sweep_cmd(model, config, out, **given):
    """Random Spike Masking sweep of a prepared MODEL: accuracy at T, spikes, power (MST's model:
    total spikes, relative to the unmasked SNN) and energy for every target and ratio, optionally
    after fine-tuning each masked model against the unmasked one (--finetune-epochs)."""
    device, progress = options.setup(given)
    spec = options.spec_of(SweepSpec, model, config, given, options.sweep_spec)
    _echo(console.sweep_lines(workflow.mask_sweep(spec, out, device, progress), out))


@main.command("direct-train")
@options.DIRECT_TRAIN
def direct_train_cmd(model, config, out, **given):
    """Train a spiking MODEL directly (surrogate gradients, backpropagation through T steps), then
    simulate it on DATA's test split and report it like a converted model (accuracy per step,
    spikes, spiking metrics, energy). Unset settings come from the recipe (`zoo show MODEL`).
    With --dynamic-timesteps each spiking layer learns how many of the T_max steps it sends."""
    device, progress = options.setup(given)
    spec = options.spec_of(DirectSpec, model, config, given, options.direct_spec)
    report = workflow.direct_train(spec, out, device, progress)
    _echo(console.direct_lines(report, spec.model, out, spec.direct.describe()))


@main.command("compare")
@options.COMPARE
def compare_cmd(reports, out):
    """Put simulation reports side by side (REPORTS: report.json files or their folders, from
    `snnconvert MODEL`, `simulate --out` or `direct-train`): accuracy, T, spikes, SOPs, MACs,
    energy and training time, on the same test set."""
    result = comparison(list(reports))
    write_comparison(result, out)
    _echo(console.comparison_lines(result, out))


@main.group("zoo")
def zoo() -> None:
    """The model recipes: names, architectures, input sizes, shipped checkpoints."""


@zoo.command("list")
def zoo_list() -> None:
    """List every recipe."""
    _echo(console.recipe_lines([get_recipe(name) for name in list_recipes()]))


@zoo.command("show")
@options.SHOW
def zoo_show(name) -> None:
    """Show one recipe in full (JSON), with its fine-tune settings and the record of its shipped checkpoint."""
    _echo(console.recipe_json(get_recipe(name)))


@zoo.command("build")
@options.BUILD
def zoo_build(name, data, out, **given) -> None:
    """Reproduce NAME's shipped checkpoint from scratch as its build plan says (`zoo show NAME`):
    train the ANN, then prepare, calibrate and fine-tune (with distillation) the QCFS model."""
    device, progress = options.setup(given)
    record = workflow.build(name, out, data, device, progress)
    _echo(console.built_lines(record, name, Path(out) / get_recipe(name).checkpoint))


def entry() -> None:
    """Console entry point: bad input ends with a one-paragraph error, not a traceback; warnings
    read ``warning: …`` (one line each, without the source line)."""
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"
    try:
        main(standalone_mode=False)
        distributed.shutdown()
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (SnnConvertError, ValueError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
