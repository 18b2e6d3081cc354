"""Model zoo: recipes by short name, model building and the checkpoints shipped with the package."""
from snnconvert.model_zoo import recipes as _recipes  # noqa: F401  (registers the recipes)
from snnconvert.model_zoo.build import (build_ann, build_spiking_classifier, direct_config, direct_settings,
                                        load_direct, load_model, shipped_checkpoint)
from snnconvert.model_zoo.registry import Recipe, get_recipe, list_recipes, register_recipe

__all__ = ["Recipe", "get_recipe", "list_recipes", "register_recipe", "build_ann", "load_model",
           "shipped_checkpoint", "build_spiking_classifier", "direct_config", "direct_settings",
           "load_direct"]
