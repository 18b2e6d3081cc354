"""Build models from recipes and load weights: shipped checkpoints, files, or timm's hub."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from snnconvert.checkpoint import load_checkpoint
from snnconvert.prepare import QCFS, PrepareConfig, prepare
from snnconvert.runtime.neurons import SpikingNeuron
from snnconvert.direct import DirectConfig, SpikingClassifier, make_encoder
from snnconvert.errors import CheckpointError, SnnConvertError, shorten
from snnconvert.model_zoo.registry import Recipe, get_recipe, list_recipes
from snnconvert.model_zoo.sources import build_own, with_outputs


def build_ann(recipe: Recipe, pretrained: bool = False) -> nn.Module:
    """The recipe's ANN from timm (``pretrained=True`` downloads timm's weights), or one's own
    (:mod:`~snnconvert.model_zoo.sources`: its weights are its own). An ``img_size`` the
    architecture does not take (a CNN takes any size) is left out."""
    if recipe.source is not None:
        return build_own(recipe)
    try:
        return timm.create_model(recipe.timm_name, pretrained=pretrained, **recipe.model_args)
    except TypeError as e:
        if "img_size" not in str(e) or "img_size" not in recipe.model_args:
            raise
        args = {k: v for k, v in recipe.model_args.items() if k != "img_size"}
        return timm.create_model(recipe.timm_name, pretrained=pretrained, **args)


def direct_settings(recipe: Recipe) -> dict[str, Any]:
    """The recipe's direct-training settings: :class:`DirectConfig` fields (T the recipe's)."""
    if recipe.direct is None:
        direct = [n for n in list_recipes() if get_recipe(n).direct]
        raise SnnConvertError(f"{recipe.name} is not a directly trained SNN; direct-train one of {', '.join(direct)} "
                              f"(convert {recipe.name} with `snnconvert {recipe.name}`)")
    return {"timesteps": recipe.timesteps, **{k: v for k, v in recipe.direct.items() if k != "train"}}


def direct_config(recipe: Recipe, **overrides) -> DirectConfig:
    """The recipe's direct-training settings with ``overrides`` (None values ignored)."""
    return DirectConfig(**{**direct_settings(recipe), **{k: v for k, v in overrides.items() if v is not None}})


def build_spiking_classifier(recipe: Recipe, config: DirectConfig) -> SpikingClassifier:
    """The recipe's spiking network with ``config``'s neurons, behind its encoder, unrolled over T."""
    network = timm.create_model(recipe.timm_name, **recipe.model_args, **config.neuron_args())
    encoder = make_encoder(config.encoding, config.timesteps, recipe.mean, recipe.std)
    return SpikingClassifier(network, encoder, config.timesteps)


def load_direct(ckpt: dict, path: str | Path) -> SpikingClassifier:
    """The directly trained SNN a checkpoint of stage ``direct`` (read from ``path``) holds."""
    if ckpt["stage"] != "direct":
        raise CheckpointError(f"{path} holds a {ckpt['stage']} model, not a directly trained SNN")
    model = build_spiking_classifier(Recipe.from_dict(ckpt["recipe"]), DirectConfig(**ckpt["direct"]))
    _load_state(model, ckpt["model"], Path(path))
    return model


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub host (``HF_ENDPOINT``) resolves: checked before a download so
    that an offline machine gets an answer at once instead of after the hub client's retries."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    previous = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)


def shipped_checkpoint(recipe: Recipe) -> Path | None:
    """Path of the checkpoint shipped for ``recipe``, if one exists."""
    if recipe.checkpoint is None:
        return None
    path = Path(str(resources.files("snnconvert.model_zoo").joinpath("checkpoints", recipe.checkpoint)))
    return path if path.is_file() else None


@dataclass
class LoadedModel:
    """A model with where it came from.

    Attributes:
        model: the ANN (stage ``ann``) or the prepared QCFS model (stage ``prepared``).
        recipe: the recipe it was built from.
        stage: ``ann`` or ``prepared``.
        prepare_config: the QCFS configuration when prepared.
        source: human-readable origin of the weights.
        metadata: everything else the checkpoint held (training history, metrics).
    """

    model: nn.Module
    recipe: Recipe
    stage: str
    prepare_config: PrepareConfig | None
    source: str
    metadata: dict


def remap_by_order(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A state dict saved by another implementation, its tensors given the model's names in order.

    The i-th tensor of ``state`` becomes the model's i-th (BatchNorm batch counters aside, which
    the model keeps); every pair must have the same shape. Returns the renamed state and one line
    per renamed tensor (``old → new``).
    """
    def tensors(names_values):
        return [(k, v) for k, v in names_values if not k.endswith("num_batches_tracked")]

    source, target = tensors(state.items()), tensors(model.state_dict().items())
    if len(source) != len(target):
        raise CheckpointError(f"cannot pair by order: the file holds {len(source)} tensors, the model "
                              f"{len(target)} (batch counters aside); it was saved for another architecture")
    wrong = [f"#{i} {sk} {tuple(sv.shape)} vs {tk} {tuple(tv.shape)}"
             for i, ((sk, sv), (tk, tv)) in enumerate(zip(source, target)) if sv.shape != tv.shape]
    if wrong:
        raise CheckpointError(f"cannot pair by order: {len(wrong)} tensors differ in shape ({shorten(wrong, 3)}); "
                              "the file was saved for another architecture or size")
    renamed = {tk: sv for (_, sv), (tk, _) in zip(source, target)}
    lines = [f"{sk} → {tk}" for (sk, _), (tk, _) in zip(source, target) if sk != tk]
    return {**{k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}, **renamed}, lines


def _adopts_shape(model: nn.Module, key: str) -> bool:
    """A threshold: layer- or channel-wise as calibrated, its module takes the stored shape."""
    owner, _, name = key.rpartition(".")
    return name == "threshold" and isinstance(model.get_submodule(owner), (QCFS, SpikingNeuron))


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, remap: str | None = None,
                adapted: bool = False) -> dict[str, list[str]]:
    """Load ``state`` into ``model``; returns what was done beyond a plain load (``remapped`` keys,
    ``reinitialized`` tensors of an adapted model: its new head or input layer).

    Raises:
        CheckpointError: naming the missing, unexpected or mis-shaped tensors and the fix.
    """
    done: dict[str, list[str]] = {}
    if remap == "order":
        state, done["remapped"] = remap_by_order(state, model)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        found = [f"{len(names)} {what} tensors ({shorten(names, 3)})"
                 for names, what in ((missing, "missing"), (unexpected, "unexpected")) if names]
        raise CheckpointError(
            f"{path} does not fit the model: {' and '.join(found)}. Pass the model name the checkpoint "
            "was trained for, or --remap-keys order for weights saved by another implementation of this model")
    shapes = [k for k in own if state[k].shape != own[k].shape and not _adopts_shape(model, k)]
    if shapes and not adapted:
        details = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes]
        raise CheckpointError(f"{path} does not fit the model: {len(shapes)} tensors differ in shape "
                              f"({shorten(details, 3)}). Weights for another class count or input size: pass "
                              "--num-classes N or --input-size C,H,W to build the model for this data (the "
                              "mismatched layers start afresh: train them with --epochs)")
    if shapes:
        done["reinitialized"] = shapes
    model.load_state_dict({k: (own[k] if k in shapes else v) for k, v in state.items()})
    return done


def load_model(recipe: Recipe, checkpoint: str | Path | None = None, pretrained: bool = True,
               shipped: bool = True, adapt: dict[str, Any] | None = None, remap: str | None = None) -> LoadedModel:
    """Build ``recipe``'s model with weights from ``checkpoint``, the shipped file, or timm.

    Args:
        recipe: what to build.
        checkpoint: an snnconvert checkpoint or a plain state dict; None uses the shipped
            checkpoint if the recipe has one (and ``shipped``), else timm's pretrained weights.
        pretrained: with no checkpoint, download timm's weights (False: random initialization).
        shipped: with no checkpoint, use the checkpoint shipped for the recipe.
        adapt: build the model for other data (:meth:`Recipe.adapted`: ``num_classes``,
            ``input_size``); weights that no longer fit (the head, the first layer) start afresh.
        remap: ``"order"``: the checkpoint's tensors are the model's in order, under other names.

    Raises:
        CheckpointError: when no weights can be had, or they do not fit, saying how to pass them.
    """
    adapt = {k: v for k, v in (adapt or {}).items() if v is not None}
    recipe = recipe.adapted(**adapt)
    path = Path(checkpoint) if checkpoint is not None else shipped_checkpoint(recipe) if shipped and not adapt \
        else None
    if path is None and recipe.source is not None:  # one's own model comes with its weights
        model = build_ann(recipe)
        return LoadedModel(model, with_outputs(recipe, model), "ann", None, recipe.source, {})
    if path is None:
        if not pretrained:
            return LoadedModel(build_ann(recipe), recipe, "ann", None, "random initialization", {})
        fix = (" Pass --checkpoint FILE (a timm/PyTorch state dict, .safetensors, or an snnconvert "
               "checkpoint), or --no-pretrained to start from random weights and train with --epochs.")
        try:
            offline_cache = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")
            model = build_ann(recipe, pretrained=True) if offline_cache or hub_reachable() else None
        except Exception as e:  # no hub access, or no weights for this architecture
            raise CheckpointError(f"no weights for {recipe.name} ({recipe.timm_name}): timm could not fetch "
                                  f"pretrained weights ({type(e).__name__}: {str(e)[:200]}).{fix}") from e
        if model is None:
            raise CheckpointError(f"no weights for {recipe.name} ({recipe.timm_name}): the model hub cannot be "
                                  f"reached from this machine (set HF_HUB_OFFLINE=1 to use weights already in "
                                  f"the local cache).{fix}")
        return LoadedModel(model, recipe, "ann", None, f"timm pretrained {recipe.timm_name}", {})
    ckpt = load_checkpoint(path)
    if ckpt["recipe"] is not None:
        recipe = Recipe.from_dict(ckpt["recipe"]).adapted(**adapt)
    if ckpt["stage"] in ("converted", "direct"):
        raise CheckpointError(f"{path} holds a {ckpt['stage']} SNN; pass a prepared (QCFS) or ANN checkpoint, or "
                              "simulate it with `snnconvert simulate`")
    model = build_ann(recipe)
    recipe = with_outputs(recipe, model)
    config = None
    if ckpt["stage"] == "prepared":
        config = PrepareConfig(**ckpt["prepare"])
        model = prepare(model, recipe.example_batch(), config)
    loading = _load_state(model, ckpt["model"], path, remap, adapted=bool(adapt))
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "recipe", "prepare", "format", "stage")}
    return LoadedModel(model, recipe, ckpt["stage"], config, str(path), {**meta, "loading": loading})
