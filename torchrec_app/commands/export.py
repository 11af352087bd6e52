"""``torchrec-app export``: write a checkpoint's model unsharded (one file, or one per tensor)."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchrec_app.config import AppConfig, ConfigError
from torchrec_app.tools.export import export_checkpoint
from torchrec_app.training.checkpoint import resolve_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="run directory: export its newest checkpoint (refused if damaged)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (instead of --run)")
    parser.add_argument("--per-tensor", action="store_true", help="write one file per tensor into --out DIR")


def run(args: argparse.Namespace, config: AppConfig) -> int:
    if not args.out:
        raise ConfigError("export needs --out (a file, or a directory with --per-tensor)")
    checkpoint = resolve_checkpoint(args.run, args.checkpoint, config.checkpoint.verify_checksums)
    written = export_checkpoint(checkpoint, Path(args.out), args.per_tensor)
    print(f"exported {checkpoint} -> {args.out} ({len(written)} file(s))")
    return 0
