"""``torchrec-app``: one command-line shape for every subcommand.

    torchrec-app <command> --recipe NAME [--data DIR] [--out DIR] [section.key=value ...]

Each command lives in its own module exposing ``add_arguments(parser)`` (its extra
flags) and ``run(args, config) -> int``; this module only parses the common part,
resolves the config (recipe + overrides) and dispatches. Commands are imported lazily,
so ``torchrec-app plan`` does not pay for the data tools and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from torchrec_app.config import ConfigError, resolve_config

#: command name -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("torchrec_app.commands.train", "train a model (single process, or one rank under torchrun/torchx)"),
    "generate": ("torchrec_app.commands.generate", "write Criteo-format TSV with a planted click model"),
    "preprocess": ("torchrec_app.commands.preprocess", "convert Criteo TSV/CSV files to Parquet for training"),
    "export": ("torchrec_app.commands.export", "write a checkpoint's model unsharded, for serving"),
    "show-config": ("torchrec_app.commands.show_config", "print a recipe's resolved config with field docs"),
    "plan": ("torchrec_app.commands.plan", "show, save, chart or diff the sharding plan for a topology"),
    "bench": ("torchrec_app.commands.bench", "measure samples/s, step-time split, pipeline efficiency and AUC of configs"),
    "explain": ("torchrec_app.commands.explain", "rank feature crosses and features by a trained DCNv2's cross-layer weight blocks"),
    "compare": ("torchrec_app.commands.compare", "compare two ranking runs' per-user results (paired interval)"),
    "suggest-dims": ("torchrec_app.commands.suggest_dims", "propose per-feature embedding dims from cross importance under a budget"),
}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every command shares."""
    parser.add_argument("--recipe", default="default", help="named recipe (see `torchrec-app show-config --list`)")
    parser.add_argument("--data", default=None, help="dataset directory (preprocessed Parquet)")
    parser.add_argument("--out", default=None, help="output directory")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchrec-app", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(command_parser)
        _command_module(name).add_arguments(command_parser)
    return parser


def _command_module(name: str):
    return importlib.import_module(COMMANDS[name][0])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchrec-app`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Build only the chosen command's parser when we can tell which it is (fast start).
    parser = build_parser() if not argv or argv[0] not in COMMANDS else _single_command_parser(argv[0])
    args = parser.parse_args(argv)
    try:
        config = resolve_config(args.recipe, args.overrides)
        return _command_module(args.command).run(args, config)
    except ConfigError as err:
        print(f"torchrec-app {args.command}: error: {err}", file=sys.stderr)
        return 2


def _single_command_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchrec-app")
    sub = parser.add_subparsers(dest="command", required=True)
    command_parser = sub.add_parser(name, description=COMMANDS[name][1])
    add_common_arguments(command_parser)
    _command_module(name).add_arguments(command_parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
