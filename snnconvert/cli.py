"""The ``snnconvert`` command: the whole pipeline in one call, or one stage at a time.

    snnconvert MODEL --timesteps T [--data NAME|PATH] [--checkpoint FILE] [--calib-samples N] [--out DIR]
    snnconvert prepare | train | calibrate | convert | simulate | export | zoo …
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import asdict, replace
import sys
from pathlib import Path

import click
import torch

from snnconvert import distributed, workflow
from snnconvert.calibrate import (CORRECTIONS, METHODS, REFERENCES, CalibrationConfig, CorrectionConfig,
                                  calibrate_batchnorm, calibrate_thresholds)
from snnconvert.convert import MODES, NeuronConfig, convert, float_operations
from snnconvert.prepare import MASK_TARGETS, MaskConfig, PrepareConfig, prepare_with_report, qcfs_modules
from snnconvert.prepare.config import DEFAULT_KEPT_ACTIVATIONS, LAYERNORM_CHOICES, MAX_POOL_CHOICES, SITE_POLICIES
from snnconvert.prepare.rewrite import ROUTE_SITES
from snnconvert.data import DATASET_NAMES
from snnconvert.data.datasets import SKIP_BAD_FILES
from snnconvert.direct import ENCODERS, NODES, SURROGATES
from snnconvert.errors import SnnConvertError
from snnconvert.outputs import claim_output
from snnconvert.export import OPSET
from snnconvert.export.session import BACKENDS, read_metadata
from snnconvert.runtime import CODINGS, NEURONS, SimulationOptions
from snnconvert.runtime.execution import PRECISIONS
from snnconvert.runtime.energy import EnergyCosts
from snnconvert.spec import DataSpec, ModelSource, RunSpec
from snnconvert.model_zoo import direct_config, get_recipe, list_recipes, shipped_checkpoint
from snnconvert.report import comparison, write_comparison
from snnconvert.report.calibration import calibration_table
from snnconvert.report.report import convention_table
from snnconvert.report.early_exit import early_exit_table, write_early_exit_report
from snnconvert.runtime.early_exit import ExitRule
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


def _claim_out(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check that ``--out`` can be written and lock it for this run (rank 0 under torchrun), before
    any work starts; the lock goes when the command ends."""
    if value is not None and not ctx.resilient_parsing and int(os.environ.get("RANK", "0")) == 0:
        lock = claim_output(value, folder=not param.type.file_okay)
        ctx.call_on_close(lock.release)
    return value


def _skip_bad_files(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        token = SKIP_BAD_FILES.set(True)
        ctx.call_on_close(lambda: SKIP_BAD_FILES.reset(token))


def _data_option(default: str | None = "embedded", text: str = DATA_HELP):
    """``--data``, and ``--skip-bad-files`` for image trees holding files that are not images."""
    def decorate(f):
        f = click.option("--skip-bad-files", is_flag=True, expose_value=False, callback=_skip_bad_files,
                         help="Leave out the files of an ImageFolder tree that are not readable images (listed in a "
                              "warning) instead of refusing the data.")(f)
        return click.option("--data", default=default, show_default=default is not None, help=text)(f)
    return decorate


def _common(f):
    """Options every stage shares."""
    f = click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda, cuda:1 …).")(f)
    f = click.option("--threads", type=click.IntRange(1), default=None,
                     help="CPU threads for torch (default: torch's choice).")(f)
    f = click.option("--quiet", is_flag=True, help="No progress bars.")(f)
    return f


def _event_driven_option(f):
    return click.option("--event-driven/--dense-energy", "event_driven", default=None,
                        help="The event-driven route (count coding): each op's work counted from what its inputs "
                             "sent at each step (only changes cost; the default under count coding), the attention "
                             "probabilities and the real-valued streams into weight layers made to spike where the "
                             "model has them (unless --no-spike-probabilities / --no-spike-streams) and, where it is exact, the quiet exit (each image stops once no neuron has anything "
                             "left to send); --dense-energy: every op counted at every step, nothing else changed.")(f)


def _simulation_options(f):
    """How the simulation runs (SimulationOptions): the same result, faster or leaner."""
    f = _event_driven_option(f)
    f = click.option("--compile", "compile_step", is_flag=True,
                     help="torch.compile the step graph (worth it on a GPU; minutes of compiling on a CPU).")(f)
    f = click.option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32", show_default=True,
                     help="bf16/fp16: half-precision matmuls and convolutions under autocast; membranes, "
                          "running totals and statistics stay float32.")(f)
    f = click.option("--metrics", type=click.Choice(["full", "basic"]), default="full", show_default=True,
                     help="full: spike %, negative-potential % and residual potential per layer too; basic: "
                          "spikes and energy only (faster).")(f)
    return click.option("--chunk", type=click.IntRange(1), default=None, metavar="K",
                        help="Time steps per call (time batching; exact). Default: about 8192 samples per call on "
                             "a GPU, 1 step on a CPU (try 4-8 for a small CNN).")(f)


def _simulation(chunk: int | None, metrics: str, precision: str, compile_step: bool, event_driven: bool | None = None,
                **_other_options) -> SimulationOptions:
    return SimulationOptions(chunk, metrics, precision, compile_step, event_driven)


def _energy_options(f):
    f = click.option("--e-mac", type=click.FloatRange(0), default=4.6, show_default=True,
                     help="Energy of one multiply-accumulate in pJ (45 nm default), for layers fed real values.")(f)
    return click.option("--e-ac", type=click.FloatRange(0), default=0.9, show_default=True,
                        help="Energy of one accumulate (synaptic operation) in pJ (45 nm default).")(f)


def _neuron_options(f):
    """What QCFS becomes (NeuronConfig)."""
    f = click.option("--coding", type=click.Choice(CODINGS), default="rate", show_default=True,
                     help="rate: the image every step, a value is a running mean (QCFS's convention); count: the "
                          "image and every constant once, a value is a total of at most L spikes per neuron (the "
                          "SNN is its QCFS ANN once every neuron has sent its count; SpikeZIP-TF's accumulation).")(f)
    f = click.option("--max-spikes", type=click.IntRange(1), default=None, metavar="K",
                     help="Spikes a neuron may fire in one step (default 1: binary spikes, ternary with "
                          "signed-if); every spike of a burst counts as one event.")(f)
    return click.option("--neuron", type=click.Choice(list(NEURONS)), default="if", show_default=True,
                        help="What QCFS becomes: if (integrate-and-fire, reset by subtraction), signed-if "
                             "(also fires negative spikes to take back surplus ones) or signed-burst-if (signed-if "
                             "with no bound on a step's spikes).")(f)


def _neuron_config(neuron: str, max_spikes: int | None, coding: str, **_other_options) -> NeuronConfig:
    """The neuron options as a config."""
    if neuron == "signed-burst-if":
        if max_spikes is not None:
            raise click.BadParameter("signed-burst-if has no bound on spikes per step: use --neuron signed-if "
                                     f"--max-spikes {max_spikes}", param_hint="--max-spikes")
        return NeuronConfig(neuron, coding=coding)
    return NeuronConfig(neuron, max_spikes or 1, coding)


def _correction_options(f):
    """SNN calibration after conversion (CorrectionConfig)."""
    f = click.option("--correct-iterations", type=click.IntRange(1), default=1, show_default=True,
                     help="Correction passes per layer, each on the error the ones before left.")(f)
    return click.option("--correct", type=click.Choice(CORRECTIONS), default=None,
                        help="After conversion, remove each layer's mean conversion error at T on the calibration "
                             "images, layer by layer (Li et al. 2021): bias (added to the neuron's input) or "
                             "potential (initial membrane potential).")(f)


def _correction(correct: str | None, correct_iterations: int, **_other_options) -> CorrectionConfig | None:
    return CorrectionConfig(correct, correct_iterations) if correct else None


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


def _prepare_options(f):
    """How an ANN is prepared (PrepareConfig); options left unset take the route's defaults."""
    f = click.option("--max-pool", type=click.Choice(MAX_POOL_CHOICES), default=None,
                     help="keep (default): max-pooling stays (compensated in the SNN: the running max of running "
                          "means); avg: replaced by average pooling (changes the ANN; reported).")(f)
    f = click.option("--keep-activation", "keep_activations", multiple=True, metavar="NAME",
                     help="Leave this activation (gelu, silu, hardswish …) as a floating-point op instead of QCFS, "
                          f"repeatable; {', '.join(DEFAULT_KEPT_ACTIVATIONS)} are always kept.")(f)
    f = click.option("--layernorm", type=click.Choice(LAYERNORM_CHOICES), default=None,
                     help="batchnorm (default; keep with --no-finetune): replace LayerNorm by BatchNorm (the MST "
                          "recipe), or keep it (compensated in floating point: exact, not spike-driven).")(f)
    f = click.option("--sites", type=click.Choice(SITE_POLICIES), default=None,
                     help="Where QCFS goes: mst (default; activations with --no-finetune): every activation plus the "
                          "Masked Spiking Transformer's sites (after residual-branch norms, on Q/K/V, scores, "
                          "attention output, branch projections), or activations (only where the ANN has them).")(f)
    f = click.option("--spike-probabilities/--no-spike-probabilities", default=None,
                     help="A QCFS (λ ≤ 1, calibrated) on every softmax output that a product reads, so attention·V "
                          "runs on spikes instead of MACs on real values (added to a prepared checkpoint too; "
                          "costs some accuracy: see the preparation record, fine-tune to win it back). Default: "
                          "on with --event-driven where the model has attention probabilities, else off.")(f)
    f = click.option("--spike-streams/--no-spike-streams", default=None,
                     help="A signed QCFS (values in [-λ, λ], calibrated) on every real value a weight layer reads "
                          "that is not a sum of spikes (a linear bottleneck's residual stream, a kept norm's "
                          "output), so the layer runs on spikes instead of MACs (added to a prepared checkpoint "
                          "too; costs some accuracy: see the preparation record). Default: on with --event-driven "
                          "where the model has such streams, else off.")(f)
    f = click.option("--stream-levels", type=click.IntRange(1), default=None,
                     help="L of the signed stream sites (default: --levels): fewer levels, fewer spikes per value.")(f)
    return click.option("--levels", type=click.IntRange(1), default=None,
                        help="QCFS levels L when preparing an ANN (default: the recipe's).")(f)


def _no_finetune_option(f):
    return click.option("--no-finetune", is_flag=True,
                        help="The ANN will not be trained: convert it by calibration alone. QCFS goes only where it "
                             "has ReLU-family activations (exact up to quantization); LayerNorm and every other "
                             "activation stay floating-point ops unless the preparation options say otherwise.")(f)


def _prepare_config(model: str, levels, sites, layernorm, keep_activations, max_pool, no_finetune=False,
                    mlp_batchnorm=False, event_driven=None, stream_levels=None, **options) -> PrepareConfig:
    """The preparation options as a config: the route's defaults (fine-tuning, or calibration alone
    with --no-finetune) with the options given on top; --event-driven asks for each of the route's
    sites (spiking attention probabilities and streams) where the model has them (None), unless
    --no-spike-probabilities or --no-spike-streams."""
    route = {kind.option: options.get(kind.option) for kind in ROUTE_SITES}
    route = {option: (None if event_driven else False) if asked is None else asked for option, asked in route.items()}
    levels = levels or get_recipe(model).levels
    base = PrepareConfig.calibration_only(levels) if no_finetune else PrepareConfig(levels)
    given = {k: v for k, v in dict(sites=sites, layernorm=layernorm, max_pool=max_pool).items() if v is not None}
    return replace(base, **given, keep_activations=tuple(dict.fromkeys(base.keep_activations + keep_activations)),
                   mlp_batchnorm=mlp_batchnorm, stream_levels=stream_levels, **route)


def _model_options(f):
    """How the model is built and its weights read: for other data, or from another implementation."""
    f = click.option("--remap-keys", type=click.Choice(["order"]), default=None,
                     help="order: the checkpoint's tensors are the model's in order under other names (weights "
                          "saved by another implementation); shapes are checked pair by pair.")(f)
    f = click.option("--class-map", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="The model's class names in output order, one per line: an ImageFolder of some of the "
                          "model's classes is labelled through it (ImageNet synset folders are recognized).")(f)
    f = click.option("--input-size", type=_Size(), default=None, metavar="C,H,W",
                     help="Build the model for C×H×W inputs (channels, and the image size of models that take "
                          "one); layers whose weights no longer fit start afresh.")(f)
    return click.option("--num-classes", type=click.IntRange(1), default=None,
                        help="Build the model with a new head for N classes (train it: --epochs).")(f)


class _Size(click.ParamType):
    name = "C,H,W"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            size = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            size = ()
        if len(size) != 3 or min(size) < 1:
            self.fail(f"{value!r} is not C,H,W (three positive integers, e.g. 1,32,32)", param, ctx)
        return size


def _model_adaptation(num_classes, input_size, class_map, remap_keys, **_other_options) -> dict:
    """``workflow.load`` arguments from the model options."""
    classes = None
    if class_map:
        text = Path(class_map).read_text()
        classes = tuple(json.loads(text)) if class_map.endswith(".json") else \
            tuple(line.strip() for line in text.splitlines() if line.strip())
    return {"adapt": {"num_classes": num_classes, "input_size": input_size, "classes": classes},
            "remap": remap_keys}


def _mask_options(f):
    f = click.option("--mask-seed", type=int, default=0, show_default=True, help="Seed of the first spike mask.")(f)
    f = click.option("--mask-blocks", type=click.IntRange(0), default=None,
                     help="Mask only the first K blocks (activations for conv); default: all.")(f)
    return click.option("--mask", "masks", multiple=True, metavar="TARGET=P",
                        help=f"Random Spike Masking at ratio P on TARGET ({', '.join(MASK_TARGETS)}), repeatable: "
                             "e.g. --mask sa=0.75 --mask mlp=0.25.")(f)


def _mask_config(masks: tuple[str, ...], mask_blocks: int | None, mask_seed: int, **_other_options) -> MaskConfig | None:
    """The ``--mask`` options as a config (None without masks)."""
    if not masks:
        return None
    ratios = {}
    for item in masks:
        target, _, ratio = item.partition("=")
        try:
            ratios[target.strip()] = float(ratio)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not TARGET=P (e.g. attn=0.75)", param_hint="--mask") from None
    return MaskConfig(ratios, blocks=mask_blocks, seed=mask_seed)


def _setup(threads: int | None, device: str) -> str:
    """Apply --threads, check --device, and join the process group under torchrun; returns the device."""
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SnnConvertError(f"--device {device} asked for, but torch sees no CUDA device; use --device cpu")
    return distributed.init(device)


def _echo(message: str) -> None:
    """Print once (rank 0 under torchrun)."""
    if distributed.is_main():
        click.echo(message)


_HYPER_PARAMETERS = [
    ("--epochs", click.IntRange(1), "Training epochs."),
    ("--batch-size", click.IntRange(1), "Images per step (split evenly across torchrun processes)."),
    ("--lr", click.FloatRange(0, min_open=True), "Peak AdamW learning rate."),
    ("--weight-decay", click.FloatRange(0), "AdamW weight decay (weights only)."),
    ("--label-smoothing", click.FloatRange(0, 1), "Cross-entropy label smoothing."),
    ("--warmup-epochs", click.FloatRange(0), "Linear warmup before the cosine decay."),
    ("--alpha", click.FloatRange(0, 1), "Distillation weight α: loss = (1-α)·CE + α·τ²·KL(teacher ‖ student)."),
    ("--temperature", click.FloatRange(0, min_open=True), "Distillation temperature τ."),
    ("--seed", int, "Seed of initialization and shuffling."),
    ("--train-samples", click.IntRange(1), "Train on this many training images (a subset fixed by --seed)."),
    ("--checkpoint-every", click.IntRange(0), "Steps between mid-epoch checkpoints (0: epoch ends only)."),
    ("--keep-checkpoints", click.IntRange(1), "Checkpoints kept while training (the newest and the ones before it: a "
     "resume takes the newest that reads); default 2."),
]


def _training_options_without_calibration(f):
    """Data, hyper-parameters (unset ones come from the recipe where it has them, else the
    defaults) and the validation / test limit."""
    f = click.option("--limit", type=click.IntRange(1), default=None,
                     help="Validate (and test) on the first N test images only.")(f)
    for name, kind, text in reversed(_HYPER_PARAMETERS):
        f = click.option(name, type=kind, default=None, help=text)(f)
    return _data_option("fashion-mnist")(f)


def _training_options(f):
    """Options of train / finetune: the above, levels, calibration, resume and the checkpoint."""
    f = _calibration_options(f)
    f = click.option("--out", callback=_claim_out, type=click.Path(dir_okay=False), required=True,
                     help="Checkpoint written atomically during training (and the resume file); "
                          "a JSON record of the run beside it.")(f)
    f = click.option("--resume/--no-resume", default=True, show_default=True,
                     help="Continue from --out when it holds an unfinished run of the same settings.")(f)
    f = _prepare_options(f)
    f = _model_options(f)
    return _training_options_without_calibration(f)


def _calibration(calib_samples, calib_method, percentile, granularity, **_other_options) -> CalibrationConfig:
    """The calibration options (``_calibration_options``) as a config."""
    return CalibrationConfig(calib_method, percentile, granularity, calib_samples)


def _train_config(base: dict, options: dict) -> TrainConfig:
    """``base`` TrainConfig fields, overridden by the hyper-parameters given on the command line."""
    given = {name.lstrip("-").replace("-", "_"): options[name.lstrip("-").replace("-", "_")]
             for name, _, _ in _HYPER_PARAMETERS}
    given["distill_alpha"] = given.pop("alpha")
    return TrainConfig(**{**base, **{k: v for k, v in given.items() if v is not None}})


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
@click.argument("model", required=False)
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run as a spec file says instead of MODEL and the options: a run spec (YAML or JSON: model, "
                   "data, prepare, calibration, neuron, simulation …) or the report.json of an earlier run, which "
                   "stores the spec it ran (only --out, --device, --threads and --quiet go with it).")
@click.option("--timesteps", "-T", type=click.IntRange(1), default=None,
              help="Simulation steps T (default: the recipe's). Accuracy is reported at every t ≤ T.")
@_data_option()
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Weights: an snnconvert checkpoint (ann or prepared) or a plain/timm state dict. "
                   "Default: the checkpoint shipped for the recipe, else timm's pretrained weights.")
@_calibration_options
@_prepare_options
@_no_finetune_option
@_model_options
@click.option("--epochs", type=click.IntRange(0), default=None,
              help="Fine-tune the prepared model this many epochs on the training split before converting. "
                   "Default: an ANN with real weights is fine-tuned with the recipe's settings, distilling from "
                   "the ANN (`zoo show MODEL`), unless --no-finetune; a prepared model or random weights are not "
                   "trained (0).")
@click.option("--mode", "modes", type=click.Choice(MODES), multiple=True,
              help="Attention mode(s), repeatable: compensated (exact in expectation, default) and/or "
                   "mst (the MST reference code's per-step products).")
@_neuron_options
@_correction_options
@_mask_options
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N test images.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Test images simulated together.")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True,
              help="With no checkpoint: use the shipped checkpoint or timm's pretrained weights "
                   "(--no-pretrained: random initialization, e.g. with --epochs).")
@click.option("--out", callback=_claim_out, type=click.Path(file_okay=False), default="runs/latest", show_default=True,
              help="Folder for report.json, report.md, accuracy_vs_t.png (and prepared.pt).")
@_simulation_options
@_energy_options
@_common
def run_cmd(model, config, timesteps, data, checkpoint, calib_samples, calib_method, percentile, granularity, epochs,
            modes, masks, mask_blocks, mask_seed, limit, batch_size, pretrained, out, e_ac, e_mac, device, threads,
            quiet, **options):
    """Run the whole pipeline on MODEL (a zoo name such as swin_nano, vit_nano, swin_t, or a timm
    architecture): load weights, prepare (LayerNorm→BatchNorm, activations→QCFS) and calibrate if
    needed, optionally train (with --mask: the masked model) or, with --no-finetune, convert by
    calibration alone, convert to spiking neurons (optionally corrected layer by layer), simulate T
    steps and write a report."""
    device = _setup(threads, device)
    if config is not None:
        _only_with_config(model)
        _run(RunSpec.read(config), out, device, quiet)
        return
    if model is None:
        raise click.UsageError("give a MODEL (a zoo name such as swin_nano, or a timm architecture) or --config FILE")
    if options["no_finetune"] and epochs:
        raise click.BadParameter("--no-finetune converts without training: leave out --epochs", param_hint="--epochs")
    loading = _model_adaptation(**options)
    spec = RunSpec(ModelSource(model, checkpoint, pretrained, **loading["adapt"], remap=loading["remap"]),
                   DataSpec(data, limit, batch_size), timesteps, _prepare_config(model, **options),
                   _calibration(calib_samples, calib_method, percentile, granularity), _neuron_config(**options),
                   0 if options["no_finetune"] else epochs, tuple(modes) or ("compensated",),
                   _mask_config(masks, mask_blocks, mask_seed), _correction(**options), _simulation(**options),
                   EnergyCosts(e_ac, e_mac))
    _run(spec, out, device, quiet)


def _only_with_config(model: str | None) -> None:
    """``--config`` runs its spec as it is: MODEL and the pipeline's options given beside it are refused."""
    context = click.get_current_context()
    given = [f"--{name.replace('_', '-')}" for name in context.params
             if name not in ("config", "out", "device", "threads", "quiet", "model")
             and context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if model is not None or given:
        raise click.UsageError(f"--config runs the spec as it stands: drop {', '.join(given or ['MODEL'])} (or edit "
                               "the spec)")


def _run(spec: RunSpec, out: str, device: str, quiet: bool) -> None:
    report = workflow.run(spec, out, device, progress=not quiet and distributed.is_main())
    if distributed.is_main():
        _print_summary(report, out)


def _print_loading(loaded) -> None:
    """What loading the weights did beyond a plain load (remapped names, layers started afresh)."""
    loading = loaded.metadata.get("loading", {})
    if loading.get("remapped"):
        _echo(f"weights remapped by order: {len(loading['remapped'])} tensors renamed "
              f"({'; '.join(loading['remapped'][:3])}{' …' if len(loading['remapped']) > 3 else ''}), shapes checked")
    if loading.get("reinitialized"):
        _echo(f"started afresh (they do not fit the adapted model): {', '.join(loading['reinitialized'])}")


def _print_preparation(record: dict) -> None:
    """What prepare changed and the accuracy on the calibration images after each change."""
    for line in record["changes"]:
        _echo(f"  {line}")
    if "calibration_images" not in record:  # nothing was changed
        return
    effects = ", ".join(f"{label} {acc:.2f}" for label, acc in record["accuracy_on_calibration_images"].items())
    _echo(f"accuracy on {record['calibration_images']} calibration images (%): {effects}")


def _print_correction(mode: str, record: dict) -> None:
    """One line on an SNN correction: the mean |error| over the sites before and after it."""
    t = record["timesteps"]
    mean = {when: sum(abs(site[when][t]["mean"]) for site in record["sites"]) / max(1, len(record["sites"]))
            for when in ("errors_before", "errors_after")}
    _echo(f"{record['correction']['method']} correction ({mode}) for T={t} on {record['images']} images: mean |error| "
          f"of the {len(record['sites'])} layers {mean['errors_before']:.4g} → {mean['errors_after']:.4g} "
          f"(against the {record['reference']} reference; per layer in the report)")


def _print_exit(sim: dict, timesteps: int, indent: str = "") -> None:
    """The early exit a simulation ran with (its mean steps), and the route's notes."""
    if sim.get("exit_rule"):
        _echo(f"{indent}early exit ({sim['exit_rule']}): {sim['mean_steps']:.2f} steps per image on average of "
              f"T={timesteps}")
    for note in sim.get("notes", ()):
        _echo(f"{indent}not applied: {note}")


def _print_summary(report: dict, out: str) -> None:
    if report.get("preparation"):
        _print_preparation(report["preparation"])
    for mode, record in (report.get("snn_calibration") or {}).items():
        _print_correction(mode, record)
    click.echo(f"\n{report['model']} ({report['timm_name']}), weights: {report['weights']}"
               + (f", {report['route']}" if report.get("route") else ""))
    samples = next(iter(report["simulations"].values()))["samples"]
    click.echo(f"data: {report['data']}, {samples} test images, L = {report['levels']}, neuron: {report['neuron']}")
    for label, acc in report["ann_accuracy"].items():
        click.echo(f"  {label:<24} {acc:6.2f} %")
    for mode, sim in report["simulations"].items():
        cells = ", ".join(f"T={t}: {a:.2f}" for t, a in sim["accuracy_at"].items())
        click.echo(f"  SNN {mode:<20} {cells}")
        if sim.get("agreement_at"):
            cells = ", ".join(f"T={t}: {a:.2f}" for t, a in sim["agreement_at"].items())
            click.echo(f"  agreement with the {sim['agreement_with']} (%): {cells}")
        _print_exit(sim, sim["timesteps"], "  ")
    for mode, sim in report["simulations"].items():
        click.echo(f"energy ({mode}, {sim.get('energy_accounting', 'dense')}, per image over T={sim['timesteps']}): "
                   f"{sim['energy_uj_per_sample']:.3f} µJ = "
                   f"{sim['sops_per_sample']:.4g} SOPs + {sim['adds_per_sample']:.4g} additions + "
                   f"{sim['macs_per_sample']:.4g} MACs + {sim['float_ops_per_sample']:.4g} float ops; "
                   f"ANN {report['ann_energy_uj_per_sample']:.3f} µJ")
        for line in convention_table(sim["energy_conventions"]) if sim.get("energy_conventions") else ():
            click.echo(f"  {line}")
    for mode, sim in report["simulations"].items():
        kinds = ", ".join(sorted({op["kind"] for op in sim["float_operations"]})) or "none"
        click.echo(f"floating-point ops ({mode}): {len(sim['float_operations'])} ({kinds})")
    click.echo(f"report: {Path(out) / 'report.md'}  ({report['seconds']} s)")


@main.command("prepare")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="ANN weights (state dict).")
@_prepare_options
@_no_finetune_option
@_model_options
@click.option("--pretrained/--no-pretrained", default=True, show_default=True,
              help="With no checkpoint, fetch timm's pretrained weights (else random initialization).")
@click.option("--out", callback=_claim_out, type=click.Path(dir_okay=False), required=True, help="Prepared checkpoint to write.")
@_common
def prepare_cmd(model, checkpoint, pretrained, out, device, threads, quiet, **prepare_options):
    """Trace MODEL and rewrite it for conversion (LayerNorm→BatchNorm, activations→QCFS, the MST
    sites, no dropout) and save it uncalibrated. Prints every change it made; lists every op it
    cannot convert."""
    device = _setup(threads, device)
    loaded = workflow.load(model, checkpoint, pretrained, shipped=False, **_model_adaptation(**prepare_options))
    _print_loading(loaded)
    if loaded.stage == "prepared":
        raise SnnConvertError(f"{checkpoint} is already prepared: calibrate, train or convert it instead")
    config = _prepare_config(model, **prepare_options)
    prepared, report = prepare_with_report(loaded.model, loaded.recipe.example_batch(), config)
    workflow.save_prepared(out, prepared, loaded.recipe, config)
    for line in report.lines():
        click.echo(f"  {line}")
    click.echo(f"prepared {model}: {len(qcfs_modules(prepared))} QCFS sites, L = {config.levels} → {out} "
               "(calibrate or train it next)")


def _train_summary(record: dict, verb: str, model: str, out: str) -> None:
    if record["resumed_from"]:
        _echo(f"resumed from epoch {record['resumed_from']['epoch']}, batch {record['resumed_from']['batch']}")
    last = record["history"][-1] if record["history"] else {}
    _echo(json.dumps(last))
    _echo(f"{verb} {model} for {record['config']['epochs']} epochs ({record['seconds']} s of training, "
          f"{record['processes']} process(es)) → {out} (record: {Path(out).with_suffix('.json')})")


@main.command("train")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Start from these weights (ANN or prepared); default: the recipe's ANN, randomly initialized.")
@click.option("--ann", is_flag=True, help="Train the original ANN (LayerNorm, GELU/ReLU) without preparing it: "
              "the stand-in for pretrained weights that `finetune` then converts.")
@_training_options
@_common
def train_cmd(model, checkpoint, ann, **options):
    """Train MODEL on DATA's training split from scratch or from a checkpoint: the prepared (QCFS)
    model (an ANN is prepared first, BatchNorm statistics and thresholds initialized from data), or
    with --ann the original ANN. Runs under torchrun too (one process per core or GPU)."""
    device = _setup(options["threads"], options["device"])
    config = _train_config({}, options)
    torch.manual_seed(config.seed)
    loaded = workflow.load(model, checkpoint, pretrained=False, shipped=False, **_model_adaptation(**options))
    _print_loading(loaded)
    progress = not options["quiet"] and distributed.is_main()
    if ann:
        if loaded.stage != "ann":
            raise SnnConvertError(f"--ann trains an unprepared ANN, but {checkpoint} is {loaded.stage}")
        record = workflow.train(loaded.model, loaded.recipe, None, options["data"], config, options["out"], device,
                                progress, options["resume"], options["limit"])
    else:
        _, _, record = workflow.finetune(loaded, options["data"], config, _calibration(**options), options["out"],
                                         device, progress, _prepare_config(model, **options),
                                         resume=options["resume"], val_samples=options["limit"])
    _train_summary(record, "trained", model, options["out"])


@main.command("finetune")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="The trained ANN (teacher and starting point); default: timm's pretrained weights.")
@click.option("--mlp-batchnorm", is_flag=True, help="Add a BatchNorm after each MLP Linear (MST's variant; "
              "started as the identity, folded away at conversion).")
@_mask_options
@_training_options
@_common
def finetune_cmd(model, checkpoint, **options):
    """Prepare a trained ANN MODEL (LayerNorm→BatchNorm, GELU/ReLU→QCFS), calibrate it and fine-tune
    it with distillation from the original ANN (the MST recipe). With --mask the student gets Random
    Spike Masks, with --spike-probabilities / --spike-streams spiking attention probabilities / streams; starting from a prepared
    checkpoint, the model as it came is the teacher (MST §4.3).
    Unset hyper-parameters come from the recipe (`snnconvert zoo show MODEL`). Runs under torchrun
    too (one process per core or GPU)."""
    device = _setup(options["threads"], options["device"])
    masks = _mask_config(**options)
    loaded = workflow.load(model, checkpoint, pretrained=True, shipped=False, **_model_adaptation(**options))
    _print_loading(loaded)
    if loaded.stage != "ann" and masks is None and not any(options[kind.option] for kind in ROUTE_SITES):
        raise SnnConvertError(f"finetune starts from a trained ANN, but {loaded.source} is {loaded.stage}: pass the "
                              "ANN's checkpoint, add --mask, --spike-probabilities or --spike-streams to fine-tune a "
                              "changed copy against it, or `snnconvert train MODEL --checkpoint FILE` to keep "
                              "training it")
    config = _train_config(get_recipe(model).finetune_settings, options)
    torch.manual_seed(config.seed)
    _, _, record = workflow.finetune(loaded, options["data"], config, _calibration(**options), options["out"], device,
                                     not options["quiet"] and distributed.is_main(), _prepare_config(model, **options),
                                     options["resume"], options["limit"], masks)
    if record["teacher_accuracy"] is not None:
        _echo(f"teacher ({record['teacher']}) {record['teacher_accuracy']:.2f} %, student before fine-tuning "
              f"{record['accuracy_before_training']:.2f} %")
    _train_summary(record, "fine-tuned", model, options["out"])


@main.command("calibrate")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Prepared or ANN weights (default: the recipe's shipped checkpoint or timm's).")
@_data_option()
@_calibration_options
@click.option("--batchnorm/--no-batchnorm", default=False, show_default=True,
              help="Also re-estimate every BatchNorm's statistics (an ANN being prepared always gets the "
                   "statistics of the BatchNorms that replace its LayerNorms; its own keep theirs).")
@_prepare_options
@_no_finetune_option
@_model_options
@click.option("--timesteps", "-T", type=click.IntRange(1), default=None,
              help="T the SNN is corrected for (--correct) and its errors measured at (--report); default: the "
                   "recipe's.")
@_neuron_options
@_correction_options
@click.option("--reference", type=click.Choice(REFERENCES), default=None,
              help="What the SNN is compared with: ann (each site as the ReLU-family activation it replaced; the "
                   "default for an ANN checkpoint) or qcfs (the QCFS ANN; the default for a prepared one).")
@click.option("--report", "show_report", is_flag=True,
              help="Print per layer: λ, cap, correction μ and the conversion error ŷ_t − y (mean / RMS relative "
                   "to y's) at --error-at, before → after the correction.")
@click.option("--error-at", type=click.IntRange(1), multiple=True,
              help="A step t for the --report errors, repeatable (default: T).")
@click.option("--out", callback=_claim_out, type=click.Path(dir_okay=False), required=True,
              help="Calibrated checkpoint: prepared, or with --correct converted (the corrections belong to the SNN).")
@_common
def calibrate_cmd(model, checkpoint, data, calib_samples, calib_method, percentile, granularity, batchnorm, timesteps,
                  reference, show_report, error_at, out, device, threads, quiet, **options):
    """Set QCFS thresholds λ (= IF thresholds θ) of MODEL from N sample images: max, a percentile
    (99.9, 99.99 …) or the MSE-optimal value, per layer or per channel (capped where the activation
    is, ReLU6 at 6). An ANN is prepared first; what each change costs on the calibration images is
    printed. With --correct the model is also converted and each layer's mean conversion error at T
    removed, layer by layer, by a bias or the initial potential (Li et al. 2021)."""
    device = _setup(threads, device)
    loaded = workflow.load(model, checkpoint, **_model_adaptation(**options))
    _print_loading(loaded)
    calibration = _calibration(calib_samples, calib_method, percentile, granularity)
    prepared, config, record = workflow.ensure_prepared(loaded, data, calibration, device, not quiet,
                                                        _prepare_config(model, **options))
    if record is not None:
        _print_preparation(record)
    loader = workflow.calibration_loader(loaded.recipe, data)
    if loaded.stage == "prepared":
        if batchnorm:
            calibrate_batchnorm(prepared, loader, calib_samples, device, not quiet)
        calibrate_thresholds(prepared, loader, calibration, device, not quiet)
    correction, neuron = _correction(**options), _neuron_config(**options)
    snn_record = None
    if correction is not None or show_report:
        timesteps = timesteps or loaded.recipe.timesteps
        snn = convert(prepared, "compensated", neuron)
        images, _ = workflow.calibration_batch(loader, calib_samples)
        snn_record = workflow.calibrate_snn(snn, prepared, images.to(device), timesteps, correction,
                                            list(error_at) or [timesteps] if show_report else [],
                                            reference or ("ann" if loaded.stage == "ann" else "qcfs"), not quiet)
        if show_report:
            _echo(f"{neuron.describe()}, compensated mode")
            for line in calibration_table(snn_record):
                _echo(line)
    what = f"{calib_method}, {granularity}-wise, {calib_samples} samples"
    if correction is not None:
        workflow.save_converted(out, snn, loaded.recipe, config, "compensated", neuron, snn_record)
        _echo(f"calibrated ({what}), converted ({neuron.describe()}) and {correction.method}-corrected for "
              f"T={timesteps} → {out} (a converted checkpoint: `snnconvert simulate {model} --checkpoint {out}`)")
    else:
        workflow.save_prepared(out, prepared, loaded.recipe, config)
        _echo(f"calibrated {model} ({what}) → {out}")


@main.command("convert")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Prepared checkpoint (default: the recipe's shipped one).")
@click.option("--mode", type=click.Choice(MODES), default="compensated", show_default=True,
              help="compensated: spike-correct products and softmax; mst: per-step ops (MST reference).")
@_neuron_options
@click.option("--out", callback=_claim_out, type=click.Path(dir_okay=False), required=True, help="Converted checkpoint to write.")
@_common
def convert_cmd(model, checkpoint, mode, out, device, threads, quiet, **options):
    """Convert a prepared MODEL to an SNN (IF neurons, folded BatchNorm, spike-correct attention)
    and list the operations that still run in floating point."""
    device = _setup(threads, device)
    loaded = workflow.load(model, checkpoint)
    if loaded.stage != "prepared":
        raise SnnConvertError("convert needs a prepared checkpoint: run `snnconvert calibrate` or `train` first")
    neuron = _neuron_config(**options)
    snn = convert(loaded.model, mode, neuron)
    workflow.save_converted(out, snn, loaded.recipe, loaded.prepare_config, mode, neuron)
    ops = float_operations(snn)
    click.echo(f"converted {model} ({mode}, {neuron.describe()}) → {out}")
    click.echo(f"{len(ops)} operations run in floating point:")
    for op in ops:
        click.echo(f"  {op.name} ({op.kind}): {op.why}")


@main.command("simulate")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Converted or prepared checkpoint (default: the recipe's shipped one).")
@click.option("--timesteps", "-T", type=click.IntRange(1), default=None, help="Steps T (default: the recipe's).")
@_data_option()
@click.option("--mode", type=click.Choice(MODES), default="compensated", show_default=True,
              help="Attention mode when converting a prepared checkpoint (a converted one keeps its own).")
@_neuron_options
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="torch (default), or onnxruntime: the SNN exported as one ONNX step and run by onnxruntime "
                   "on the CPU (the default for a MODEL.onnx file written by `snnconvert export`).")
@click.option("--exit", "exit_rule", default=None, metavar="RULE",
              help="Stop each image once RULE holds and drop it from the batch (its later steps cost nothing): "
                   "quiet (count coding: no neuron fired for a step, so the output is final: exact), C (the "
                   "softmax of the output's estimate reaches confidence C, e.g. 0.99) or stable:K (the "
                   "prediction unchanged for K steps after the output's first event). Reports the mean steps run.")
@click.option("--early-exit", "exit_curve", default=None, metavar="RULES",
              help="Comma-separated rules (quiet,0.5,0.9,0.99,stable:4): from one pass of T steps, what each would give "
                   "(accuracy, mean steps, against fixed T); with --out also early_exit.json/.md/.png.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N test images.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True, help="Images per batch.")
@click.option("--out", callback=_claim_out, type=click.Path(file_okay=False), default=None, help="Write report.json/.md/.png here.")
@_simulation_options
@_energy_options
@_common
def simulate_cmd(model, checkpoint, timesteps, data, mode, backend, exit_rule, exit_curve, limit, batch_size, out,
                 e_ac, e_mac, device, threads, quiet, **options):
    """Simulate a converted MODEL (a recipe name, or a MODEL.onnx step from `snnconvert export`) for T
    steps on DATA's test split; print accuracy at t = 4, 8, …, T (all t in the report) and spikes
    per sample."""
    device = _setup(threads, device)
    exported = model.endswith(".onnx")
    backend = backend or ("onnxruntime" if exported else "torch")
    if exported and backend == "torch":
        raise click.BadParameter(f"{model} is an ONNX step: it runs with --backend onnxruntime", param_hint="--backend")
    simulation = _simulation(**options)
    exits = workflow.Exits(_exit_rules(exit_rule, "--exit")[0] if exit_rule else None,
                           tuple(_exit_rules(exit_curve, "--early-exit")) if exit_curve else ())
    if exits.rule is not None and exits.curve:
        raise click.BadParameter("--early-exit runs every image T steps to evaluate its rules offline; --exit stops "
                                 "them: pick one", param_hint="--exit")
    if backend == "onnxruntime":
        torch_only = {"--device": device != "cpu", "--chunk": simulation.chunk is not None,
                      "--precision": simulation.precision != "fp32", "--compile": bool(simulation.compile),
                      "--event-driven": bool(simulation.event_driven)}
        given = [name for name, on in torch_only.items() if on]
        if given:
            raise click.BadParameter(f"{', '.join(given)} set how PyTorch runs or what it watches; the onnxruntime backend runs the "
                                     "exported float32 step on the CPU, one step per call: drop them",
                                     param_hint=given[0])
    progress_file = Path(out) / "simulation.progress.pt" if out else None
    costs = EnergyCosts(e_ac, e_mac)
    with tempfile.TemporaryDirectory() as scratch:
        if backend == "onnxruntime":
            path = model
            if not exported:
                path = str(Path(scratch) / f"{model}.onnx")
                workflow.export(model, checkpoint, "snn", path, mode=mode, neuron=_neuron_config(**options),
                                timesteps=timesteps)
            sim, recipe = workflow.simulate_exported(path, data, timesteps, batch_size, limit, not quiet,
                                                     progress_file, costs, simulation.metrics, exits)
            metadata = read_metadata(path)
            weights, neuron, mode, timesteps = path, metadata["neuron"], metadata["attention"], sim["timesteps"]
        else:
            weights = checkpoint or shipped_checkpoint(get_recipe(model))
            if weights is None:
                raise SnnConvertError(f"{model} has no shipped checkpoint: pass --checkpoint FILE")
            loaded = workflow.load_snn(model, str(weights), mode, _neuron_config(**options))
            recipe, neuron, mode = loaded.recipe, loaded.neuron, loaded.mode
            timesteps = timesteps or recipe.timesteps
            test = workflow.eval_loader(recipe, data, batch_size, limit)
            sim = workflow.simulate_and_summarize(loaded.snn, recipe, test, timesteps, None, device, not quiet,
                                                  progress_file, costs, options=simulation, exits=exits)
    if sim["resumed_from_batch"]:
        _echo(f"resumed after {sim['resumed_from_batch']} batches")
    for t, acc in sim["accuracy_at"].items():
        _echo(f"T={t:<5} accuracy {acc:6.2f} %")
    _print_exit(sim, timesteps)
    _echo(f"spikes per sample: {sim['spikes_per_sample']:.0f} ({sim['samples']} samples, {sim['seconds']:.1f} s, "
          f"{backend}); energy per sample: {sim['energy_uj_per_sample']:.3f} µJ ({sim['energy_accounting']})")
    for line in convention_table(sim["energy_conventions"]) if sim.get("energy_conventions") else ():
        _echo(line)
    header = workflow.report_header(recipe, str(weights), data, None, timesteps, neuron)
    if exits.curve:
        exit_report = {**header, "samples": sim["samples"], "accuracy_per_step": sim["accuracy_per_step"],
                       "rows": sim["early_exit"]}
        for line in early_exit_table(exit_report):
            _echo(line)
    if out:
        report = {**header, "backend": backend, "ann_accuracy": {}, "energy_costs_pj": asdict(costs),
                  "simulations": {mode: sim}}
        workflow.finish_report(report, Path(out), [progress_file])
        if exits.curve and distributed.is_main():
            write_early_exit_report(exit_report, out)
        _echo(f"report: {Path(out) / 'report.md'}")


@main.command("export")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Converted, prepared, directly trained or ANN checkpoint (default: the recipe's shipped one, "
                   "else timm's pretrained weights for --what ann).")
@click.option("--what", type=click.Choice(["snn", "ann"]), required=True,
              help="snn: one time step of the SNN, its state (membranes, spike counts, running totals, the step "
                   "counter) as named inputs and outputs; ann: the ANN the checkpoint holds (the QCFS model of a "
                   "prepared checkpoint, else the original) as a plain model.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "nir"]), default="onnx", show_default=True,
              help=f"onnx (opset {OPSET}, dynamic batch), or nir where every op maps exactly (refused otherwise, "
                   "with the reason).")
@click.option("--out", callback=_claim_out, type=click.Path(dir_okay=False), required=True, help="File to write.")
@click.option("--timesteps", "-T", type=click.IntRange(1), default=None,
              help="The default T recorded in the metadata (default: the recipe's).")
@click.option("--mode", type=click.Choice(MODES), default="compensated", show_default=True,
              help="Attention mode when converting a prepared checkpoint (a converted one keeps its own).")
@_neuron_options
@_common
def export_cmd(model, checkpoint, what, fmt, out, timesteps, mode, device, threads, quiet, **options):
    """Export MODEL to ONNX: its SNN as one stateless time step `(x, t, state…) → (y, t+1, state′…)`
    (run it with `snnconvert simulate FILE.onnx`), or its ANN. The metadata says what it is, its
    input, classes, neurons, T and how to build the initial state."""
    _setup(threads, device)
    written = workflow.export(model, checkpoint, what, out, fmt, mode, _neuron_config(**options), timesteps)
    click.echo(f"exported the {written['what']} of {model} → {written['out']} (ONNX opset {written['opset']}, "
               f"{written['inputs']} inputs, {written['outputs']} outputs, {written['bytes'] / 1e6:.2f} MB)")


def _exit_rules(text: str, option: str) -> list[ExitRule]:
    """``quiet,0.9,stable:4`` → exit rules."""
    rules = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        kind, value = ("stable", item.removeprefix("stable:")) if item.startswith("stable:") else ("confidence", item)
        if item == "quiet":
            kind, value = "quiet", "0"
        try:
            rules.append(ExitRule(kind, float(value)))
        except (ValueError, SnnConvertError) as e:
            raise click.BadParameter(f"{item!r}: {e}; a rule is quiet, a confidence C in (0, 1] or stable:K "
                                     "(K >= 1 steps)", param_hint=option) from e
    return rules


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated numbers such as 0,0.25,0.5, got {text!r}") from e


@main.command("mask-sweep")
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Prepared checkpoint (default: the recipe's shipped one).")
@click.option("--ratios", default="0,0.25,0.5,0.75,0.9", show_default=True, help="Masking ratios p, comma-separated.")
@click.option("--targets", default="attn,mlp", show_default=True,
              help="Comma-separated sites: q, k, attn (scores), mlp (hidden layer), conv (CNN activations).")
@click.option("--block-ratio", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Also mask only the first k blocks at this ratio, for every k (the MST paper's Fig. 6).")
@click.option("--timesteps", "-T", type=click.IntRange(1), default=None, help="Steps T (default: the recipe's).")
@_data_option()
@_neuron_options
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N test images.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True, help="Images per batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first mask.")
@click.option("--finetune-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Also fine-tune every masked model this many epochs on DATA's training split, distilling from "
                   "the unmasked model, and simulate it again (0: no fine-tuning).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Peak learning rate of that fine-tuning (default: the recipe's).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=None,
              help="Distillation weight α of that fine-tuning (default: the recipe's).")
@click.option("--warmup-epochs", type=click.FloatRange(0), default=None,
              help="Warmup of that fine-tuning (default: the recipe's).")
@click.option("--out", callback=_claim_out, type=click.Path(file_okay=False), default="runs/mask-sweep", show_default=True,
              help="Folder for sweep.json, sweep.md and sweep.png (and fine-tuned checkpoints); rerun to resume.")
@_event_driven_option
@_energy_options
@_common
def mask_sweep_cmd(model, checkpoint, ratios, targets, block_ratio, timesteps, data, limit, batch_size, seed,
                   finetune_epochs, lr, alpha, warmup_epochs, out, e_ac, e_mac, device, threads, quiet, **options):
    """Random Spike Masking sweep of a prepared MODEL: accuracy at T, spikes, power (MST's model:
    total spikes, relative to the unmasked SNN) and energy for every target and ratio, optionally
    after fine-tuning each masked model against the unmasked one (--finetune-epochs)."""
    device = _setup(threads, device)
    targets = [t.strip() for t in targets.split(",") if t.strip()]
    MaskConfig({t: 0.0 for t in targets})  # names the unknown targets
    finetune = None
    if finetune_epochs:
        given = {"epochs": finetune_epochs, "lr": lr, "distill_alpha": alpha, "warmup_epochs": warmup_epochs}
        finetune = TrainConfig(**{**get_recipe(model).finetune_settings,
                                  **{k: v for k, v in given.items() if v is not None}})
    report = workflow.mask_sweep(model, checkpoint, data, timesteps, targets, _floats(ratios), block_ratio,
                                 _neuron_config(**options),
                                 limit, batch_size, out, device, not quiet and distributed.is_main(), seed,
                                 EnergyCosts(e_ac, e_mac), finetune, SimulationOptions(event_driven=options["event_driven"]))
    for row in report["rows"]:
        _echo(f"{row['target']:<6} p={row['ratio']:.2f} blocks={row['blocks']!s:<4} "
              f"{'fine-tuned' if row['fine_tuned'] else 'as masked':<10} accuracy {row['accuracy']:6.2f} % "
              f"({row['accuracy_change']:+.2f})  power {row['power_ratio']:.3f}  energy {row['energy_ratio']:.3f}")
    _echo(f"report: {Path(out) / 'sweep.md'}")


@main.command("direct-train")
@click.argument("model")
@click.option("--timesteps", "-T", type=click.IntRange(1), default=None, help="Time steps T (default: the recipe's).")
@click.option("--neuron", type=click.Choice(list(NODES)), default=None,
              help="Trainable neuron: if, lif, plif (learnable τ) or klif (default: the recipe's).")
@click.option("--surrogate", type=click.Choice(list(SURROGATES)), default=None,
              help="Surrogate gradient: sigmoid (α 4), atan (α 2), softsign (α 2) or triangle (α 1).")
@click.option("--encoding", type=click.Choice(list(ENCODERS)), default=None,
              help="Input encoding: direct (real image every step), rate, latency or phase.")
@click.option("--tau", type=click.FloatRange(1, min_open=True), default=None, help="Membrane time constant τ.")
@click.option("--reset", type=click.Choice(["hard", "soft"]), default=None, help="Reset to 0, or subtract V_th.")
@click.option("--dynamic-timesteps", is_flag=True,
              help="Learn each spiking layer's time steps (DTSS): a mask per layer keeps its first T_l of the "
                   "T_max steps; the simulation stops computing a layer after them.")
@click.option("--max-timesteps", type=click.IntRange(1), default=None,
              help="T_max with --dynamic-timesteps (the same as --timesteps).")
@click.option("--initial-timesteps", type=click.IntRange(1), default=None,
              help="T_init, the steps every layer starts with (default: half of T_max, rounded up).")
@click.option("--mask-loss", default=None, metavar="GROUPS",
              help="Comma-separated layer groups whose steps the mask loss pulls down: sps, qkv, attn, mlp, or "
                   "'none' (default: qkv,mlp).")
@click.option("--lambda-m", type=click.FloatRange(0), default=None, help="λ_m, the mask loss's weight (default 1e-6).")
@click.option("--mask-lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Peak learning rate of the masks' parameters (default: --lr). A layer gains or loses a step when "
                   "its score moves by about 0.5, and AdamW moves it about one learning rate per step.")
@_training_options_without_calibration
@click.option("--out", callback=_claim_out, type=click.Path(file_okay=False), default="runs/direct", show_default=True,
              help="Folder for direct.pt (the resumable checkpoint, JSON record beside it) and the report.")
@click.option("--sim-batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Test images simulated together.")
@_energy_options
@_common
def direct_train_cmd(model, timesteps, neuron, surrogate, encoding, tau, reset, dynamic_timesteps, max_timesteps,
                     initial_timesteps, mask_loss, lambda_m, mask_lr, out, sim_batch_size, e_ac, e_mac, **options):
    """Train a spiking MODEL directly (surrogate gradients, backpropagation through T steps), then
    simulate it on DATA's test split and report it like a converted model (accuracy per step,
    spikes, spiking metrics, energy). Unset settings come from the recipe (`zoo show MODEL`).
    With --dynamic-timesteps each spiking layer learns how many of the T_max steps it sends."""
    device = _setup(options["threads"], options["device"])
    recipe = get_recipe(model)
    dynamic = {"--max-timesteps": max_timesteps, "--initial-timesteps": initial_timesteps, "--mask-loss": mask_loss,
               "--lambda-m": lambda_m, "--mask-lr": mask_lr}
    if not dynamic_timesteps and any(v is not None for v in dynamic.values()):
        given = ", ".join(k for k, v in dynamic.items() if v is not None)
        raise SnnConvertError(f"{given} need dynamic time steps: add --dynamic-timesteps")
    if max_timesteps is not None and timesteps is not None and max_timesteps != timesteps:
        raise SnnConvertError(f"--timesteps {timesteps} and --max-timesteps {max_timesteps} disagree: give one")
    groups = None if mask_loss is None else tuple(g for g in mask_loss.split(",") if g and g != "none")
    config = direct_config(recipe, timesteps=max_timesteps or timesteps, neuron=neuron, surrogate=surrogate,
                           encoding=encoding, tau=tau, reset=reset, dynamic_timesteps=dynamic_timesteps or None,
                           initial_timesteps=initial_timesteps, mask_loss=groups, lambda_m=lambda_m, mask_lr=mask_lr)
    train_config = _train_config(recipe.direct.get("train", {}), options)
    if train_config.distill_alpha > 0:
        raise SnnConvertError("direct training has no teacher to distill from: leave --alpha at 0")
    report = workflow.direct_train(model, options["data"], config, train_config, out, options["limit"],
                                   sim_batch_size, device, not options["quiet"] and distributed.is_main(),
                                   EnergyCosts(e_ac, e_mac))
    if distributed.is_main():
        sim = report["simulations"]["direct"]
        _train_summary(report["training"], "trained", model, str(Path(out) / "direct.pt"))
        click.echo(f"{config.describe()}: " + ", ".join(f"T={t}: {a:.2f}" for t, a in sim["accuracy_at"].items())
                   + f" % ({sim['samples']} test images)")
        if config.dynamic_timesteps:
            steps = report["dynamic_timesteps"]
            click.echo(f"time steps per layer (of {config.timesteps}): T_avg = {steps['average']:.2f}; "
                       + ", ".join(f"{g} {s:.2f}" for g, s in steps["average_by_group"].items()))
        click.echo(f"spikes per image {sim['spikes_per_sample']:.4g}, energy {sim['energy_uj_per_sample']:.3f} µJ; "
                   f"report: {Path(out) / 'report.md'}")


@main.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", callback=_claim_out, type=click.Path(file_okay=False), default="runs/compare", show_default=True,
              help="Folder for comparison.json, comparison.md and comparison.png.")
def compare_cmd(reports, out):
    """Put simulation reports side by side (REPORTS: report.json files or their folders, from
    `snnconvert MODEL`, `simulate --out` or `direct-train`): accuracy, T, spikes, SOPs, MACs,
    energy and training time, on the same test set."""
    result = comparison(list(reports))
    write_comparison(result, out)
    for r in result["rows"]:
        click.echo(f"{r['model']:<16} {r['method']:<10} T={r['timesteps']:<4} accuracy {r['accuracy']:6.2f} %  "
                   f"spikes {r['spikes_per_sample']:.4g}  energy {r['energy_uj_per_sample']:.3f} µJ")
    click.echo(f"report: {Path(out) / 'comparison.md'}")


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
    """Show one recipe in full (JSON), with its fine-tune settings and the record of its shipped checkpoint."""
    r = get_recipe(name)
    path = shipped_checkpoint(r)
    record = path.with_suffix(".json") if path is not None else None
    click.echo(json.dumps({**r.to_dict(), "finetune_settings": r.finetune_settings,
                           "shipped_checkpoint": str(path or ""),
                           "shipped_record": json.loads(record.read_text()) if record and record.exists() else None},
                          indent=2))


@zoo.command("build")
@click.argument("name")
@_data_option(None, "Dataset (default: the build plan's). " + DATA_HELP)
@click.option("--out", callback=_claim_out, type=click.Path(file_okay=False), required=True,
              help="Folder for the checkpoint(s) and their JSON records; rerun to resume.")
@_common
def zoo_build(name, data, out, device, threads, quiet) -> None:
    """Reproduce NAME's shipped checkpoint from scratch as its build plan says (`zoo show NAME`):
    train the ANN, then prepare, calibrate and fine-tune (with distillation) the QCFS model."""
    device = _setup(threads, device)
    record = workflow.build(name, out, data, device, not quiet and distributed.is_main())
    checkpoint = Path(out) / get_recipe(name).checkpoint
    _echo(json.dumps(record["history"][-1]))
    _echo(f"built {name} → {checkpoint} (record: {checkpoint.with_suffix('.json')}); to ship it, copy both "
          "into snnconvert/model_zoo/checkpoints/")


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
