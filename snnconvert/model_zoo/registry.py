"""Model recipes by short name, in the spirit of timm's registry and ``create_model``.

A recipe names the timm architecture and everything the pipeline needs around it: the model
arguments, input size and normalization, QCFS levels, the default T and, for the small models we
train here, the shipped checkpoint.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from snnconvert.data import InputSpec
from snnconvert.errors import SnnConvertError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``snnconvert finetune`` settings (:class:`~snnconvert.train.TrainConfig` fields) unless a recipe says otherwise.
FINETUNE_DEFAULTS: dict[str, Any] = {"epochs": 10, "lr": 1e-4, "warmup_epochs": 1.0, "distill_alpha": 0.5,
                                     "temperature": 2.0}


@dataclass(frozen=True)
class BuildPlan:
    """How ``snnconvert zoo build`` makes a recipe's shipped checkpoint.

    Attributes:
        data: the dataset (``--data`` value) it trains on.
        ann: :class:`~snnconvert.train.TrainConfig` fields for training the original ANN from
            random weights first (the stand-in for pretrained weights), or None: no ANN stage.
        qcfs: TrainConfig fields for the prepared model: fine-tuning from the ANN (distilling
            from it when ``distill_alpha`` > 0) or, without an ANN stage, training from random weights.
        prepare: PrepareConfig fields other than the levels (e.g. ``{"max_pool": "avg"}``).
    """

    data: str = "fashion-mnist"
    ann: dict[str, Any] | None = None
    qcfs: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)


def timm_data_config(timm_name: str) -> dict[str, Any]:
    """Input size, normalization, interpolation and crop of timm's pretrained weights for ``timm_name``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    if cfg is None:
        return {}
    return {"input_size": tuple(cfg.input_size), "mean": tuple(cfg.mean), "std": tuple(cfg.std),
            "interpolation": cfg.interpolation or "bilinear", "crop_pct": cfg.crop_pct or 1.0,
            "model_args": {"num_classes": cfg.num_classes or 1000}}


@dataclass(frozen=True)
class Recipe:
    """Everything needed to build, feed and convert one model.

    Attributes:
        name: short name (``swin_t``, ``vit_nano`` …), or the source of a model of one's own.
        timm_name: the timm architecture (``timm.create_model`` name); ``source`` for one's own.
        model_args: keyword arguments for ``timm.create_model`` (sizes, heads, classes …), or for
            the factory of one's own model.
        input_size: ``(C, H, W)``.
        mean, std: input normalization: ``(pixel · input_scale − mean) / std``.
        interpolation, crop_pct: resize and centre crop of evaluation images (timm's data config).
        input_scale: the pixel range the model was trained on: 1 for [0, 1], 255 for raw pixels.
        channel_order: ``rgb``, or ``bgr`` for a model trained on BGR images.
        source: a model of one's own (:mod:`snnconvert.model_zoo.sources`): ``pkg.module:factory``,
            ``path/file.py:factory`` or ``file.onnx``; None: timm.
        outputs: the class count of a model of one's own (what its output has; None: from ``model_args``).
        levels: QCFS levels L.
        timesteps: default T for simulation.
        finetune: settings of ``snnconvert finetune`` (TrainConfig fields over :data:`FINETUNE_DEFAULTS`).
        checkpoint: file name of a shipped QCFS checkpoint in ``model_zoo/checkpoints``.
        build: how ``zoo build`` reproduces that checkpoint.
        classes: the class names in the order of the model's outputs, when known (``--class-map``);
            ImageFolder data is labelled through them.
        direct: for a directly trained SNN (not converted): its default ``DirectConfig`` fields and,
            under ``train``, its TrainConfig fields (``snnconvert direct-train``).
        description: one line for ``zoo list``.
    """

    name: str
    timm_name: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    levels: int = 8
    timesteps: int = 128
    model_args: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    build: BuildPlan | None = None
    direct: dict[str, Any] | None = None
    classes: tuple[str, ...] | None = None
    description: str = ""
    input_scale: float = 1.0
    channel_order: str = "rgb"
    source: str | None = None
    outputs: int | None = None

    @classmethod
    def from_timm(cls, name: str, timm_name: str, **fields: Any) -> Recipe:
        """A recipe whose input size and transforms come from timm's data config for ``timm_name``."""
        return cls(name, timm_name, **{**timm_data_config(timm_name), **fields})

    def example_batch(self) -> torch.Tensor:
        """A zero batch of two inputs of the recipe's size: what ``prepare`` traces with."""
        return torch.zeros(2, *self.input_size)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.input_size, self.mean, self.std, self.interpolation, self.crop_pct, self.num_classes,
                         self.classes, self.input_scale, self.channel_order)

    @property
    def finetune_settings(self) -> dict[str, Any]:
        """TrainConfig fields of ``snnconvert finetune`` for this model."""
        return {**FINETUNE_DEFAULTS, **self.finetune}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise SnnConvertError(f"unknown recipe fields {sorted(unknown)}")
        d = dict(d)
        for key in ("input_size", "mean", "std", "classes"):
            if key in d:
                d[key] = tuple(d[key]) if d[key] is not None else None
        if d.get("build") is not None:
            d["build"] = BuildPlan(**d["build"])
        return cls(**d)

    def with_updates(self, **changes: Any) -> Recipe:
        """A copy with fields replaced (``model_args`` merged)."""
        if "model_args" in changes:
            changes["model_args"] = {**self.model_args, **changes["model_args"]}
        return replace(self, **changes)

    @property
    def num_classes(self) -> int:
        """Classes the model predicts (its ``num_classes``; timm's 1000 for ImageNet models)."""
        if self.outputs is not None and "num_classes" not in self.model_args:
            return self.outputs
        return int(self.model_args.get("num_classes", 1000))

    def adapted(self, num_classes: int | None = None, input_size: tuple[int, int, int] | None = None,
                classes: tuple[str, ...] | None = None, model_args: dict[str, Any] | None = None,
                **preprocessing: Any) -> Recipe:
        """The recipe built for another class count (a new head) or input size (channels and, for
        models that take one, ``img_size``; normalization follows the channel count), or told the
        names of its classes in output order; ``model_args`` for the model's builder and
        ``preprocessing`` (``mean``, ``std``, ``input_scale``, ``channel_order``, ``interpolation``,
        ``crop_pct``) given on top."""
        recipe = self if classes is None else replace(self, classes=tuple(classes))
        if model_args:
            recipe = recipe.with_updates(model_args=dict(model_args))
            if self.source is not None:
                from snnconvert.model_zoo.sources import refit

                recipe = refit(recipe)
        if num_classes is not None:
            recipe = recipe.with_updates(model_args={"num_classes": num_classes})
        if input_size is not None:
            c, h, w = input_size
            args = {"in_chans": c, "img_size": (h, w) if h != w else h}
            stats = {} if c == len(self.mean) else {"mean": (sum(self.mean) / len(self.mean),) * c,
                                                    "std": (sum(self.std) / len(self.std),) * c}
            if self.source is not None:  # one's own model is built at the size it is given
                args = {}
            recipe = recipe.with_updates(input_size=tuple(input_size), model_args=args, **stats)
        given = {k: tuple(v) if k in ("mean", "std") else v for k, v in preprocessing.items() if v is not None}
        return recipe.with_updates(**given) if given else recipe


_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the zoo (names are unique)."""
    if recipe.name in _RECIPES:
        raise SnnConvertError(f"recipe {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def list_recipes() -> list[str]:
    """Names of every registered recipe."""
    return sorted(_RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a timm architecture name gets a default ImageNet recipe.

    Raises:
        SnnConvertError: for an unknown name, with the closest known names.
    """
    if name in _RECIPES:
        return _RECIPES[name]
    from snnconvert.model_zoo.sources import is_own, own_recipe

    if is_own(name):
        return own_recipe(name)
    import timm

    if timm.is_model(name):
        return Recipe.from_timm(name, name, description="timm architecture (default recipe)")
    close = difflib.get_close_matches(name, list(_RECIPES) + timm.list_models(), n=5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise SnnConvertError(f"unknown model {name!r}.{hint} Known recipes: {', '.join(list_recipes())}; "
                          "any timm architecture name is accepted too (`snnconvert zoo list`).")
