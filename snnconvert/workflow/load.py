"""Loading: a model and its weights by name, the data it is measured on, a converted model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from snnconvert.checkpoint import load_checkpoint
from snnconvert.convert import NeuronConfig, convert
from snnconvert.prepare import PrepareConfig, prepare
from snnconvert.data import load_dataset, make_loader
from snnconvert.data.fit import check_fit
from snnconvert.direct import DirectConfig
from snnconvert.errors import CheckpointError, SnnConvertError, first_line
from snnconvert.model_zoo import (Recipe, build_ann, get_recipe, load_direct,
                                  load_model)
from snnconvert.model_zoo.build import LoadedModel
from snnconvert.spec import ModelSource


def load(model_name: str, checkpoint: str | None, pretrained: bool = True, shipped: bool = True,
         adapt: dict[str, Any] | None = None, remap: str | None = None) -> LoadedModel:
    """The named model with its weights (see :func:`load_model`: ``adapt`` builds it for other
    data, ``remap`` reads weights saved under other names); a checkpoint for another model is refused."""
    recipe = get_recipe(model_name)
    loaded = load_model(recipe, checkpoint, pretrained=pretrained, shipped=shipped, adapt=adapt, remap=remap)
    if loaded.recipe.name != recipe.name:
        raise CheckpointError(f"{checkpoint} was made for {loaded.recipe.name!r}, not {model_name!r}: "
                              f"run `snnconvert ... {loaded.recipe.name} --checkpoint {checkpoint}`")
    return loaded


def load_source(source: ModelSource, shipped: bool = True) -> LoadedModel:
    """The model a spec's ``source`` names, with its weights (:func:`load` with its options;
    ``shipped``: with no checkpoint, the checkpoint shipped for the recipe)."""
    return load(source.name, source.checkpoint, source.pretrained, shipped, **source.loading())


def dataset(recipe: Recipe, data: str, split: str, augment: bool = False):
    """A split of ``data`` fitted to ``recipe``'s model; refused when it does not fit (see :func:`check_fit`)."""
    found = load_dataset(data, split, recipe.input_spec, augment)
    check_fit(found, recipe.input_spec, data, recipe.name)
    return found


def calibration_loader(recipe: Recipe, data: str, batch_size: int = 64):
    """The training split in a seeded shuffle; calibration reads only the samples it needs."""
    return make_loader(dataset(recipe, data, "train"), batch_size, shuffle=True, seed=0)


def calibration_batch(loader, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_samples`` calibration images and labels (this process's share under torchrun)."""
    images, labels, seen = [], [], 0
    for x, y in loader:
        images.append(x[: num_samples - seen])
        labels.append(y[: num_samples - seen])
        seen += len(images[-1])
        if seen >= num_samples:
            break
    return torch.cat(images), torch.cat(labels)


@dataclass
class LoadedSNN:
    """A single-step SNN ready to simulate or export, with its recipe, a description of its
    neurons and its attention mode (``direct`` for a directly trained SNN)."""

    snn: nn.Module
    recipe: Recipe
    neuron: str
    mode: str


def load_snn(model_name: str, checkpoint: str, mode: str, neuron: NeuronConfig) -> LoadedSNN:
    """The SNN of a converted checkpoint (its own mode, neurons and corrections), a prepared one
    (converted now with ``mode`` and ``neuron``) or a directly trained one (its encoder and network)."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt["stage"] not in ("converted", "direct"):
        loaded = load(model_name, checkpoint)
        if loaded.stage != "prepared":
            raise SnnConvertError(f"{checkpoint} holds an unprepared ANN: run `snnconvert prepare` and "
                                  "`snnconvert calibrate` (or `train`) first, or the one-shot `snnconvert MODEL`")
        return LoadedSNN(convert(loaded.model, mode, neuron), loaded.recipe, neuron.describe(), mode)
    recipe = Recipe.from_dict(ckpt["recipe"])
    if recipe.name != model_name:
        raise CheckpointError(f"{checkpoint} was made for {recipe.name!r}, not {model_name!r}")
    if ckpt["stage"] == "direct":
        return LoadedSNN(load_direct(ckpt, checkpoint).for_inference(recipe.example_batch()), recipe,
                         DirectConfig(**ckpt["direct"]).describe(), "direct")
    skeleton = prepare(build_ann(recipe), recipe.example_batch(), PrepareConfig(**ckpt["prepare"]))
    stored = NeuronConfig.of(ckpt["neuron"])
    snn = convert(skeleton, ckpt["mode"], stored)
    try:  # neurons adopt the stored shapes of thresholds, potentials and biases (calibrated ones)
        snn.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint} does not fit the converted {model_name} ({first_line(e, 150)}); "
                              "convert its prepared checkpoint again") from e
    return LoadedSNN(snn, recipe, stored.describe(), ckpt["mode"])


def model_metadata(recipe: Recipe, timesteps: int | None) -> dict[str, Any]:
    """What an exported model says about itself: the recipe, its input, its classes and T."""
    classes = recipe.classes
    if classes is None and recipe.num_classes == 1000:
        from timm.data import ImageNetInfo
        classes = tuple(ImageNetInfo().label_names())
    spec = recipe.input_spec
    return {"model": recipe.to_dict(), "timesteps": timesteps or recipe.timesteps,
            "input": {"shape": list(spec.size), "layout": "NCHW", "normalization": "(pixel in [0, 1] - mean) / std", "mean": list(spec.mean), "std": list(spec.std),
                      "interpolation": spec.interpolation, "crop_pct": spec.crop_pct},
            "classes": {"count": recipe.num_classes, "names": list(classes) if classes else None}}


def eval_loader(recipe: Recipe, data: str, batch_size: int, limit: int | None):
    """The test split fitted to ``recipe``'s input, first ``limit`` images."""
    return make_loader(dataset(recipe, data, "test"), batch_size, limit=limit)
