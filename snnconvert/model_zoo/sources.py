"""Models of one's own, named where the zoo takes a recipe name:

* ``pkg.module:factory`` or ``path/to/file.py:factory``: a callable returning an ``nn.Module``,
  called with the recipe's ``model_args`` (``--model-arg key=value``);
* ``model.onnx``: an ANN exported from any framework, imported by
  :func:`~snnconvert.model_zoo.onnx_import.import_onnx` (``model_args``: ``input_layout``).

Their recipe (:func:`own_recipe`) takes the input size from the ONNX file, or from
``--input-size`` / the data for a factory; normalization defaults to none (pixels in [0, 1])
until the preprocessing options say otherwise.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from snnconvert.errors import SnnConvertError, first_line
from snnconvert.model_zoo.registry import Recipe

#: a factory model's input size before ``--input-size`` or the data gives one
UNKNOWN_SIZE = (0, 0, 0)


def is_own(name: str) -> bool:
    """Whether ``name`` is a model of one's own: an ONNX file or ``module:factory``."""
    return name.endswith(".onnx") or (":" in name and not name.startswith(("hf-hub:", "hf_hub:", "timm/")))


def own_recipe(name: str) -> Recipe:
    """The recipe of a model of one's own (its input size from the file for ONNX)."""
    if name.endswith(".onnx"):
        if not Path(name).is_file():
            raise SnnConvertError(f"no ONNX file {name}")
        return refit(Recipe(name, "onnx", UNKNOWN_SIZE, (0.0,), (1.0,), source=name,
                            model_args={"input_layout": "auto"}, description="an ONNX model of one's own"))
    factory(name)  # names a bad module or factory now, not at build time
    return Recipe(name, "factory", UNKNOWN_SIZE, (0.0,), (1.0,), source=name, description="a factory of one's own")


def refit(recipe: Recipe) -> Recipe:
    """The recipe of one's own model refitted to its ``model_args``: an ONNX file's input size
    (and the channel count of its identity normalization) read in its ``input_layout``."""
    if not recipe.source.endswith(".onnx"):
        return recipe
    size = onnx_input_size(recipe.source, recipe.model_args.get("input_layout", "auto"))
    return replace(recipe, input_size=size, mean=(0.0,) * (size[0] or 1), std=(1.0,) * (size[0] or 1))


def onnx_input_size(path: str, layout: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of an ONNX file's input in ``layout``; :data:`UNKNOWN_SIZE` where ``auto``
    cannot tell the layout (``--input-layout`` then says it)."""
    import onnx

    from snnconvert.model_zoo.onnx_import import input_of

    model = onnx.load(path, load_external_data=False)
    try:
        return input_of(model, layout, path)[1]
    except SnnConvertError:
        if layout == "auto":
            return UNKNOWN_SIZE
        raise


def factory(source: str) -> Callable[..., Any]:
    """The callable ``source`` names: ``pkg.module:name`` or ``path/file.py:name``."""
    where, _, attribute = source.rpartition(":")
    if not where or not attribute:
        raise SnnConvertError(f"{source!r} is not MODULE:FACTORY or FILE.py:FACTORY (e.g. mypkg.nets:build_vgg)")
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise SnnConvertError(f"no Python file {where} (for the model factory {source})")
        spec = importlib.util.spec_from_file_location(f"snnconvert_factory_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise SnnConvertError(f"importing {where} failed: {type(e).__name__}: {first_line(e, 200)}") from e
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:
            raise SnnConvertError(f"cannot import the module {where!r} of the model factory {source} "
                                  f"({type(e).__name__}: {first_line(e, 200)}); is it installed, or on PYTHONPATH?") from e
    made = getattr(module, attribute, None)
    if not callable(made):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
        raise SnnConvertError(f"{where} has no callable {attribute!r} (it has {', '.join(found) or 'none'})")
    return made


def build_own(recipe: Recipe) -> nn.Module:
    """The model of one's own that ``recipe`` describes, in eval mode, checked on an example batch."""
    source = recipe.source
    if source.endswith(".onnx"):
        from snnconvert.model_zoo.onnx_import import import_onnx

        if tuple(recipe.input_size) == UNKNOWN_SIZE:
            raise SnnConvertError(f"cannot tell the layout of {source}'s input: pass --input-layout nchw or nhwc")
        imported = import_onnx(source, recipe.model_args.get("input_layout", "auto"))
        if tuple(imported.input_size) != tuple(recipe.input_size):
            raise SnnConvertError(f"{source} takes {imported.input_size} inputs, not {recipe.input_size}: leave out "
                                  "--input-size (an ONNX model's size is its own)")
        return imported.module
    if tuple(recipe.input_size) == UNKNOWN_SIZE:
        raise SnnConvertError(f"the input size of {source} is not known: pass --input-size C,H,W")
    try:
        model = factory(source)(**recipe.model_args)
    except SnnConvertError:
        raise
    except Exception as e:
        raise SnnConvertError(f"the model factory {source} raised {type(e).__name__}: {first_line(e, 200)} "
                              f"(called with {recipe.model_args or 'no arguments'}; pass its arguments with "
                              "--model-arg KEY=VALUE)") from e
    if not isinstance(model, nn.Module):
        raise SnnConvertError(f"the model factory {source} returned {type(model).__name__}, not a torch nn.Module")
    try:
        with torch.no_grad():
            out = model.eval()(recipe.example_batch())
    except Exception as e:
        raise SnnConvertError(f"the model from {source} fails on a {list(recipe.example_batch().shape)} batch "
                              f"({type(e).__name__}: {first_line(e, 200)}): pass the --input-size it takes") from e
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise SnnConvertError(f"the model from {source} returns {getattr(out, 'shape', type(out).__name__)}, not "
                              "[N, classes] logits")
    return model


def with_outputs(recipe: Recipe, model: nn.Module) -> Recipe:
    """``recipe`` told its model's class count (a factory's is known once it is built)."""
    if recipe.source is None or recipe.outputs is not None:
        return recipe
    with torch.no_grad():
        classes = model.eval()(recipe.example_batch()).shape[1]
    return replace(recipe, outputs=int(classes))
