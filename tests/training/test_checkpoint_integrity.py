"""Damaged checkpoints: refused with one line naming the file, and resume falls back past them.

Small checkpoints are saved without a process group (what a rank does alone); the
collective path runs on 2 real gloo ranks; resume, ``load_from`` and ``export`` run
through the command line.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zlib
from pathlib import Path

import pytest
import torch

from tests.multiprocess import run_on_ranks
from tests.training.test_checkpoint_security import cli
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.training.checkpoint import (
    MANIFEST_FILE,
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    newest_valid_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)


def _state(fill: float | None = None) -> dict:
    weight = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64) if fill is None else torch.full((64, 64), fill)
    return {"model": {"w": weight, "b": torch.ones(3) if fill is None else torch.full((3,), fill)},
            "train": {"step": 7}}


def _save(root: Path, step: int) -> Path:
    return save_checkpoint(root, step, _state(), keep=0)


def _data_file(checkpoint: Path) -> Path:
    (file,) = checkpoint.glob("*.distcp")
    return file


def _entry_middle(checkpoint: Path, fqn: str = "model.w") -> tuple[Path, int]:
    """A byte inside the stored bytes of entry ``fqn`` (the middle of its slice)."""
    metadata = pickle.loads((checkpoint / ".metadata").read_bytes())  # our own checkpoint: trusted
    index = next(i for i in metadata.storage_data if i.fqn == fqn)
    info = metadata.storage_data[index]
    return checkpoint / info.relative_path, info.offset + info.length // 2


def _flip(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


def _truncate(file: Path, keep: int | None = None) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2 if keep is None else keep])


DAMAGE = {
    "truncated shard": (lambda c: _truncate(_data_file(c)), "__0_0.distcp", "truncated"),
    "emptied shard": (lambda c: _truncate(_data_file(c), 0), "__0_0.distcp", "empty"),
    "missing shard": (lambda c: _data_file(c).unlink(), "__0_0.distcp", "missing"),
    "truncated .metadata": (lambda c: _truncate(c / ".metadata"), ".metadata", "truncated"),
    "flipped byte in tensor data": (lambda c: _flip(*_entry_middle(c)), "__0_0.distcp", "checksum mismatch"),
    "flipped byte in .metadata": (lambda c: _flip(c / ".metadata", 40), ".metadata", "checksum mismatch"),
    "damaged manifest": (lambda c: (c / MANIFEST_FILE).write_text("{\"files\": "), MANIFEST_FILE, "damaged"),
}


def test_manifest_records_size_and_crc32_of_every_file(tmp_path):
    checkpoint = _save(tmp_path, 1)
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {".metadata", "__0_0.distcp"}
    for name, entry in manifest["files"].items():
        data = (checkpoint / name).read_bytes()
        assert entry == {"size": len(data), "crc32": f"{zlib.crc32(data):08x}"}
    state = _state(fill=0.0)
    loaded, skipped = load_checkpoint(checkpoint, state)
    assert skipped == [] and torch.equal(state["model"]["w"], _state()["model"]["w"]) and loaded["train"]["step"] == 7


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_is_refused_before_any_tensor_is_read(tmp_path, damage):
    checkpoint = _save(tmp_path, 1)
    apply, file, reason = DAMAGE[damage]
    apply(checkpoint)
    state = _state(fill=-1.0)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(checkpoint, state)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{checkpoint / file}:") and reason in message, message
    assert not isinstance(err.value, UnsafeCheckpointError)
    assert torch.equal(state["model"]["w"], torch.full((64, 64), -1.0))  # untouched


def test_checksums_can_be_skipped_but_sizes_are_always_checked(tmp_path):
    checkpoint = _save(tmp_path, 1)
    _flip(*_entry_middle(checkpoint))
    state = _state(fill=0.0)
    load_checkpoint(checkpoint, state, verify_checksums=False)  # documented: a flipped byte goes unnoticed
    assert not torch.equal(state["model"]["w"], _state()["model"]["w"])
    _truncate(_data_file(checkpoint))
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(checkpoint, _state(fill=0.0), verify_checksums=False)


def test_checkpoint_without_manifest_loads_with_a_warning_and_sizes_checked(tmp_path):
    checkpoint = _save(tmp_path, 1)
    (checkpoint / MANIFEST_FILE).unlink()  # as saved before this change
    warnings: list[str] = []
    state = _state(fill=0.0)
    load_checkpoint(checkpoint, state, warn=warnings.append)
    assert torch.equal(state["model"]["w"], _state()["model"]["w"])
    assert len(warnings) == 1 and str(checkpoint) in warnings[0] and "no manifest.json" in warnings[0]
    _truncate(_data_file(checkpoint), 100)
    with pytest.raises(CheckpointError, match=r"__0_0\.distcp: 100 bytes, \.metadata needs \d+; the file is truncated"):
        load_checkpoint(checkpoint, _state(fill=0.0), warn=warnings.append)


def test_resume_picks_the_newest_that_verifies_and_names_every_skipped_one(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step)
    _truncate(_data_file(tmp_path / "step_00000004"))
    _flip(*_entry_middle(tmp_path / "step_00000003"))
    (tmp_path / "step_00000002" / ".metadata").unlink()
    warnings: list[str] = []
    assert newest_valid_checkpoint(tmp_path, warn=warnings.append) == tmp_path / "step_00000001"
    (warning,) = warnings
    assert "\n" not in warning and "resuming from" in warning and "skipping 3" in warning
    for step, reason in ((4, "truncated"), (3, "checksum mismatch"), (2, "missing")):
        assert f"step_{step:08d} (" in warning and reason in warning.split(f"step_{step:08d} (")[1].split(")")[0]


def test_resume_refuses_when_no_checkpoint_verifies_and_starts_fresh_when_there_is_none(tmp_path):
    assert newest_valid_checkpoint(tmp_path / "none") is None
    for step in (1, 2):
        _truncate(_data_file(_save(tmp_path, step)))
    with pytest.raises(CheckpointError, match="no checkpoint under .* verifies.*step_00000002 .*step_00000001 "):
        newest_valid_checkpoint(tmp_path, warn=lambda _: None)


def test_tampered_checkpoint_stops_the_search(tmp_path):
    _save(tmp_path, 1)
    newest = _save(tmp_path, 2)
    metadata = pickle.loads((newest / ".metadata").read_bytes())
    index = next(iter(metadata.storage_data))
    metadata.storage_data[index].relative_path = "../../outside.bin"  # reads a file outside the checkpoint
    (newest / ".metadata").write_bytes(pickle.dumps(metadata))
    (newest / MANIFEST_FILE).unlink()
    with pytest.raises(UnsafeCheckpointError, match=r"outside the checkpoint's data files"):
        newest_valid_checkpoint(tmp_path, warn=lambda _: None)


def test_run_or_checkpoint_resolves_to_a_verified_checkpoint(tmp_path):
    run = tmp_path / "run"
    older = _save(run / "checkpoints", 1)
    newest = _save(run / "checkpoints", 2)
    assert resolve_checkpoint(run, None) == newest
    assert resolve_checkpoint(None, older) == older
    _truncate(_data_file(newest))
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(run, None)
    assert str(err.value).startswith(f"{newest / '__0_0.distcp'}:") and f"the newest intact one is {older}" in str(err.value)
    with pytest.raises(CheckpointError, match="no complete checkpoint under"):
        resolve_checkpoint(tmp_path / "empty", None)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        resolve_checkpoint(None, tmp_path / "nowhere")


# -- two ranks -----------------------------------------------------------------------

def two_rank_job(runtime: Runtime, root: str) -> dict:
    import torch.distributed as dist

    # Keys of each rank's own, so each rank writes (and checksums) a file.
    state = {"shard": {f"w{runtime.rank}": torch.full((256,), float(runtime.rank))}, "train": {"step": 1}}
    first = save_checkpoint(Path(root), 1, state, keep=0)
    second = save_checkpoint(Path(root), 2, state, keep=0)
    manifest = json.loads((second / MANIFEST_FILE).read_text())["files"]
    dist.barrier()
    if runtime.rank == 0:
        _flip(*_entry_middle(second, "shard.w1"))  # damage what rank 1 wrote
    dist.barrier()
    warnings: list[str] = []
    chosen = newest_valid_checkpoint(Path(root), warn=warnings.append)
    try:
        verify_checkpoint(second)
        error = ""
    except CheckpointError as err:
        error = str(err)
    loaded = {"shard": {f"w{runtime.rank}": torch.zeros(256)}, "train": {"step": 0}}
    load_checkpoint(first, loaded)
    return {"files": sorted(manifest), "chosen": str(chosen), "warnings": warnings, "error": error,
            "loaded": loaded["shard"][f"w{runtime.rank}"].tolist()}


def test_two_ranks_checksum_their_own_files_and_agree_on_damage(tmp_path):
    rank0, rank1 = run_on_ranks(two_rank_job, 2, str(tmp_path))
    assert rank0["files"] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert rank0["chosen"] == rank1["chosen"] == str(tmp_path / "step_00000001")
    assert rank0["error"] == rank1["error"] and rank0["error"].startswith(f"{tmp_path / 'step_00000002' / '__1_0.distcp'}:")
    assert "step_00000002" in rank0["warnings"][0] and rank0["warnings"] == rank1["warnings"]
    assert rank0["loaded"] == [0.0] * 256 and rank1["loaded"] == [1.0] * 256


# -- through the command line --------------------------------------------------------

@pytest.fixture(scope="module")
def two_checkpoint_run(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "run"
    code, stderr = cli(["train", "--recipe", "tiny", "--data", str(tiny_dataset), "--out", str(out),
                        "train.max_steps=2", "checkpoint.every=1"])
    assert code == 0, stderr[-3000:]
    return out


def _copy(run: Path, tmp: Path) -> Path:
    shutil.copytree(run, tmp / "run")
    return tmp / "run"


def test_resume_falls_back_to_the_previous_intact_checkpoint(two_checkpoint_run, tiny_dataset, tmp_path):
    run = _copy(two_checkpoint_run, tmp_path)
    _truncate(_data_file(run / "checkpoints" / "step_00000002"))
    code, stderr = cli(["train", "--recipe", "tiny", "--data", str(tiny_dataset), "--out", str(run), "train.max_steps=3"])
    assert code == 0, stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == str(run / "checkpoints" / "step_00000001") and summary["steps"] == 3
    (warning,) = [line for line in stderr.splitlines() if line.startswith("warning: resuming from")]
    assert "step_00000002" in warning and "truncated" in warning


@pytest.mark.parametrize("command", ["export", "load_from"])
def test_export_and_load_from_refuse_a_damaged_checkpoint(two_checkpoint_run, tiny_dataset, tmp_path, command):
    checkpoint = _copy(two_checkpoint_run, tmp_path) / "checkpoints" / "step_00000002"
    _flip(*_entry_middle(checkpoint, "progress.step"))
    args = (["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.pt")] if command == "export" else
            ["train", "--recipe", "tiny", "--data", str(tiny_dataset), "--out", str(tmp_path / "new"),
             f"checkpoint.load_from={checkpoint}", "train.max_steps=1"])
    code, stderr = cli(args)
    assert code == 2 and "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"torchrec-app {args[0]}: error: {checkpoint / '__0_0.distcp'}: checksum mismatch")
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "new" / "checkpoints").exists()


def test_export_of_a_run_names_the_damaged_newest_and_the_intact_one(two_checkpoint_run, tmp_path):
    run = _copy(two_checkpoint_run, tmp_path)
    (run / "checkpoints" / "step_00000002" / "__0_0.distcp").unlink()
    code, stderr = cli(["export", "--run", str(run), "--out", str(tmp_path / "m.pt")])
    assert code == 2
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert f"{run / 'checkpoints' / 'step_00000002' / '__0_0.distcp'}: missing" in last
    assert f"--checkpoint {run / 'checkpoints' / 'step_00000001'}" in last
    code, _ = cli(["export", "--checkpoint", str(run / "checkpoints" / "step_00000001"), "--out", str(tmp_path / "m.pt")])
    assert code == 0 and torch.load(tmp_path / "m.pt", weights_only=True)
