"""Model recipes by short name, in the spirit of timm's registry and ``create_model``.

A recipe names the timm architecture and everything the pipeline needs around it: the model
arguments, input size and normalization, QCFS levels, the default T and, for the small models we
train here, the shipped checkpoint.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from snnconvert.data import InputSpec
from snnconvert.errors import SnnConvertError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Recipe:
    """Everything needed to build, feed and convert one model.

    Attributes:
        name: short name (``swin_t``, ``vit_nano`` …).
        timm_name: the timm architecture (``timm.create_model`` name).
        model_args: keyword arguments for ``timm.create_model`` (sizes, heads, classes …).
        input_size: ``(C, H, W)``.
        mean, std: input normalization.
        levels: QCFS levels L.
        timesteps: default T for simulation.
        checkpoint: file name of a shipped QCFS checkpoint in ``model_zoo/checkpoints``.
        description: one line for ``zoo list``.
    """

    name: str
    timm_name: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    levels: int = 8
    timesteps: int = 128
    model_args: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    description: str = ""

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.input_size, self.mean, self.std)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise SnnConvertError(f"unknown recipe fields {sorted(unknown)}")
        d = dict(d)
        for key in ("input_size", "mean", "std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def with_updates(self, **changes: Any) -> Recipe:
        """A copy with fields replaced (``model_args`` merged)."""
        if "model_args" in changes:
            changes["model_args"] = {**self.model_args, **changes["model_args"]}
        return replace(self, **changes)


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
    import timm

    if timm.is_model(name):
        return Recipe(name=name, timm_name=name, description="timm architecture (default recipe)")
    close = difflib.get_close_matches(name, list(_RECIPES) + timm.list_models(), n=5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise SnnConvertError(f"unknown model {name!r}.{hint} Known recipes: {', '.join(list_recipes())}; "
                          "any timm architecture name is accepted too (`snnconvert zoo list`).")
