"""Build models from recipes and load weights: shipped checkpoints, files, or timm's hub."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from snnconvert.checkpoint import load_checkpoint
from snnconvert.convert import PrepareConfig, prepare
from snnconvert.direct import DirectConfig, SpikingClassifier, make_encoder
from snnconvert.errors import CheckpointError, SnnConvertError
from snnconvert.model_zoo.registry import Recipe, get_recipe, list_recipes


def build_ann(recipe: Recipe, pretrained: bool = False) -> nn.Module:
    """The recipe's ANN from timm (``pretrained=True`` downloads timm's weights)."""
    return timm.create_model(recipe.timm_name, pretrained=pretrained, **recipe.model_args)


def direct_config(recipe: Recipe, **overrides) -> DirectConfig:
    """The recipe's direct-training settings with ``overrides`` (None values ignored)."""
    if recipe.direct is None:
        direct = [n for n in list_recipes() if get_recipe(n).direct]
        raise SnnConvertError(f"{recipe.name} is not a directly trained SNN; direct-train one of {', '.join(direct)} "
                              f"(convert {recipe.name} with `snnconvert {recipe.name}`)")
    base = {k: v for k, v in recipe.direct.items() if k != "train"}
    return DirectConfig(**{"timesteps": recipe.timesteps, **base, **{k: v for k, v in overrides.items() if v is not None}})


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


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit the model: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}) and {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]}). Pass the model name the checkpoint was trained for.")


def load_model(recipe: Recipe, checkpoint: str | Path | None = None, pretrained: bool = True,
               shipped: bool = True) -> LoadedModel:
    """Build ``recipe``'s model with weights from ``checkpoint``, the shipped file, or timm.

    Args:
        recipe: what to build.
        checkpoint: an snnconvert checkpoint or a plain state dict; None uses the shipped
            checkpoint if the recipe has one (and ``shipped``), else timm's pretrained weights.
        pretrained: with no checkpoint, download timm's weights (False: random initialization).
        shipped: with no checkpoint, use the checkpoint shipped for the recipe.

    Raises:
        CheckpointError: when no weights can be had, saying how to pass them.
    """
    path = Path(checkpoint) if checkpoint is not None else shipped_checkpoint(recipe) if shipped else None
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
        recipe = Recipe.from_dict(ckpt["recipe"])
    if ckpt["stage"] in ("converted", "direct"):
        raise CheckpointError(f"{path} holds a {ckpt['stage']} SNN; pass a prepared (QCFS) or ANN checkpoint, or "
                              "simulate it with `snnconvert simulate`")
    model = build_ann(recipe)
    config = None
    if ckpt["stage"] == "prepared":
        config = PrepareConfig(**ckpt["prepare"])
        model = prepare(model, recipe.example_batch(), config)
    _load_state(model, ckpt["model"], path)
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "recipe", "prepare", "format", "stage")}
    return LoadedModel(model, recipe, ckpt["stage"], config, str(path), meta)
