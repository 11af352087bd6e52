"""``torchrec-app``: one command-line shape for every subcommand.

    torchrec-app <command> [--recipe NAME] [--data DIR] [--out DIR] [flags] [section.key=value ...]

Each command lives in ``commands/<name>.py`` exposing ``add_arguments(parser)`` (its own
flags), ``COMMON_FLAGS`` (which of ``--recipe``/``--data``/``--out`` it uses) and
``run(args, config) -> int``; this module parses, resolves the config (recipe +
overrides, which may come anywhere on the line) and dispatches. Only the chosen command
is imported, and command modules import torch / torchrec inside ``run``, so ``--help``
and pure-JSON commands (``plan --diff``) answer without loading them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Sequence

from torchrec_app.config import ConfigError, resolve_config
from torchrec_app.utils.quiet import silence_known_warnings, verbose_requested

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
    "ensemble": ("torchrec_app.commands.ensemble", "combine ranking runs (priority heuristic, RRF with weights fitted on valid)"),
    "rerank": ("torchrec_app.commands.rerank", "LightGBM LambdaRank re-ranker over ranking runs' candidates, trained on valid"),
    "suggest-dims": ("torchrec_app.commands.suggest_dims", "propose per-feature embedding dims from cross importance under a budget"),
}


#: The flags commands share; each command module names the ones it uses in ``COMMON_FLAGS``.
COMMON_FLAGS = {
    "recipe": dict(default="default", help="named recipe (see `torchrec-app show-config --list`)"),
    "data": dict(default=None, help="dataset directory (preprocessed Parquet)"),
    "out": dict(default=None, help="output directory"),
}
#: A config override: ``section.key=value`` (lower-case dotted key).
OVERRIDE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+=")


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command: only the shared flags it uses, its own flags, and overrides anywhere."""
    module = _command_module(name)
    parser = argparse.ArgumentParser(prog=f"torchrec-app {name}", description=(module.__doc__ or COMMANDS[name][1]).strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    for flag in getattr(module, "COMMON_FLAGS", tuple(COMMON_FLAGS)):
        parser.add_argument(f"--{flag}", **COMMON_FLAGS[flag])
    parser.set_defaults(**{flag: spec["default"] for flag, spec in COMMON_FLAGS.items()})
    parser.add_argument("--verbose", action="store_true",
                        help="show every library warning (also: TORCHREC_APP_VERBOSE=1); by default known-harmless "
                             "ones are filtered (torchrec_app/utils/quiet.py lists them with the reason)")  # fmt: skip
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides (anywhere on the line)")
    module.add_arguments(parser)
    return parser


def parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``<command> [flags and section.key=value overrides in any order]``.

    Overrides may come anywhere, also right after a flag that takes several values
    (``--train a.txt preprocess.min_frequency=3``): such items are taken as overrides.
    """
    name, rest = argv[0], list(argv[1:])
    args = command_parser(name).parse_intermixed_args(rest)
    for key, value in vars(args).items():
        if key != "overrides" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            kept = [v for v in value if not OVERRIDE.match(v)]
            if len(kept) != len(value):
                args.overrides = [*args.overrides, *(v for v in value if OVERRIDE.match(v))]
                setattr(args, key, kept or None)
    args.command = name
    return args


def top_level_help() -> str:
    """``torchrec-app --help``: the commands, without importing any of them."""
    width = max(map(len, COMMANDS))
    lines = ["torchrec-app: train, inspect and benchmark recommendation models with sharded embeddings (TorchRec).",
             "", "usage: torchrec-app <command> [flags] [section.key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "`torchrec-app <command> --help` lists a command's flags."]
    return "\n".join(lines)


def _command_module(name: str):
    return importlib.import_module(COMMANDS[name][0])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchrec-app`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not verbose_requested(argv):
        silence_known_warnings()  # before the command imports torch / torchrec
    if not argv or argv[0] in ("-h", "--help"):
        print(top_level_help())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"torchrec-app: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    args = parse_command_line(argv)
    try:
        config = resolve_config(args.recipe, args.overrides)
        return _command_module(args.command).run(args, config)
    except ConfigError as err:
        if os.environ.get("RANK", "0") == "0":  # every rank of a job fails alike; one says why
            print(f"torchrec-app {args.command}: error: {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
