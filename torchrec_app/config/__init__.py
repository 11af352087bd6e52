"""The typed config tree, its recipes and command-line overrides."""

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.overrides import apply_overrides
from torchrec_app.config.recipes import RECIPES, build_recipe
from torchrec_app.config.schema import AppConfig


def resolve_config(recipe: str, overrides: list[str]) -> AppConfig:
    """The config of a run: recipe ``recipe`` with ``section.key=value`` overrides applied."""
    return apply_overrides(build_recipe(recipe), overrides)


__all__ = ["AppConfig", "ConfigError", "RECIPES", "apply_overrides", "build_recipe", "resolve_config"]
