"""The ``snnconvert`` command: the whole pipeline in one call, or one stage at a time.

    snnconvert MODEL --timesteps T [--data NAME|PATH] [--checkpoint FILE] [--calib-samples N] [--out DIR]
    snnconvert prepare | train | calibrate | convert | simulate | zoo …
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import torch

from snnconvert import pipeline
from snnconvert.calibrate import METHODS, CalibrationConfig, calibrate_batchnorm, calibrate_thresholds
from snnconvert.convert import MODES, PrepareConfig, convert, float_operations, prepare, qcfs_modules
from snnconvert.data import DATASET_NAMES
from snnconvert.errors import SnnConvertError
from snnconvert.runtime import NEURONS
from snnconvert.model_zoo import get_recipe, list_recipes, shipped_checkpoint
from snnconvert.report import write_report
from snnconvert.train import TrainConfig

DATA_HELP = (f"Dataset: one of {', '.join(DATASET_NAMES)} (embedded: a 1,000+1,000-image Fashion-MNIST "
             "sample shipped with the package; fashion-mnist: the Debian package's files), or a directory "
             "with MNIST IDX files, a CIFAR python folder, or an ImageFolder tree (train/, val/).")


class _DefaultToRun(click.Group):
    """A group whose first argument, when it is not a subcommand, is the MODEL of ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _common(f):
    """Options every stage shares."""
    f = click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda, cuda:1 …).")(f)
    f = click.option("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice).")(f)
    f = click.option("--quiet", is_flag=True, help="No progress bars.")(f)
    return f


def _neuron_option(f):
    return click.option("--neuron", type=click.Choice(list(NEURONS)), default="if", show_default=True,
                        help="What QCFS becomes: if (integrate-and-fire, reset by subtraction), signed-if "
                             "(also fires negative spikes to take back surplus ones) or signed-burst-if (signed, "
                             "several spikes per step: exact QCFS with t levels at every step t).")(f)


def _calibration_options(f):
    f = click.option("--calib-samples", type=click.IntRange(1), default=256, show_default=True,
                     help="Sample images (from the training split) for BatchNorm statistics and thresholds.")(f)
    f = click.option("--calib-method", type=click.Choice(METHODS), default="percentile", show_default=True,
                     help="Threshold rule: max, percentile of positive inputs, or MSE-optimal λ for L levels.")(f)
    f = click.option("--percentile", type=click.FloatRange(0, 100, min_open=True), default=99.99,
                     show_default=True, help="Percentile for --calib-method percentile.")(f)
    f = click.option("--granularity", type=click.Choice(["layer", "channel"]), default="layer",
                     show_default=True, help="One threshold per layer, or per channel where a site has channels.")(f)
    return f


def _setup(threads: int | None, device: str) -> None:
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SnnConvertError(f"--device {device} asked for, but torch sees no CUDA device; use --device cpu")


def _calibration(calib_samples, calib_method, percentile, granularity) -> CalibrationConfig:
    return CalibrationConfig(calib_method, percentile, granularity, calib_samples)


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
@click.argument("model")
@click.option("--timesteps", "-T", type=click.IntRange(1), default=None,
              help="Simulation steps T (default: the recipe's). Accuracy is reported at every t ≤ T.")
@click.option("--data", default="embedded", show_default=True, help=DATA_HELP)
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Weights: an snnconvert checkpoint (ann or prepared) or a plain/timm state dict. "
                   "Default: the checkpoint shipped for the recipe, else timm's pretrained weights.")
@_calibration_options
@click.option("--levels", type=click.IntRange(1), default=None, help="QCFS levels L when preparing an ANN "
              "(default: the recipe's).")
@click.option("--epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Train the prepared model this many epochs on the training split before converting.")
@click.option("--mode", "modes", type=click.Choice(MODES), multiple=True,
              help="Attention mode(s), repeatable: compensated (exact in expectation, default) and/or "
                   "mst (the MST reference code's per-step products).")
@_neuron_option
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N test images.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Test images simulated together.")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True,
              help="With no checkpoint: use the shipped checkpoint or timm's pretrained weights "
                   "(--no-pretrained: random initialization, e.g. with --epochs).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/latest", show_default=True,
              help="Folder for report.json, report.md, accuracy_vs_t.png (and prepared.pt).")
@_common
def run_cmd(model, timesteps, data, checkpoint, calib_samples, calib_method, percentile, granularity, levels,
            epochs, modes, neuron, limit, batch_size, pretrained, out, device, threads, quiet):
    """Run the whole pipeline on MODEL (a zoo name such as swin_nano, vit_nano, swin_t, or a timm
    architecture): load weights, prepare (LayerNorm→BatchNorm, activations→QCFS) and calibrate if
    needed, optionally train, convert to IF neurons, simulate T steps and write a report."""
    _setup(threads, device)
    report = pipeline.run(model, timesteps, data, checkpoint, _calibration(calib_samples, calib_method, percentile,
                          granularity), out, list(modes) or ["compensated"], neuron, levels, epochs, limit,
                          batch_size, device, pretrained, progress=not quiet)
    _print_summary(report, out)


def _print_summary(report: dict, out: str) -> None:
    click.echo(f"\n{report['model']} ({report['timm_name']}), weights: {report['weights']}")
    samples = next(iter(report["simulations"].values()))["samples"]
    click.echo(f"data: {report['data']}, {samples} test images, L = {report['levels']}, neuron: {report['neuron']}")
    for label, acc in report["ann_accuracy"].items():
        click.echo(f"  {label:<24} {acc:6.2f} %")
    for mode, sim in report["simulations"].items():
        cells = ", ".join(f"T={t}: {a:.2f}" for t, a in sim["accuracy_at"].items())
        click.echo(f"  SNN {mode:<20} {cells}")
    for mode, sim in report["simulations"].items():
        kinds = ", ".join(sorted({op["kind"] for op in sim["float_operations"]})) or "none"
        click.echo(f"floating-point ops ({mode}): {len(sim['float_operations'])} ({kinds})")
    click.echo(f"report: {Path(out) / 'report.md'}  ({report['seconds']} s)")


@main.command("prepare")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="ANN weights (state dict).")
@click.option("--levels", type=click.IntRange(1), default=None, help="QCFS levels L (default: the recipe's).")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True,
              help="With no checkpoint, fetch timm's pretrained weights (else random initialization).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Prepared checkpoint to write.")
@_common
def prepare_cmd(model, checkpoint, levels, pretrained, out, device, threads, quiet):
    """Rewrite MODEL for conversion (LayerNorm→BatchNorm, GELU/ReLU→QCFS, QCFS in attention, no
    dropout, max-pool→avg-pool) and save it uncalibrated. Lists every layer it cannot rewrite."""
    _setup(threads, device)
    loaded = pipeline.load(model, checkpoint, pretrained, shipped=False)
    if loaded.stage == "prepared":
        raise SnnConvertError(f"{checkpoint} is already prepared: calibrate, train or convert it instead")
    config = PrepareConfig(levels=levels or loaded.recipe.levels)
    prepared = prepare(loaded.model, config)
    pipeline.save_prepared(out, prepared, loaded.recipe, config)
    click.echo(f"prepared {model}: {len(qcfs_modules(prepared))} QCFS activations, L = {config.levels} → {out}")


@main.command("train")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Start from these weights (ANN or prepared); default: the recipe's ANN, randomly initialized.")
@click.option("--data", default="fashion-mnist", show_default=True, help=DATA_HELP)
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True, help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True, help="Images per step.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=2e-3, show_default=True, help="Peak AdamW LR.")
@click.option("--weight-decay", type=click.FloatRange(0), default=0.05, show_default=True, help="AdamW weight decay.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Cross-entropy label smoothing.")
@click.option("--warmup-epochs", type=click.FloatRange(0), default=1.0, show_default=True, help="Linear warmup.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of initialization and shuffling.")
@click.option("--levels", type=click.IntRange(1), default=None, help="QCFS levels L (default: the recipe's).")
@_calibration_options
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from --out when it holds an unfinished run of the same settings.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Checkpoint written atomically during training (and the resume file).")
@_common
def train_cmd(model, checkpoint, data, epochs, batch_size, lr, weight_decay, label_smoothing, warmup_epochs, seed,
              levels, calib_samples, calib_method, percentile, granularity, resume, out, device, threads, quiet):
    """Train a prepared (QCFS) MODEL on DATA's training split, from scratch or from a checkpoint.
    An ANN is prepared first and its BatchNorm statistics and thresholds initialized from data."""
    _setup(threads, device)
    torch.manual_seed(seed)
    loaded = pipeline.load(model, checkpoint, pretrained=False, shipped=False)
    prepared, config, _ = pipeline.ensure_prepared(
        loaded, levels, data, _calibration(calib_samples, calib_method, percentile, granularity), device, not quiet)
    summary = pipeline.train(prepared, loaded.recipe, config, data,
                             TrainConfig(epochs, batch_size, lr, weight_decay, label_smoothing, warmup_epochs, seed),
                             out, device, not quiet, resume=resume)
    if summary["resumed_from"]:
        click.echo(f"resumed from epoch {summary['resumed_from']['epoch']}, batch {summary['resumed_from']['batch']}")
    click.echo(json.dumps(summary["history"][-1] if summary["history"] else {}, indent=None))
    click.echo(f"trained {model} for {epochs} epochs ({summary['seconds']} s this run) → {out}")


@main.command("calibrate")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Prepared or ANN weights (default: the recipe's shipped checkpoint or timm's).")
@click.option("--data", default="embedded", show_default=True, help=DATA_HELP)
@_calibration_options
@click.option("--batchnorm/--no-batchnorm", default=False, show_default=True,
              help="Also re-estimate BatchNorm statistics (always done for an unprepared ANN).")
@click.option("--levels", type=click.IntRange(1), default=None, help="QCFS levels L when preparing an ANN.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Calibrated prepared checkpoint.")
@_common
def calibrate_cmd(model, checkpoint, data, calib_samples, calib_method, percentile, granularity, batchnorm, levels,
                  out, device, threads, quiet):
    """Set QCFS thresholds λ (= IF thresholds θ) of MODEL from N sample images: max, a percentile
    (99.9, 99.99 …) or the MSE-optimal value, per layer or per channel."""
    _setup(threads, device)
    loaded = pipeline.load(model, checkpoint)
    calibration = _calibration(calib_samples, calib_method, percentile, granularity)
    prepared, config, _ = pipeline.ensure_prepared(loaded, levels, data, calibration, device, not quiet)
    if loaded.stage == "prepared":
        loader = pipeline.calibration_loader(loaded.recipe, data)
        if batchnorm:
            calibrate_batchnorm(prepared, loader, calib_samples, device, not quiet)
        calibrate_thresholds(prepared, loader, calibration, device, not quiet)
    pipeline.save_prepared(out, prepared, loaded.recipe, config)
    click.echo(f"calibrated {model} ({calib_method}, {granularity}-wise, {calib_samples} samples) → {out}")


@main.command("convert")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Prepared checkpoint (default: the recipe's shipped one).")
@click.option("--mode", type=click.Choice(MODES), default="compensated", show_default=True,
              help="compensated: spike-correct products and softmax; mst: per-step ops (MST reference).")
@_neuron_option
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Converted checkpoint to write.")
@_common
def convert_cmd(model, checkpoint, mode, neuron, out, device, threads, quiet):
    """Convert a prepared MODEL to an SNN (IF neurons, folded BatchNorm, spike-correct attention)
    and list the operations that still run in floating point."""
    _setup(threads, device)
    loaded = pipeline.load(model, checkpoint)
    if loaded.stage != "prepared":
        raise SnnConvertError("convert needs a prepared checkpoint: run `snnconvert calibrate` or `train` first")
    snn = convert(loaded.model, mode, neuron)
    pipeline.save_converted(out, snn, loaded.recipe, loaded.prepare_config, mode, neuron)
    ops = float_operations(snn)
    click.echo(f"converted {model} ({mode}) → {out}")
    click.echo(f"{len(ops)} operations run in floating point:")
    for op in ops:
        click.echo(f"  {op.name} ({op.kind}): {op.why}")


@main.command("simulate")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Converted or prepared checkpoint (default: the recipe's shipped one).")
@click.option("--timesteps", "-T", type=click.IntRange(1), default=None, help="Steps T (default: the recipe's).")
@click.option("--data", default="embedded", show_default=True, help=DATA_HELP)
@click.option("--mode", type=click.Choice(MODES), default="compensated", show_default=True,
              help="Attention mode when converting a prepared checkpoint (a converted one keeps its own).")
@_neuron_option
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N test images.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True, help="Images per batch.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write report.json/.md/.png here.")
@_common
def simulate_cmd(model, checkpoint, timesteps, data, mode, neuron, limit, batch_size, out, device, threads, quiet):
    """Simulate a converted MODEL for T steps on DATA's test split; print accuracy at t = 4, 8, …, T
    (all t in the report) and spikes per sample."""
    _setup(threads, device)
    path = checkpoint or shipped_checkpoint(get_recipe(model))
    if path is None:
        raise SnnConvertError(f"{model} has no shipped checkpoint: pass --checkpoint FILE")
    snn, recipe = pipeline.load_snn(model, str(path), mode, neuron)
    timesteps = timesteps or recipe.timesteps
    test = pipeline.eval_loader(recipe, data, batch_size, limit)
    sim = pipeline.simulate_and_summarize(snn, recipe, test, timesteps, None, device, not quiet)
    for t, acc in sim["accuracy_at"].items():
        click.echo(f"T={t:<5} accuracy {acc:6.2f} %")
    click.echo(f"spikes per sample: {sim['spikes_per_sample']:.0f} ({sim['samples']} samples, {sim['seconds']:.1f} s)")
    if out:
        report = {**pipeline.report_header(recipe, str(path), data, None, timesteps, neuron), "ann_accuracy": {},
                  "simulations": {mode: sim}}
        write_report(report, out)
        click.echo(f"report: {Path(out) / 'report.md'}")


@main.group("zoo")
def zoo() -> None:
    """The model recipes: names, architectures, input sizes, shipped checkpoints."""


@zoo.command("list")
def zoo_list() -> None:
    """List every recipe."""
    for name in list_recipes():
        r = get_recipe(name)
        shipped = "  [checkpoint shipped]" if shipped_checkpoint(r) else ""
        click.echo(f"{name:<12} {r.timm_name:<32} {'×'.join(map(str, r.input_size)):<10} {r.description}{shipped}")


@zoo.command("show")
@click.argument("name")
def zoo_show(name) -> None:
    """Show one recipe in full (JSON)."""
    r = get_recipe(name)
    click.echo(json.dumps({**r.to_dict(), "shipped_checkpoint": str(shipped_checkpoint(r) or "")}, indent=2))


def entry() -> None:
    """Console entry point: bad input ends with a one-paragraph error, not a traceback."""
    try:
        main(standalone_mode=False)
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
