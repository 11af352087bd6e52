"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP): atomic, keep-latest-K, safe.

Layout under ``<run dir>/checkpoints/``::

    step_00000100/          a complete checkpoint (DCP files + .metadata)
    step_00000200.partial/  a save in progress, or one that crashed: never loaded

Every rank writes its own shards into ``step_N.partial``; after a barrier rank 0 renames
it to ``step_N``. A rename is atomic, so a directory without ``.partial`` is complete,
and a crash mid-save leaves the previous checkpoint as the newest complete one.

DCP stores each table's shards with their global offsets, so a checkpoint saved under
one plan and world size loads under another (resharding happens on load).

Loading is safe: tensors and plain values are read with ``torch.load(weights_only=True)``,
and DCP's pickled ``.metadata`` is read by an unpickler that only admits DCP's metadata
classes and plain containers, so a tampered checkpoint cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._nested_dict import flatten_state_dict, unflatten_state_dict
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from torchrec_app.config.errors import ConfigError

_COMPLETE = re.compile(r"^step_(\d{8})$")
_PARTIAL_SUFFIX = ".partial"
_METADATA_FILE = ".metadata"
#: Exactly what DCP's metadata pickles (listed from real checkpoints) and nothing callable
#: beyond data classes: a crafted pickle can construct these, not run code.
_ALLOWED_PICKLE_GLOBALS = {
    ("torch", "Size"), ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
}
_DCP_MODULE_PREFIX = "torch.distributed.checkpoint."


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata, refusing any global but DCP's own classes, dtypes and the few above."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_PICKLE_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith(_DCP_MODULE_PREFIX):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"checkpoint metadata refers to {module}.{name}, which a checkpoint may not contain")


class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` whose metadata is read with :class:`_MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        path = Path(self.path) / (_METADATA_FILE if rank is None else f"__{rank}{_METADATA_FILE}")
        metadata = _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafeLoadPlanner(DefaultLoadPlanner):
    """Loads an already-flat state dict; plain (non-tensor) values are read with
    ``weights_only=True`` (DCP's default planner unpickles them unrestricted).

    ``dcp.load`` copies each top-level value back from the dict the planner was set up
    with, so plain values are written there (``self.state_dict``), which requires not
    re-flattening (ShardedTensors here are not nested, so nothing needs it).
    """

    def __init__(self) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False, allow_partial_load=True)

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        self.state_dict[read_item.dest_index.fqn] = torch.load(value, weights_only=True)


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _COMPLETE.match(p.name) and (p / _METADATA_FILE).is_file()]
    return sorted(found, key=lambda p: int(_COMPLETE.match(p.name).group(1)))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    found = complete_checkpoints(root)
    return found[-1] if found else None


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_checkpoint(root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save ``state`` (a nested dict of tensors / ShardedTensors / plain values) as step ``step``.

    Collective: every rank calls it. Keeps the newest ``keep`` complete checkpoints.
    """
    final = checkpoint_dir(root, step)
    partial = final.with_name(final.name + _PARTIAL_SUFFIX)
    if _is_main():
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    _barrier()
    dcp.save(state, checkpoint_id=partial)
    _barrier()
    if _is_main():
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in complete_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        for stale in Path(root).glob(f"step_*{_PARTIAL_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(path: Path, state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Load checkpoint ``path`` into ``state`` (collective; reshards as needed).

    Tensors are filled in place; the loaded nested state is also returned, with the
    optimizer-state keys that could not be restored. Model tensors must match (else
    ``ConfigError`` listing every mismatch). Optimizer states whose layout depends on the
    sharding (e.g. row-wise Adagrad keeps one accumulator per row *per column shard*, so
    a column-wise plan cannot take a row-wise plan's state) are skipped when their key or
    shape differs, and keep their fresh initial values.
    """
    reader = SafeFileSystemReader(path)
    metadata = reader.read_metadata()
    check_checkpoint_matches(metadata, state, path)
    flat, mappings = flatten_state_dict(state)
    saved = metadata.state_dict_metadata
    skipped = sorted(
        key for key, value in flat.items()
        if key.startswith("optimizer.") and (key not in saved or (
            hasattr(value, "shape") and hasattr(saved[key], "size") and tuple(saved[key].size) != tuple(value.shape)))
    )
    to_load = {k: v for k, v in flat.items() if k not in skipped}
    dcp.load(to_load, storage_reader=reader, planner=_SafeLoadPlanner())
    return unflatten_state_dict(to_load, {k: mappings[k] for k in to_load}), skipped


def check_checkpoint_matches(metadata: Metadata, state: dict[str, Any], path: Path) -> None:
    """Fail with every model tensor whose name or shape differs between checkpoint and ``state``."""
    flat, _ = flatten_state_dict(state)
    saved = metadata.state_dict_metadata
    problems = []
    for key, value in flat.items():
        if not key.startswith("model.") or not hasattr(value, "shape"):
            continue
        if key not in saved:
            problems.append(f"{key}: missing from the checkpoint")
        elif hasattr(saved[key], "size") and tuple(saved[key].size) != tuple(value.shape):
            problems.append(f"{key}: checkpoint has shape {tuple(saved[key].size)}, the model {tuple(value.shape)}")
    extra = sorted(k for k in saved if k.startswith("model.") and k not in flat)
    problems += [f"{key}: in the checkpoint but not in the model" for key in extra]
    if problems:
        listing = "\n  ".join(problems[:30]) + (f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else "")
        raise ConfigError(f"checkpoint {path} does not match the configured model:\n  {listing}")
