"""``torchrec-app export``: a sharded checkpoint -> an unsharded state dict for serving.

Reads the model tensors of a DCP checkpoint without a process group and writes either
one ``torch.save`` file (``--out model.pt``) or, for tables too big to hold together,
one file per tensor (``--per-tensor --out DIR``, loaded one at a time, with an
``index.json``). Both load with ``torch.load(path, weights_only=True)``.

Reading is as safe as training's (allow-listed metadata, ``weights_only`` tensors, one
:class:`~torchrec_app.training.checkpoint.CheckpointError` naming the file on failure);
``torchrec-app export`` verifies the checkpoint's manifest first
(:func:`~torchrec_app.training.checkpoint.resolve_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from torchrec_app.training.checkpoint import read_checkpoint_metadata, read_flat_state
from torchrec_app.utils.fs import atomic_path, write_json_atomic

MODEL_PREFIX = "model."


def model_tensor_specs(checkpoint: Path) -> dict[str, TensorStorageMetadata]:
    """Name -> stored size/dtype of every model tensor in ``checkpoint``."""
    metadata = read_checkpoint_metadata(checkpoint)
    return {k: v for k, v in metadata.state_dict_metadata.items()
            if k.startswith(MODEL_PREFIX) and isinstance(v, TensorStorageMetadata)}


def read_unsharded(checkpoint: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Full (unsharded) tensors ``names`` from ``checkpoint``, read without a process group."""
    specs = model_tensor_specs(checkpoint)
    state = {name: torch.empty(tuple(specs[name].size), dtype=specs[name].properties.dtype) for name in names}
    read_flat_state(checkpoint, state, no_dist=True)
    return state


def export_checkpoint(checkpoint: Path, out: Path, per_tensor: bool) -> list[Path]:
    """Write the model tensors of ``checkpoint`` unsharded; return the files written."""
    names = sorted(model_tensor_specs(checkpoint))
    if not per_tensor:
        state = {name[len(MODEL_PREFIX):]: t for name, t in read_unsharded(checkpoint, names).items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            torch.save(state, tmp)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    index, written = {}, []
    for name in names:  # one tensor in memory at a time
        key = name[len(MODEL_PREFIX):]
        path = out / f"{key}.pt"
        with atomic_path(path) as tmp:
            torch.save(read_unsharded(checkpoint, [name])[name], tmp)
        index[key] = path.name
        written.append(path)
    write_json_atomic(out / "index.json", index)
    return written
