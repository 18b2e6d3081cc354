"""The command line's options: shared option groups as decorators, each command's options, and
the functions that turn parsed options into the command's spec (:mod:`snnconvert.spec`)."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import click
import torch
import yaml

from snnconvert import distributed
from snnconvert.calibrate import CORRECTIONS, METHODS, REFERENCES, CalibrationConfig, CorrectionConfig
from snnconvert.convert import MODES, NeuronConfig
from snnconvert.prepare import MASK_TARGETS, MaskConfig, PrepareConfig
from snnconvert.prepare.config import DEFAULT_KEPT_ACTIVATIONS, LAYERNORM_CHOICES, MAX_POOL_CHOICES, SITE_POLICIES
from snnconvert.prepare.rewrite import route_choices
from snnconvert.data import DATASET_NAMES
from snnconvert.data.datasets import SKIP_BAD_FILES, native_size
from snnconvert.model_zoo.sources import is_own
from snnconvert.direct import ENCODERS, NODES, SURROGATES
from snnconvert.errors import SnnConvertError
from snnconvert.outputs import claim_output
from snnconvert.export import OPSET
from snnconvert.export.session import BACKENDS
from snnconvert.runtime import CODINGS, NEURONS, SimulationOptions
from snnconvert.runtime.execution import PRECISIONS
from snnconvert.runtime.energy import EnergyCosts
from snnconvert.spec import (PREPROCESSING, CalibrateSpec, DataSpec, DirectSpec, ModelSource, RunSpec, SimulateSpec, SweepSpec,
                             TrainSpec)
from snnconvert.model_zoo import get_recipe
from snnconvert.runtime.early_exit import ExitRule

DATA_HELP = (f"Dataset: one of {', '.join(DATASET_NAMES)} (embedded: a 1,000+1,000-image Fashion-MNIST "
             "sample shipped with the package; fashion-mnist: the Debian package's files), or a directory "
             "with MNIST IDX files, a CIFAR python folder, or an ImageFolder tree (train/, val/).")



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


def _prepare_config(model: str, given: dict) -> PrepareConfig:
    """The preparation options as a config: the route's defaults (fine-tuning, or calibration alone
    with --no-finetune) with the options given on top; --event-driven asks for each of the route's
    sites (spiking attention probabilities and streams) where the model has them (None), unless
    --no-spike-probabilities or --no-spike-streams."""
    route = route_choices(bool(given.get("event_driven")), given)
    levels = given["levels"] or get_recipe(model).levels
    base = PrepareConfig.calibration_only(levels) if given.get("no_finetune") else PrepareConfig(levels)
    chosen = {k: given[k] for k in ("sites", "layernorm", "max_pool") if given[k] is not None}
    kept = tuple(dict.fromkeys(base.keep_activations + given["keep_activations"]))
    return replace(base, **chosen, keep_activations=kept, mlp_batchnorm=given.get("mlp_batchnorm", False),
                   stream_levels=given.get("stream_levels"), **route)


def _preprocessing_options(f):
    """The preprocessing a model of one's own (or any model) was trained with."""
    f = click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
                     help="A keyword argument of one's own model factory (MODULE:FACTORY or FILE.py:FACTORY), "
                          "repeatable; VALUE is read as YAML (3, 0.5, true, [1, 2], text).")(f)
    f = click.option("--input-layout", type=click.Choice(["auto", "nchw", "nhwc"]), default=None,
                     help="The layout of an ONNX model's input (auto: from its shape; nhwc: channels last, e.g. "
                          "Keras); every model is fed [N, C, H, W] images.")(f)
    f = click.option("--mean", type=_Numbers(), default=None, metavar="M[,M,M]",
                     help="Per-channel mean subtracted after scaling: (pixel · input-scale − mean) / std.")(f)
    f = click.option("--std", type=_Numbers(), default=None, metavar="S[,S,S]", help="Per-channel std (see --mean).")(f)
    f = click.option("--input-scale", type=click.FloatRange(0, min_open=True), default=None,
                     help="The pixel range the model was trained on: 1 for [0, 1] (default), 255 for raw pixels.")(f)
    f = click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default=None,
                     help="rgb (default), or bgr for a model trained on BGR images.")(f)
    f = click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest"]), default=None,
                     help="Resize interpolation of photographs (ImageFolder data).")(f)
    return click.option("--crop-pct", type=click.FloatRange(0, 1, min_open=True), default=None,
                        help="Centre-crop fraction of evaluation photographs (resize to size / crop-pct, crop).")(f)


class _Numbers(click.ParamType):
    """Comma-separated numbers: ``C,H,W`` (three positive integers), or floats (any count)."""

    def __init__(self, size: bool = False):
        self.size = size
        self.name = "C,H,W" if size else "floats"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple((int if self.size else float)(v) for v in str(value).split(","))
        except ValueError:
            numbers = ()
        if self.size and (len(numbers) != 3 or min(numbers) < 1):
            self.fail(f"{value!r} is not C,H,W (three positive integers, e.g. 1,32,32)", param, ctx)
        if not numbers:
            self.fail(f"{value!r} is not comma-separated numbers (e.g. 0.485,0.456,0.406)", param, ctx)
        return numbers


def _model_options(f):
    """How the model is built and its weights read: for other data, or from another implementation."""
    f = _preprocessing_options(f)
    f = click.option("--remap-keys", type=click.Choice(["order"]), default=None,
                     help="order: the checkpoint's tensors are the model's in order under other names (weights "
                          "saved by another implementation); shapes are checked pair by pair.")(f)
    f = click.option("--class-map", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="The model's class names in output order, one per line: an ImageFolder of some of the "
                          "model's classes is labelled through it (ImageNet synset folders are recognized).")(f)
    f = click.option("--input-size", type=_Numbers(size=True), default=None, metavar="C,H,W",
                     help="Build the model for C×H×W inputs (channels, and the image size of models that take "
                          "one); layers whose weights no longer fit start afresh.")(f)
    return click.option("--num-classes", type=click.IntRange(1), default=None,
                        help="Build the model with a new head for N classes (train it: --epochs).")(f)


def _model_source(name: str, given: dict, pretrained: bool | None = None) -> ModelSource:
    """The model options as a source (``--class-map``'s file read: a JSON list or one name per line;
    one's own factory without --input-size built for the data's images)."""
    class_map, input_size, input_layout = given.get("class_map"), given.get("input_size"), given.get("input_layout")
    classes = None
    if class_map:
        text = Path(class_map).read_text()
        classes = tuple(json.loads(text)) if class_map.endswith(".json") else \
            tuple(line.strip() for line in text.splitlines() if line.strip())
    arguments = {}
    for item in given.get("model_args", ()):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. width=64)", param_hint="--model-arg")
        arguments[key.strip()] = yaml.safe_load(value)
    if input_layout is not None:
        if not name.endswith(".onnx"):
            raise click.BadParameter("--input-layout is the layout of an ONNX model's input", param_hint="--input-layout")
        arguments["input_layout"] = input_layout
    if input_size is None and is_own(name) and not name.endswith(".onnx") and given.get("data"):
        input_size = native_size(given["data"])
    preprocessing = {k: given.get(k) for k in PREPROCESSING}
    return ModelSource(name, given.get("checkpoint"), given.get("pretrained", True) if pretrained is None else pretrained,
                       given.get("num_classes"), input_size, classes, given.get("remap_keys"), arguments,
                       **preprocessing)


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
    f = _out_option("Checkpoint written atomically during training (and the resume file); a JSON record of the "
                    "run beside it.", folder=False)(f)
    f = click.option("--resume/--no-resume", default=True, show_default=True,
                     help="Continue from --out when it holds an unfinished run of the same settings.")(f)
    f = _prepare_options(f)
    f = _model_options(f)
    return _training_options_without_calibration(f)


def _calibration(calib_samples, calib_method, percentile, granularity, **_other_options) -> CalibrationConfig:
    """The calibration options (``_calibration_options``) as a config."""
    return CalibrationConfig(calib_method, percentile, granularity, calib_samples)


def _hyper_parameters(options: dict) -> dict:
    """The hyper-parameters given on the command line, as TrainConfig fields (the spec puts them
    over the defaults or the recipe's)."""
    given = {name.lstrip("-").replace("-", "_"): options[name.lstrip("-").replace("-", "_")]
             for name, _, _ in _HYPER_PARAMETERS}
    given["distill_alpha"] = given.pop("alpha")
    return _given(given)


def _given(values: dict) -> dict:
    """The options of ``values`` that were given (not None)."""
    return {k: v for k, v in values.items() if v is not None}


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


def _out_option(text: str, folder: bool, default: str | None = None, required: bool | None = None):
    """``--out``: the folder (``folder``) or file the command writes, checked and locked before
    any work starts; ``required`` (default: a file is, a folder is not)."""
    kind = click.Path(file_okay=False) if folder else click.Path(dir_okay=False)
    return click.option("--out", callback=_claim_out, type=kind, default=default, show_default=default is not None,
                        required=not folder if required is None else required, help=text)


def _timesteps_option(text: str = "Steps T (default: the recipe's)."):
    """``--timesteps`` / ``-T``, said of what T is for."""
    return click.option("--timesteps", "-T", type=click.IntRange(1), default=None, help=text)


def _test_images_options(batch: str = "Images per batch."):
    """``--limit`` and ``--batch-size`` of the test images simulated."""
    def decorate(f):
        f = click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True, help=batch)(f)
        return click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N test images.")(f)
    return decorate


def _mode_option(text: str = "Attention mode when converting a prepared checkpoint (a converted one keeps its own)."):
    """``--mode``: the attention mode a prepared checkpoint is converted with."""
    return click.option("--mode", type=click.Choice(MODES), default="compensated", show_default=True, help=text)


def _checkpoint_option(text: str):
    """``--checkpoint FILE``, said of what the command reads."""
    return click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help=text)


def _group(*decorators):
    """One decorator applying ``decorators`` as if stacked in this order above a function."""
    def decorate(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return decorate


def _config_option(report: str):
    """``--config FILE``: the command's spec read from a file instead of MODEL and the options."""
    return click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None,
                        help="Run as a spec file says instead of MODEL and the options: a spec (YAML or JSON, the "
                             f"command's fields) or the {report} of an earlier run, which stores the spec it ran "
                             "(only --out, --device, --threads and --quiet go with it).")


def spec_of(kind: type, model: str | None, config: str | None, given: dict, build):
    """The command's spec: read from ``config`` (MODEL and the other options refused beside it:
    a spec runs as it stands), else ``build(model, given)``."""
    if config is None:
        if model is None:
            raise click.UsageError("give a MODEL (a zoo name such as swin_nano, a timm architecture, MODULE:FACTORY "
                                   "or FILE.onnx) or --config FILE")
        return build(model, given)
    context = click.get_current_context()
    extra = [f"--{name.replace('_', '-')}" for name in given if name not in ("device", "threads", "quiet", "out")
             and context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if model is not None or extra:
        raise click.UsageError(f"--config runs the spec as it stands: drop {', '.join(extra or ['MODEL'])} (or edit "
                               "the spec)")
    return kind.read(config)


RUN = _group(
    click.argument("model", required=False),
    _config_option("report.json"),
    _timesteps_option("Simulation steps T (default: the recipe's). Accuracy is reported at every t ≤ T."),
    _data_option(),
    _checkpoint_option("Weights: an snnconvert checkpoint (ann or prepared) or a plain/timm state dict. "
                       "Default: the checkpoint shipped for the recipe, else timm's pretrained weights."),
    _calibration_options,
    _prepare_options,
    _no_finetune_option,
    _model_options,
    click.option("--epochs", type=click.IntRange(0), default=None,
                  help="Fine-tune the prepared model this many epochs on the training split before converting. "
                       "Default: an ANN with real weights is fine-tuned with the recipe's settings, distilling from "
                       "the ANN (`zoo show MODEL`), unless --no-finetune; a prepared model or random weights are not "
                       "trained (0)."),
    click.option("--mode", "modes", type=click.Choice(MODES), multiple=True,
                  help="Attention mode(s), repeatable: compensated (exact in expectation, default) and/or "
                       "mst (the MST reference code's per-step products)."),
    _neuron_options,
    _correction_options,
    _mask_options,
    _test_images_options("Test images simulated together."),
    click.option("--pretrained/--no-pretrained", default=True, show_default=True,
                  help="With no checkpoint: use the shipped checkpoint or timm's pretrained weights "
                       "(--no-pretrained: random initialization, e.g. with --epochs)."),
    _out_option("Folder for report.json, report.md, accuracy_vs_t.png (and prepared.pt).", True, "runs/latest"),
    _simulation_options,
    _energy_options,
    _common)


PREPARE = _group(
    click.argument("model"),
    _checkpoint_option("ANN weights (state dict)."),
    _prepare_options,
    _no_finetune_option,
    _model_options,
    click.option("--pretrained/--no-pretrained", default=True, show_default=True,
                  help="With no checkpoint, fetch timm's pretrained weights (else random initialization)."),
    _out_option("Prepared checkpoint to write.", folder=False),
    _common)


TRAIN = _group(
    click.argument("model"),
    _checkpoint_option("Start from these weights (ANN or prepared); default: the recipe's ANN, randomly initialized."),
    click.option("--ann", is_flag=True, help="Train the original ANN (LayerNorm, GELU/ReLU) without preparing it: "
                  "the stand-in for pretrained weights that `finetune` then converts."),
    _training_options,
    _common)


FINETUNE = _group(
    click.argument("model"),
    _checkpoint_option("The trained ANN (teacher and starting point); default: timm's pretrained weights."),
    click.option("--mlp-batchnorm", is_flag=True, help="Add a BatchNorm after each MLP Linear (MST's variant; "
                  "started as the identity, folded away at conversion)."),
    _mask_options,
    _training_options,
    _common)


CALIBRATE = _group(
    click.argument("model"),
    _checkpoint_option("Prepared or ANN weights (default: the recipe's shipped checkpoint or timm's)."),
    _data_option(),
    _calibration_options,
    click.option("--batchnorm/--no-batchnorm", default=False, show_default=True,
                  help="Also re-estimate every BatchNorm's statistics (an ANN being prepared always gets the "
                       "statistics of the BatchNorms that replace its LayerNorms; its own keep theirs)."),
    _prepare_options,
    _no_finetune_option,
    _model_options,
    _timesteps_option("T the SNN is corrected for (--correct) and its errors measured at (--report); default: the "
                      "recipe's."),
    _neuron_options,
    _correction_options,
    click.option("--reference", type=click.Choice(REFERENCES), default=None,
                  help="What the SNN is compared with: ann (each site as the ReLU-family activation it replaced; the "
                       "default for an ANN checkpoint) or qcfs (the QCFS ANN; the default for a prepared one)."),
    click.option("--report", "show_report", is_flag=True,
                  help="Print per layer: λ, cap, correction μ and the conversion error ŷ_t − y (mean / RMS relative "
                       "to y's) at --error-at, before → after the correction."),
    click.option("--error-at", type=click.IntRange(1), multiple=True,
                  help="A step t for the --report errors, repeatable (default: T)."),
    _out_option("Calibrated checkpoint: prepared, or with --correct converted (the corrections belong to the SNN).",
                folder=False),
    _common)


CONVERT = _group(
    click.argument("model"),
    _checkpoint_option("Prepared checkpoint (default: the recipe's shipped one)."),
    _mode_option("compensated: spike-correct products and softmax; mst: per-step ops (MST reference)."),
    _neuron_options,
    _out_option("Converted checkpoint to write.", folder=False),
    _common)


SIMULATE = _group(
    click.argument("model", required=False),
    _config_option("report.json"),
    _checkpoint_option("Converted or prepared checkpoint (default: the recipe's shipped one)."),
    _timesteps_option(),
    _data_option(),
    _mode_option(),
    _neuron_options,
    click.option("--backend", type=click.Choice(BACKENDS), default=None,
                  help="torch (default), or onnxruntime: the SNN exported as one ONNX step and run by onnxruntime "
                       "on the CPU (the default for a MODEL.onnx file written by `snnconvert export`)."),
    click.option("--exit", "exit_rule", default=None, metavar="RULE",
                  help="Stop each image once RULE holds and drop it from the batch (its later steps cost nothing): "
                       "quiet (count coding: no neuron fired for a step, so the output is final: exact), C (the "
                       "softmax of the output's estimate reaches confidence C, e.g. 0.99) or stable:K (the "
                       "prediction unchanged for K steps after the output's first event). Reports the mean steps run."),
    click.option("--early-exit", "exit_curve", default=None, metavar="RULES",
                  help="Comma-separated rules (quiet,0.5,0.9,0.99,stable:4): from one pass of T steps, what each would give "
                       "(accuracy, mean steps, against fixed T); with --out also early_exit.json/.md/.png."),
    _test_images_options(),
    _out_option("Write report.json/.md/.png here.", folder=True),
    _simulation_options,
    _energy_options,
    _common)


EXPORT = _group(
    click.argument("model"),
    _checkpoint_option("Converted, prepared, directly trained or ANN checkpoint (default: the recipe's shipped one, "
                       "else timm's pretrained weights for --what ann)."),
    click.option("--what", type=click.Choice(["snn", "ann"]), required=True,
                  help="snn: one time step of the SNN, its state (membranes, spike counts, running totals, the step "
                       "counter) as named inputs and outputs; ann: the ANN the checkpoint holds (the QCFS model of a "
                       "prepared checkpoint, else the original) as a plain model."),
    click.option("--format", "fmt", type=click.Choice(["onnx", "nir"]), default="onnx", show_default=True,
                  help=f"onnx (opset {OPSET}, dynamic batch), or nir where every op maps exactly (refused otherwise, "
                       "with the reason)."),
    _out_option("File to write.", folder=False),
    _timesteps_option("The default T recorded in the metadata (default: the recipe's)."),
    _mode_option(),
    _neuron_options,
    _common)


MASK_SWEEP = _group(
    click.argument("model", required=False),
    _config_option("sweep.json"),
    _checkpoint_option("Prepared checkpoint (default: the recipe's shipped one)."),
    click.option("--ratios", default="0,0.25,0.5,0.75,0.9", show_default=True, help="Masking ratios p, comma-separated."),
    click.option("--targets", default="attn,mlp", show_default=True,
                  help="Comma-separated sites: q, k, attn (scores), mlp (hidden layer), conv (CNN activations)."),
    click.option("--block-ratio", type=click.FloatRange(0, 1, max_open=True), default=None,
                  help="Also mask only the first k blocks at this ratio, for every k (the MST paper's Fig. 6)."),
    _timesteps_option(),
    _data_option(),
    _neuron_options,
    _test_images_options(),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first mask."),
    click.option("--finetune-epochs", type=click.IntRange(0), default=0, show_default=True,
                  help="Also fine-tune every masked model this many epochs on DATA's training split, distilling from "
                       "the unmasked model, and simulate it again (0: no fine-tuning)."),
    click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
                  help="Peak learning rate of that fine-tuning (default: the recipe's)."),
    click.option("--alpha", type=click.FloatRange(0, 1), default=None,
                  help="Distillation weight α of that fine-tuning (default: the recipe's)."),
    click.option("--warmup-epochs", type=click.FloatRange(0), default=None,
                  help="Warmup of that fine-tuning (default: the recipe's)."),
    _out_option("Folder for sweep.json, sweep.md and sweep.png (and fine-tuned checkpoints); rerun to resume.", True,
                "runs/mask-sweep"),
    _event_driven_option,
    _energy_options,
    _common)


DIRECT_TRAIN = _group(
    click.argument("model", required=False),
    _config_option("report.json"),
    _timesteps_option(),
    click.option("--neuron", type=click.Choice(list(NODES)), default=None,
                  help="Trainable neuron: if, lif, plif (learnable τ) or klif (default: the recipe's)."),
    click.option("--surrogate", type=click.Choice(list(SURROGATES)), default=None,
                  help="Surrogate gradient: sigmoid (α 4), atan (α 2), softsign (α 2) or triangle (α 1)."),
    click.option("--encoding", type=click.Choice(list(ENCODERS)), default=None,
                  help="Input encoding: direct (real image every step), poisson (Bernoulli spikes), latency or phase."),
    click.option("--tau", type=click.FloatRange(1, min_open=True), default=None, help="Membrane time constant τ."),
    click.option("--reset", type=click.Choice(["hard", "soft"]), default=None, help="Reset to 0, or subtract V_th."),
    click.option("--dynamic-timesteps", is_flag=True,
                  help="Learn each spiking layer's time steps (DTSS): a mask per layer keeps its first T_l of the "
                       "T_max steps; the simulation stops computing a layer after them."),
    click.option("--max-timesteps", type=click.IntRange(1), default=None,
                  help="T_max with --dynamic-timesteps (the same as --timesteps)."),
    click.option("--initial-timesteps", type=click.IntRange(1), default=None,
                  help="T_init, the steps every layer starts with (default: half of T_max, rounded up)."),
    click.option("--mask-loss", default=None, metavar="GROUPS",
                  help="Comma-separated layer groups whose steps the mask loss pulls down: sps, qkv, attn, mlp, or "
                       "'none' (default: qkv,mlp)."),
    click.option("--lambda-m", type=click.FloatRange(0), default=None, help="λ_m, the mask loss's weight (default 1e-6)."),
    click.option("--mask-lr", type=click.FloatRange(0, min_open=True), default=None,
                  help="Peak learning rate of the masks' parameters (default: --lr). A layer gains or loses a step when "
                       "its score moves by about 0.5, and AdamW moves it about one learning rate per step."),
    _training_options_without_calibration,
    _out_option("Folder for direct.pt (the resumable checkpoint, JSON record beside it) and the report.", True,
                "runs/direct"),
    click.option("--sim-batch-size", type=click.IntRange(1), default=256, show_default=True,
                  help="Test images simulated together."),
    _energy_options,
    _common)


COMPARE = _group(
    click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True)),
    _out_option("Folder for comparison.json, comparison.md and comparison.png.", True, "runs/compare"))


SHOW = _group(
    click.argument("name"))


BUILD = _group(
    click.argument("name"),
    _data_option(None, "Dataset (default: the build plan's). " + DATA_HELP),
    _out_option("Folder for the checkpoint(s) and their JSON records; rerun to resume.", True, required=True),
    _common)


def setup(given: dict) -> tuple[str, bool]:
    """Apply --threads, check --device and join the process group under torchrun; returns the
    device and whether to show progress (not with --quiet; rank 0 only)."""
    if given.get("threads"):
        torch.set_num_threads(given["threads"])
    device = given.get("device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SnnConvertError(f"--device {device} asked for, but torch sees no CUDA device; use --device cpu")
    return distributed.init(device), not given.get("quiet") and distributed.is_main()


def run_spec(model: str, given: dict) -> RunSpec:
    """``snnconvert run``'s options as a spec."""
    if given["no_finetune"] and given["epochs"]:
        raise click.BadParameter("--no-finetune converts without training: leave out --epochs", param_hint="--epochs")
    return RunSpec(_model_source(model, given), DataSpec(given["data"], given["limit"], given["batch_size"]),
                   given["timesteps"], _prepare_config(model, given), _calibration(**given), _neuron_config(**given),
                   0 if given["no_finetune"] else given["epochs"], tuple(given["modes"]) or ("compensated",),
                   _mask_config(**given), _correction(**given), _simulation(**given), _costs(**given))


def train_spec(model: str, given: dict, finetune: bool) -> TrainSpec:
    """``snnconvert train`` / ``finetune``'s options as a spec (fine-tuning: the recipe's
    hyper-parameters under the ones given, and pretrained weights by default)."""
    return TrainSpec(_model_source(model, given, pretrained=finetune), _hyper_parameters(given),
                     DataSpec(given["data"], given["limit"]),
                     None if given.get("ann") else _prepare_config(model, given), _calibration(**given),
                     _mask_config(**given) if finetune else None, finetune)


def calibrate_spec(model: str, given: dict) -> CalibrateSpec:
    """``snnconvert calibrate``'s options as a spec."""
    error_at = tuple(given["error_at"]) if given["show_report"] else None
    return CalibrateSpec(_model_source(model, given), DataSpec(given["data"]), _calibration(**given),
                         given["batchnorm"], _prepare_config(model, given), given["timesteps"],
                         _neuron_config(**given), _correction(**given), given["reference"], error_at)


def simulate_spec(model: str, given: dict) -> SimulateSpec:
    """``snnconvert simulate``'s options as a spec."""
    exit_rule = _exit_rules(given["exit_rule"], "--exit")[0] if given["exit_rule"] else None
    curve = tuple(_exit_rules(given["exit_curve"], "--early-exit")) if given["exit_curve"] else ()
    return SimulateSpec(ModelSource(model, given["checkpoint"]), DataSpec(given["data"], given["limit"],
                                                                          given["batch_size"]),
                        given["timesteps"], given["mode"], _neuron_config(**given), given["backend"], exit_rule, curve,
                        _simulation(**given), _costs(**given))


def sweep_spec(model: str, given: dict) -> SweepSpec:
    """``snnconvert mask-sweep``'s options as a spec (fine-tuning: the recipe's settings under the ones given)."""
    finetune = _given({"epochs": given["finetune_epochs"], "lr": given["lr"], "distill_alpha": given["alpha"],
                       "warmup_epochs": given["warmup_epochs"]}) if given["finetune_epochs"] else None
    return SweepSpec(ModelSource(model, given["checkpoint"]), DataSpec(given["data"], given["limit"],
                                                                       given["batch_size"]),
                     given["timesteps"], tuple(t.strip() for t in given["targets"].split(",") if t.strip()),
                     tuple(_floats(given["ratios"])), given["block_ratio"], _neuron_config(**given), given["seed"],
                     finetune, SimulationOptions(event_driven=given["event_driven"]), _costs(**given))


def direct_spec(model: str, given: dict) -> DirectSpec:
    """``snnconvert direct-train``'s options as a spec (unset settings: the recipe's)."""
    timesteps, max_timesteps = given["timesteps"], given["max_timesteps"]
    if max_timesteps is not None and not given["dynamic_timesteps"]:
        raise SnnConvertError("--max-timesteps is T_max of dynamic time steps: add --dynamic-timesteps (or give -T)")
    if max_timesteps is not None and timesteps is not None and max_timesteps != timesteps:
        raise SnnConvertError(f"--timesteps {timesteps} and --max-timesteps {max_timesteps} disagree: give one")
    groups = None if given["mask_loss"] is None else tuple(g for g in given["mask_loss"].split(",") if g and g != "none")
    direct = _given({"timesteps": max_timesteps or timesteps, "neuron": given["neuron"], "surrogate": given["surrogate"],
                     "encoding": given["encoding"], "tau": given["tau"], "reset": given["reset"],
                     "dynamic_timesteps": given["dynamic_timesteps"] or None,
                     "initial_timesteps": given["initial_timesteps"], "mask_loss": groups,
                     "lambda_m": given["lambda_m"], "mask_lr": given["mask_lr"]})
    return DirectSpec(model, direct, _hyper_parameters(given),
                      DataSpec(given["data"], given["limit"], given["sim_batch_size"]), _costs(**given))


def model_source(model: str, given: dict) -> ModelSource:
    """The model options of a command as a source."""
    return _model_source(model, given)


def neuron_config(given: dict) -> NeuronConfig:
    """The neuron options of a command as a config."""
    return _neuron_config(**given)


def prepare_config(model: str, given: dict) -> PrepareConfig:
    """The preparation options of a command as a config."""
    return _prepare_config(model, given)


def _costs(e_ac: float, e_mac: float, **_other_options) -> EnergyCosts:
    return EnergyCosts(e_ac, e_mac)
