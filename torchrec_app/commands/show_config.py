"""``torchrec-app show-config``: print a recipe's resolved config, or list the recipes."""

from __future__ import annotations

import argparse
import dataclasses
import json

from torchrec_app.config.recipes import RECIPES
from torchrec_app.config.schema import AppConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", action="store_true", help="list the recipes with their descriptions")


def run(args: argparse.Namespace, config: AppConfig) -> int:
    if args.list:
        for name, fn in sorted(RECIPES.items()):
            print(f"{name:28s} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    print(json.dumps(dataclasses.asdict(config), indent=2))
    return 0
