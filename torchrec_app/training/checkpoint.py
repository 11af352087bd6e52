"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP): atomic, verified, safe.

Layout under ``<run dir>/checkpoints/``::

    step_00000100/          a complete checkpoint: DCP's .metadata and __R_K.distcp files,
                            and manifest.json (the size and CRC-32 of each of them)
    step_00000200.partial/  a save in progress, or one that crashed: never loaded

**Saving.** Every rank writes its own shards (``__R_*.distcp``) into ``step_N.partial``.
Each rank then checksums the files it wrote (still in its page cache) and rank 0 the
rest (``.metadata``); the entries are gathered on rank 0, which writes
``manifest.json`` and only then renames the directory to ``step_N``. A rename is
atomic, so a directory without ``.partial`` is complete and carries its manifest, and
a crash (or a full disk) mid-save leaves the previous checkpoint as the newest one.

**Verifying** (:func:`verify_checkpoint`, before any tensor is read):

* always: every file in the manifest exists with its recorded size; ``.metadata``
  unpickles through the allow-list below; every file it points into exists and is long
  enough for the bytes it points at;
* by default (``checkpoint.verify_checksums``): the CRC-32 of every file. CRC-32 runs
  at about 1.3 GiB/s here (zlib; blake2b: 0.3 GiB/s) and detects every burst error up
  to 32 bits and any other corruption but with probability 2^-32; it is integrity, not
  authenticity: a checkpoint edited consistently with its manifest is not detected
  (that case is what the allow-list and ``weights_only`` loading are for). On several
  ranks each rank checksums every ``world_size``-th data file and the results are
  gathered, so every rank raises the same error.
* A checkpoint saved before manifests existed (no ``manifest.json``) is loaded with a
  warning: its sizes are checked against ``.metadata``, so a missing, emptied or
  truncated shard is still refused, but a flipped byte is not detected.

A damaged checkpoint raises :class:`CheckpointError`, one line naming the file. Resume
(:func:`newest_valid_checkpoint`) skips damaged checkpoints, newest first, with one
warning naming each and why; ``checkpoint.load_from``, ``export`` and ``explain``
refuse them.

**Never running code.** Tensors and plain values are read with
``torch.load(weights_only=True)``, and DCP's pickled ``.metadata`` by an unpickler that
admits exactly the (module, name) pairs DCP's metadata holds (listed from real
checkpoints of every model, sharding type and table optimizer we save): DCP's metadata
dataclasses and enum, ``torch.Size``, dtypes, layouts and ``pathlib`` paths; no dotted
names (pickle protocol 4 would resolve ``operator.methodcaller`` through a module's
imports), nothing else callable. Such content raises :class:`UnsafeCheckpointError`,
which resume never skips silently past: it stops.

DCP stores each table's shards with their global offsets, so a checkpoint saved under
one plan and world size loads under another (resharding happens on load).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import pickle
import re
import shutil
import sys
import zlib
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint import filesystem as dcp_filesystem
from torch.distributed.checkpoint import metadata as dcp_metadata

# DCP's own key scheme for nested state ("optimizer.state.x.momentum1"): the keys checked
# against a checkpoint's metadata and filtered before loading must be exactly DCP's, and
# DCP exposes this only privately (no public flatten in torch 2.13). One import, here.
from torch.distributed.checkpoint._nested_dict import flatten_state_dict, unflatten_state_dict
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.futures import Future

from torchrec_app.config.errors import ConfigError
from torchrec_app.utils.fs import write_json_atomic

_COMPLETE = re.compile(r"^step_(\d{8})$")
_PARTIAL_SUFFIX = ".partial"
_METADATA_FILE = ".metadata"
MANIFEST_FILE = "manifest.json"
_MANIFEST_VERSION = 1
_CHUNK = 8 << 20  # bytes read at a time when checksumming

Warn = Callable[[str], None]


class CheckpointError(ConfigError):
    """A checkpoint that cannot be loaded (missing, truncated, damaged); the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holding pickled content that could run code; never loaded, never skipped silently."""


# -- the allow-list for .metadata ------------------------------------------------------

def _layout_by_name(name: str) -> torch.layout:
    """Stands in for ``torch.serialization._get_layout`` (how layouts pickle): a lookup, nothing else."""
    layouts = {str(v): v for v in vars(torch).values() if isinstance(v, torch.layout)}
    if not isinstance(name, str) or name not in layouts:
        raise pickle.UnpicklingError(f"unknown torch layout {name!r}")
    return layouts[name]


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{("torch.distributed.checkpoint.metadata", name): getattr(dcp_metadata, name) for name in (
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")},
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): dcp_filesystem._StorageInfo,
    ("torch", "Size"): torch.Size,
    **{("torch", name): value for name, value in vars(torch).items() if isinstance(value, torch.dtype)},
    ("torch.serialization", "_get_layout"): _layout_by_name,
    # StorageMeta.checkpoint_id: the save path; built as a pure path (no filesystem access).
    ("pathlib", "PosixPath"): pathlib.PurePosixPath, ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
    ("pathlib", "WindowsPath"): pathlib.PureWindowsPath, ("pathlib", "PureWindowsPath"): pathlib.PureWindowsPath,
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata admitting exactly :data:`_ALLOWED_GLOBALS` (compared as whole strings:
    a dotted name never resolves)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _RefusedGlobal(f"persistent id {pid!r}")


def read_checkpoint_metadata(path: Path, rank: int | None = None) -> Metadata:
    """DCP's ``.metadata`` of checkpoint ``path``, unpickled through the allow-list.

    Raises :class:`UnsafeCheckpointError` if it refers to anything else, and
    :class:`CheckpointError` if it is missing, truncated or not DCP metadata.
    """
    file = Path(path) / (_METADATA_FILE if rank is None else f"__{rank}{_METADATA_FILE}")
    try:
        data = file.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{file}: cannot read it ({err.strerror or err}); is {path} a checkpoint directory?") from None
    return _unpickle_metadata(file, data)


def _unpickle_metadata(file: Path, data: bytes) -> Metadata:
    try:
        metadata = _MetadataUnpickler(io.BytesIO(data)).load()
    except _RefusedGlobal as err:
        raise UnsafeCheckpointError(
            f"{file}: refers to {err}, which DCP checkpoint metadata never holds; refusing to load it "
            "(it could run code). Only load checkpoints you trust") from None
    except Exception as err:  # noqa: BLE001 - any other failure means damaged bytes
        raise CheckpointError(f"{file}: cannot be read ({type(err).__name__}: {_first_line(err)}); "
                              "the file is truncated or damaged") from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.state_dict_metadata, dict) \
            or not isinstance(metadata.storage_data, dict):
        raise CheckpointError(f"{file}: does not hold DCP checkpoint metadata (found {type(metadata).__name__})")
    return metadata


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# -- reading -------------------------------------------------------------------------

class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` that reads metadata through the allow-list and turns a failure to
    read an item into one :class:`CheckpointError` naming the file and the item."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_checkpoint_metadata(Path(self.path), kwargs.get("rank"))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def read_data(self, plan: Any, planner: Any) -> Future[None]:
        for item in plan.items:  # one at a time, so an error names its item
            try:
                super().read_data(dataclasses.replace(plan, items=[item]), planner).wait()
            except CheckpointError:
                raise
            except Exception as err:  # noqa: BLE001 - reported as one line naming the file
                file = Path(self.path) / self.storage_data[item.storage_index].relative_path
                raise _item_error(file, item.dest_index.fqn, err) from None
        done: Future[None] = Future()
        done.set_result(None)
        return done


def _item_error(file: Path, fqn: str, err: Exception) -> CheckpointError:
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text:
        reason = next((line.strip() for line in text.splitlines()
                       if "GLOBAL" in line or line.strip().startswith("Unsupported")), "not plain tensor data")
        return UnsafeCheckpointError(f"{file}: {fqn} holds pickled content that is not plain data ({reason}); "
                                     "refusing to load it (it could run code). Only load checkpoints you trust")
    return CheckpointError(f"{file}: cannot read {fqn} ({type(err).__name__}: {_first_line(err)}); "
                           "the file is damaged")


class SafeLoadPlanner(DefaultLoadPlanner):
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


def read_flat_state(path: Path, state: dict[str, Any], *, no_dist: bool = False) -> None:
    """Fill the flat ``state`` (name -> tensor / ShardedTensor / placeholder) from checkpoint ``path``.

    ``dcp.load`` with :class:`SafeFileSystemReader` and :class:`SafeLoadPlanner`;
    collective unless ``no_dist``. Any failure is one :class:`CheckpointError`.
    """
    try:
        dcp.load(state, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner(), no_dist=no_dist)
    except CheckpointException as exc:
        raise _from_dcp_failure(exc, Path(path)) from None


def _from_dcp_failure(exc: CheckpointException, path: Path) -> CheckpointError:
    failures = sorted(exc.failures.items())
    for _, (err, _) in failures:
        if isinstance(err, CheckpointError):
            return type(err)(str(err))
    rank, (err, _) = failures[0] if failures else (0, (exc, None))
    return CheckpointError(f"{path}: loading failed on rank {rank} ({type(err).__name__}: {_first_line(err)})")


# -- listing ---------------------------------------------------------------------------

def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def _step_dirs(root: Path) -> list[Path]:
    """Every ``step_N`` directory under ``root`` (not ``.partial``), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _COMPLETE.match(p.name)]
    return sorted(found, key=lambda p: int(_COMPLETE.match(p.name).group(1)))


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root`` (renamed from ``.partial``, with ``.metadata``), oldest
    first. Not verified: see :func:`newest_valid_checkpoint`."""
    return [p for p in _step_dirs(root) if (p / _METADATA_FILE).is_file()]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None (not verified)."""
    found = complete_checkpoints(root)
    return found[-1] if found else None


# -- manifest --------------------------------------------------------------------------

def _crc32(file: Path) -> str:
    crc = 0
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _file_entry(file: Path) -> dict[str, Any]:
    return {"size": file.stat().st_size, "crc32": _crc32(file)}


def _owner(name: str, world_size: int) -> int:
    """The rank that checksums ``name`` on save: the rank that wrote it (``__R_K.distcp``), else 0."""
    match = re.match(r"^__(\d+)_\d+\.distcp$", name)
    return int(match.group(1)) if match and int(match.group(1)) < world_size else 0


def write_manifest(path: Path) -> None:
    """Write ``manifest.json`` (size and CRC-32 of every file) into checkpoint directory ``path``.

    Collective when a process group is up: each rank checksums the files it wrote. Also
    usable alone (no process group) on a finished checkpoint.
    """
    path = Path(path)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    try:
        names = sorted(p.name for p in path.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
        mine: dict[str, Any] | str = {n: _file_entry(path / n) for n in names if _owner(n, world) == rank}
    except OSError as err:
        mine = f"rank {rank}: cannot checksum the files of {path} ({err})"
    gathered = _gather_everywhere(mine)
    failed = [g for g in gathered if isinstance(g, str)]
    if failed:
        raise CheckpointError(failed[0])
    if rank == 0:
        files = {name: entry for part in gathered for name, entry in part.items()}
        write_json_atomic(path / MANIFEST_FILE, {"version": _MANIFEST_VERSION, "checksum": "crc32",
                                                  "files": dict(sorted(files.items()))})


def _gather_everywhere(value: Any) -> list[Any]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _read_manifest(path: Path) -> dict[str, dict[str, Any]] | None:
    file = path / MANIFEST_FILE
    if not file.exists():
        return None
    try:
        manifest = json.loads(file.read_text())
        files = manifest["files"]
        if manifest.get("version") != _MANIFEST_VERSION or not isinstance(files, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("crc32"), str)
                for e in files.values()):
            raise ValueError("unexpected layout")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{file}: damaged ({err}); expected the JSON written when the checkpoint was saved") from None
    return files


# -- verifying -------------------------------------------------------------------------

def _warn_on_main(message: str) -> None:
    if _is_main():
        print(f"warning: {message}", file=sys.stderr, flush=True)


def verify_checkpoint(path: Path, verify_checksums: bool = True, warn: Warn | None = None) -> Metadata:
    """Check checkpoint ``path`` before anything is loaded from it; return its metadata.

    Sizes and structure always, checksums if ``verify_checksums`` (see the module
    docstring). Collective when a process group is up (ranks split the checksums and
    all raise the same error). Raises :class:`CheckpointError` (one line naming the
    file) or :class:`UnsafeCheckpointError`.
    """
    path = Path(path)
    try:
        metadata, todo = _verify_locally(path, verify_checksums, warn or _warn_on_main)
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        problem = None
        for name, expected in todo[rank::world]:
            if (actual := _crc32(path / name)) != expected:
                problem = ("damaged", f"{path / name}: checksum mismatch (crc32 {actual}, the manifest says "
                                      f"{expected}); the file is damaged")
                break
    except UnsafeCheckpointError as err:
        metadata, problem = None, ("unsafe", str(err))
    except CheckpointError as err:
        metadata, problem = None, ("damaged", str(err))
    except OSError as err:
        metadata, problem = None, ("damaged", f"{err.filename or path}: cannot read it ({err.strerror or err})")
    except Exception as err:  # noqa: BLE001 - every rank must reach the gather below, or the others hang
        metadata, problem = None, ("damaged", f"{path}: cannot verify it ({type(err).__name__}: {_first_line(err)})")
    problems = [p for p in _gather_everywhere(problem) if p is not None]
    if problems:
        kind, message = problems[0]
        raise (UnsafeCheckpointError if kind == "unsafe" else CheckpointError)(message)
    return metadata


def _verify_locally(path: Path, verify_checksums: bool, warn: Warn) -> tuple[Metadata, list[tuple[str, str]]]:
    """Everything but the data files' checksums; returns the metadata and the (file, crc32) left to check."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory (expected <run>/checkpoints/step_N)")
    if not (path / _METADATA_FILE).is_file():
        raise CheckpointError(f"{path / _METADATA_FILE}: missing, so {path} is not a complete DCP checkpoint")
    manifest = _read_manifest(path)
    if manifest is None:
        warn(f"{path} has no {MANIFEST_FILE} (saved before checkpoints carried one): file sizes are checked "
             "against .metadata, checksums cannot be")
    else:
        for name, entry in manifest.items():
            file = path / name
            if Path(name).name != name:
                raise UnsafeCheckpointError(f"{path / MANIFEST_FILE}: lists {name!r}, outside the checkpoint directory")
            if not file.is_file():
                raise CheckpointError(f"{file}: missing (the manifest lists it with {entry['size']} bytes)")
            if (size := file.stat().st_size) != entry["size"]:
                raise CheckpointError(f"{file}: {size} bytes, the manifest says {entry['size']}; "
                                      f"the file is {'empty' if size == 0 else 'truncated' if size < entry['size'] else 'damaged'}")
        if _METADATA_FILE not in manifest:
            raise CheckpointError(f"{path / MANIFEST_FILE}: does not list {_METADATA_FILE}; the manifest is damaged")
    data = (path / _METADATA_FILE).read_bytes()
    if manifest is not None and verify_checksums and (actual := f"{zlib.crc32(data):08x}") != manifest[_METADATA_FILE]["crc32"]:
        raise CheckpointError(f"{path / _METADATA_FILE}: checksum mismatch (crc32 {actual}, the manifest says "
                              f"{manifest[_METADATA_FILE]['crc32']}); the file is damaged")
    metadata = _unpickle_metadata(path / _METADATA_FILE, data)
    _check_storage(path, metadata, manifest)
    todo = sorted((n, e["crc32"]) for n, e in manifest.items() if n != _METADATA_FILE) \
        if manifest is not None and verify_checksums else []
    return metadata, todo


def _check_storage(path: Path, metadata: Metadata, manifest: dict[str, Any] | None) -> None:
    """Every file ``.metadata`` points into is in the directory (and manifest) and long enough."""
    needed: dict[str, int] = {}
    for index, info in metadata.storage_data.items():
        name = getattr(info, "relative_path", None)
        offset, length = getattr(info, "offset", None), getattr(info, "length", None)
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..", _METADATA_FILE, MANIFEST_FILE):
            raise UnsafeCheckpointError(f"{path / _METADATA_FILE}: points {getattr(index, 'fqn', index)} at {name!r}, "
                                        "outside the checkpoint's data files")
        if not (isinstance(offset, int) and isinstance(length, int) and offset >= 0 and length >= 0):
            raise CheckpointError(f"{path / _METADATA_FILE}: bad offset/length for {getattr(index, 'fqn', index)}; "
                                  "the file is damaged")
        needed[name] = max(needed.get(name, 0), offset + length)
    for name, end in sorted(needed.items()):
        file = path / name
        if manifest is not None and name not in manifest:
            raise CheckpointError(f"{file}: used by {_METADATA_FILE} but not listed in {MANIFEST_FILE}; the checkpoint is damaged")
        if not file.is_file():
            raise CheckpointError(f"{file}: missing ({_METADATA_FILE} needs {end} bytes of it)")
        if (size := file.stat().st_size) < end:
            raise CheckpointError(f"{file}: {size} bytes, {_METADATA_FILE} needs {end}; "
                                  f"the file is {'empty' if size == 0 else 'truncated'}")


def newest_valid_checkpoint(root: Path, verify_checksums: bool = True, warn: Warn | None = None) -> Path | None:
    """The newest checkpoint under ``root`` that verifies, or None if there is none at all.

    Damaged ones are skipped, newest first, and named with the reason in one warning.
    Collective when a process group is up. Raises :class:`UnsafeCheckpointError` at a
    checkpoint that holds code (a tampered checkpoint stops the run), and
    :class:`CheckpointError` if checkpoints exist but none verifies (starting over would
    delete them).
    """
    warn = warn or _warn_on_main
    skipped: list[str] = []
    for candidate in reversed(_step_dirs(root)):
        try:
            verify_checkpoint(candidate, verify_checksums, warn)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as err:
            skipped.append(f"{candidate.name} ({err})")
            continue
        if skipped:
            warn(f"resuming from {candidate}, skipping {len(skipped)} newer damaged checkpoint(s): " + "; ".join(skipped))
        return candidate
    if skipped:
        raise CheckpointError(f"no checkpoint under {root} verifies, so training cannot resume: " + "; ".join(skipped)
                              + "; move them away (or set checkpoint.resume=false) to start over")
    return None


def resolve_checkpoint(run: str | os.PathLike | None, checkpoint: str | os.PathLike | None,
                       verify_checksums: bool = True, warn: Warn | None = None) -> Path:
    """``checkpoint`` if given, else the newest checkpoint of run directory ``run``; verified.

    A damaged checkpoint is refused (one line naming the file; for ``run``, also the
    newest intact one), never replaced by an older one silently.
    """
    if checkpoint:
        path = Path(checkpoint)
    elif run:
        found = _step_dirs(Path(run) / "checkpoints")
        path = found[-1] if found else None
        if path is None:
            raise CheckpointError(f"no complete checkpoint under {Path(run) / 'checkpoints'} "
                                  "(train with checkpoint.at_end=true, or pass --checkpoint DIR)")
    else:
        raise ConfigError("needs --run DIR (a training run directory) or --checkpoint DIR (a checkpoints/step_N directory)")
    try:
        verify_checkpoint(path, verify_checksums, warn)
    except UnsafeCheckpointError:
        raise
    except CheckpointError as err:
        if checkpoint:
            raise
        older = [p for p in reversed(complete_checkpoints(Path(run) / "checkpoints")) if p != path]
        intact = next((p for p in older if _verifies(p, verify_checksums)), None)
        hint = f"; the newest intact one is {intact} (pass --checkpoint {intact})" if intact else "; no older one is intact"
        raise CheckpointError(f"{err}{hint}") from None
    return path


def _verifies(path: Path, verify_checksums: bool) -> bool:
    try:
        verify_checkpoint(path, verify_checksums, warn=lambda _: None)
    except CheckpointError:
        return False
    return True


# -- saving and loading ----------------------------------------------------------------

def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_checkpoint(root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save ``state`` (a nested dict of tensors / ShardedTensors / plain values) as step ``step``.

    Collective: every rank calls it. Writes the manifest, renames ``.partial`` into
    place, then keeps the newest ``keep`` complete checkpoints.
    """
    final = checkpoint_dir(root, step)
    partial = final.with_name(final.name + _PARTIAL_SUFFIX)
    if _is_main():
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    _barrier()
    dcp.save(state, checkpoint_id=partial)
    _barrier()
    write_manifest(partial)
    if _is_main():
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in complete_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        for stale in Path(root).glob(f"step_*{_PARTIAL_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(path: Path, state: dict[str, Any], verify_checksums: bool = True,
                    warn: Warn | None = None) -> tuple[dict[str, Any], list[str]]:
    """Verify checkpoint ``path``, then load it into ``state`` (collective; reshards as needed).

    Nothing is read before :func:`verify_checkpoint` passes. Tensors are filled in place;
    the loaded nested state is also returned, with the optimizer-state keys that could
    not be restored. Model tensors must match (else ``ConfigError`` listing every
    mismatch). Optimizer states whose layout depends on the sharding (e.g. row-wise
    Adagrad keeps one accumulator per row *per column shard*, so a column-wise plan
    cannot take a row-wise plan's state) are skipped when their key or shape differs,
    and keep their fresh initial values.
    """
    metadata = verify_checkpoint(path, verify_checksums, warn)
    check_checkpoint_matches(metadata, state, path)
    flat, mappings = flatten_state_dict(state)
    saved = metadata.state_dict_metadata
    skipped = sorted(
        key for key, value in flat.items()
        if key.startswith("optimizer.") and (key not in saved or (
            hasattr(value, "shape") and hasattr(saved[key], "size") and tuple(saved[key].size) != tuple(value.shape)))
    )
    to_load = {k: v for k, v in flat.items() if k not in skipped}
    read_flat_state(path, to_load)
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
