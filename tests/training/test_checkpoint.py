"""Checkpoints on real gloo ranks: exact resume, resharding, crash safety, mismatch errors,
export, manifests, and a SIGKILLed worker that torchrun restarts. Damage and crafted
payloads: test_checkpoint_integrity.py and test_checkpoint_security.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.api import CheckpointException

from tests.multiprocess import run_on_ranks
from torchrec_app.config import ConfigError, resolve_config
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.reader import num_batches
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.tools.export import export_checkpoint, read_unsharded
from torchrec_app.training.checkpoint import (
    MANIFEST_FILE,
    UnsafeCheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from torchrec_app.training.checkpointer import WEIGHTS_ONLY
from torchrec_app.training.run_dir import RunDir
from torchrec_app.training.trainer import Trainer

TRAIN = ["train.epochs=2", "train.batch_size=256", "sharding.types=row_wise", "checkpoint.keep=0"]


def _trainer(runtime: Runtime, data: str, out: str, overrides: list[str]) -> Trainer:
    return Trainer(resolve_config("tiny", overrides), runtime, Path(data), RunDir(Path(out), enabled=runtime.is_main))


class _FailsToSerialize:
    def __reduce__(self):
        raise RuntimeError("injected crash while writing this rank's shards")


def resume_and_crash_job(runtime: Runtime, data: str, root: str) -> dict:
    full = _trainer(runtime, data, f"{root}/full", TRAIN).train()
    first = _trainer(runtime, data, f"{root}/resumed", TRAIN + ["train.max_steps=37"]).train()
    second = _trainer(runtime, data, f"{root}/resumed", TRAIN).train()

    # A crash between shard writes: rank 1 fails while writing step 999; nothing may be renamed.
    trainer = _trainer(runtime, data, f"{root}/full", TRAIN)
    state = trainer.state_dict()
    if runtime.rank == 1:
        state["progress"]["poison"] = _FailsToSerialize()
    crashed = False
    try:
        save_checkpoint(trainer.checkpointer.root, 999, state, keep=0)
    except CheckpointException:  # the injected failure, raised on every rank by DCP
        crashed = True
    latest = latest_checkpoint(trainer.checkpointer.root)
    trainer.checkpointer.load(latest, trainer)  # still loadable
    return {"full": full, "first": first, "second": second, "crashed": crashed, "latest": str(latest),
            "after_crash_step": trainer.step}


def reshard_job(runtime: Runtime, data: str, checkpoint: str, sharding_type: str) -> dict:
    trainer = _trainer(runtime, data, f"{checkpoint}-load-{runtime.world_size}", TRAIN[:2] + [f"sharding.types={sharding_type}"])
    trainer.checkpointer.load(Path(checkpoint), trainer, parts=WEIGHTS_ONLY)
    names = [k for k in trainer.model.state_dict() if "embedding_bags" in k]
    expected = read_unsharded(Path(checkpoint), [f"model.{n}" for n in names])
    worst = 0.0
    for name, value in trainer.model.state_dict().items():
        if name in names:
            for shard in value.local_shards():
                (r, c), (h, w) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                worst = max(worst, (shard.tensor - expected[f"model.{name}"][r:r + h, c:c + w]).abs().max().item())
    mismatch = ""
    if runtime.world_size == 1:
        wrong = _trainer(runtime, data, f"{checkpoint}-wrong", TRAIN[:2] + ["sparse.embedding_dim=4"])
        try:
            wrong.checkpointer.load(Path(checkpoint), wrong, parts=WEIGHTS_ONLY)
        except ConfigError as err:
            mismatch = str(err)
    return {"max_diff": worst, "types": set(trainer.plan.plan["model.sparse_arch.embedding_bag_collection"][t].sharding_type
                                             for t in trainer.plan.plan["model.sparse_arch.embedding_bag_collection"]),
            "mismatch": mismatch}


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return root, run_on_ranks(resume_and_crash_job, 2, str(tiny_dataset), str(root))[0]


def _exported(run: Path, tmp: Path) -> dict[str, torch.Tensor]:
    path = tmp / f"{run.name}.pt"
    export_checkpoint(latest_checkpoint(run / "checkpoints"), path, per_tensor=False)
    return torch.load(path, weights_only=True)


def test_resumed_run_ends_with_the_uninterrupted_parameters(runs, tmp_path):
    root, result = runs
    assert result["first"]["steps"] == 37
    assert result["second"]["resumed_from"].endswith("step_00000037")
    assert result["second"]["steps"] == result["full"]["steps"]
    assert result["second"]["samples"] == result["full"]["samples"]  # no batch seen twice or never
    full, resumed = _exported(root / "full", tmp_path), _exported(root / "resumed", tmp_path)
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=1e-5, atol=1e-6, msg=name)
    assert result["second"]["test_auc"] == pytest.approx(result["full"]["test_auc"], abs=1e-4)


def test_crash_between_shard_writes_leaves_previous_checkpoint(runs):
    root, result = runs
    assert result["crashed"]
    assert result["latest"].endswith(f"step_{result['full']['steps']:08d}")
    assert result["after_crash_step"] == result["full"]["steps"]
    assert not (root / "full" / "checkpoints" / "step_00000999").exists()


@pytest.mark.parametrize("world_size,sharding_type", [(1, "table_wise"), (4, "column_wise")])
def test_checkpoint_from_two_row_wise_ranks_reshards(runs, tiny_dataset, world_size, sharding_type):
    root, result = runs
    checkpoint = str(latest_checkpoint(root / "full" / "checkpoints"))
    (loaded, *_) = run_on_ranks(reshard_job, world_size, str(tiny_dataset), checkpoint, sharding_type)
    assert loaded["types"] == {sharding_type}
    assert loaded["max_diff"] == 0.0
    if world_size == 1:
        assert "does not match the configured model" in loaded["mismatch"]
        assert "checkpoint has shape (" in loaded["mismatch"] and "t_C1.weight" in loaded["mismatch"]


def test_export_per_tensor_matches_single_file(runs, tmp_path):
    root, _ = runs
    checkpoint = latest_checkpoint(root / "full" / "checkpoints")
    single = _exported(root / "full", tmp_path)
    export_checkpoint(checkpoint, tmp_path / "per", per_tensor=True)
    index = json.loads((tmp_path / "per" / "index.json").read_text())
    assert index.keys() == single.keys()
    for name, file in index.items():
        torch.testing.assert_close(torch.load(tmp_path / "per" / file, weights_only=True), single[name])


def test_every_ranks_shards_are_in_the_manifest(runs):
    root, _ = runs
    checkpoint = latest_checkpoint(root / "full" / "checkpoints")
    files = json.loads((checkpoint / MANIFEST_FILE).read_text())["files"]
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= set(files)
    assert set(files) == {p.name for p in checkpoint.iterdir()} - {MANIFEST_FILE}
    verify_checkpoint(checkpoint)  # no process group: one process checks them all


def test_tampered_metadata_is_refused(runs, tmp_path):
    import pickle
    import shutil

    root, _ = runs
    bad = tmp_path / "bad"
    shutil.copytree(latest_checkpoint(root / "full" / "checkpoints"), bad)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (bad / ".metadata").write_bytes(pickle.dumps(Evil()))
    (bad / MANIFEST_FILE).unlink()  # as an older checkpoint: the allow-list, not a checksum, refuses it
    with pytest.raises(UnsafeCheckpointError, match=r"\.metadata: refers to posix\.system"):
        load_checkpoint(bad, {})


def test_killed_worker_restarts_and_resumes(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    torchrun = Path(sys.executable).parent / "torchrun"
    # One restart must be enough: the restarted round gets its own store keys
    # (runtime._store_for_this_attempt), so it never dials the killed rank's old address.
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "--max_restarts", "1", "-m", "torchrec_app.train", "--recipe", "tiny",
           "--data", str(tiny_dataset), "--out", str(out), "train.epochs=12", "train.batch_size=128",
           "checkpoint.every=20"]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as log_file:  # a file, not a pipe: an unread pipe fills and blocks the workers
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while latest_checkpoint(out / "checkpoints") is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert workers, "no worker processes found"
        os.kill(int(workers[-1]), signal.SIGKILL)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log.read_text()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["restarts"] == 1
    assert "/checkpoints/step_" in summary["resumed_from"]
    train_rows = load_metadata(tiny_dataset).split_rows["train"]
    assert summary["steps"] == 12 * num_batches(train_rows, 128, 2)
    assert summary["samples"] == 12 * train_rows
