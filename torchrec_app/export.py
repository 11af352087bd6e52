"""``torchrec-app export``: a sharded checkpoint -> an unsharded state dict for serving.

Reads the model tensors of a DCP checkpoint without a process group and writes either
one ``torch.save`` file (``--out model.pt``) or, for tables too big to hold together,
one file per tensor (``--per-tensor --out DIR``, loaded one at a time, with an
``index.json``). Both load with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from torchrec_app.config import AppConfig, ConfigError
from torchrec_app.training.checkpoint import SafeFileSystemReader, latest_checkpoint

MODEL_PREFIX = "model."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="run directory: export its newest complete checkpoint")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (instead of --run)")
    parser.add_argument("--per-tensor", action="store_true", help="write one file per tensor into --out DIR")


def model_tensor_specs(checkpoint: Path) -> dict[str, TensorStorageMetadata]:
    """Name -> stored size/dtype of every model tensor in ``checkpoint``."""
    metadata = SafeFileSystemReader(checkpoint).read_metadata()
    return {k: v for k, v in metadata.state_dict_metadata.items()
            if k.startswith(MODEL_PREFIX) and isinstance(v, TensorStorageMetadata)}


def read_unsharded(checkpoint: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Full (unsharded) tensors ``names`` from ``checkpoint``, read without a process group."""
    specs = model_tensor_specs(checkpoint)
    state = {name: torch.empty(tuple(specs[name].size), dtype=specs[name].properties.dtype) for name in names}
    dcp.load(state, storage_reader=SafeFileSystemReader(checkpoint), no_dist=True)
    return state


def _save_atomic(obj: object, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_checkpoint(checkpoint: Path, out: Path, per_tensor: bool) -> list[Path]:
    """Write the model tensors of ``checkpoint`` unsharded; return the files written."""
    names = sorted(model_tensor_specs(checkpoint))
    if not per_tensor:
        state = {name[len(MODEL_PREFIX):]: t for name, t in read_unsharded(checkpoint, names).items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        _save_atomic(state, out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    index, written = {}, []
    for name in names:  # one tensor in memory at a time
        key = name[len(MODEL_PREFIX):]
        path = out / f"{key}.pt"
        _save_atomic(read_unsharded(checkpoint, [name])[name], path)
        index[key] = path.name
        written.append(path)
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return written


def run(args: argparse.Namespace, config: AppConfig) -> int:
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    elif args.run:
        checkpoint = latest_checkpoint(Path(args.run) / "checkpoints")
        if checkpoint is None:
            raise ConfigError(f"no complete checkpoint under {args.run}/checkpoints")
    else:
        raise ConfigError("export needs --run DIR or --checkpoint DIR")
    if not args.out:
        raise ConfigError("export needs --out (a file, or a directory with --per-tensor)")
    written = export_checkpoint(checkpoint, Path(args.out), args.per_tensor)
    print(f"exported {checkpoint} -> {args.out} ({len(written)} file(s))")
    return 0
