"""``torchrec-app show-config``: a recipe's resolved config, every field with its documentation.

    torchrec-app show-config --recipe default train.batch_size=4096   # fields, values, docs
    torchrec-app show-config --recipe default --json                  # the machine form (config.json)
    torchrec-app show-config --list                                   # the recipes
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import shutil
import textwrap

from torchrec_app.config.docs import documented_fields, section_doc
from torchrec_app.config.recipes import RECIPES
from torchrec_app.config.schema import AppConfig

#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ("recipe",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", action="store_true", help="list the recipes with their descriptions")
    parser.add_argument("--json", action="store_true", help="print the config as JSON (as a run's config.json)")


def format_config(config: AppConfig, width: int = 100) -> str:
    """Every field as ``key = value`` followed by its documentation, section by section."""
    lines: list[str] = [f"# recipe {config.recipe}"]
    section = None
    for key, value, doc in documented_fields(config):
        top = key.split(".")[0]
        if "." in key and top != section:
            section = top
            lines += ["", f"[{top}] {section_doc(type(getattr(config, top)))}"]
        lines.append(f"{key} = {json.dumps(value)}")
        if doc:
            lines += textwrap.wrap(doc, width=width, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def plain(text: str) -> str:
    """Docstring markup as plain text.

    >>> plain("see :func:`bench_kaggle_like_dlrm` and ``data.max_ind_range``")
    'see bench_kaggle_like_dlrm and data.max_ind_range'
    """
    return re.sub(r":\w+:`([^`]*)`", r"\1", text).replace("``", "")


def recipe_descriptions(width: int = 100) -> str:
    """Each recipe and its whole description (the first paragraph of its docstring)."""
    names = sorted(RECIPES)
    pad = max(map(len, names)) + 2
    lines = []
    for name in names:
        doc = plain(" ".join((inspect.getdoc(RECIPES[name]) or "").split("\n\n")[0].split()))
        lines += textwrap.wrap(doc, width=width, initial_indent=name.ljust(pad), subsequent_indent=" " * pad) or [name]
    return "\n".join(lines)


def run(args: argparse.Namespace, config: AppConfig) -> int:
    width = max(60, shutil.get_terminal_size((100, 20)).columns)
    if args.list:
        print(recipe_descriptions(width))
    elif args.json:
        print(json.dumps(dataclasses.asdict(config), indent=2))
    else:
        print(format_config(config, width))
    return 0
