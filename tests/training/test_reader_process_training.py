"""data.reader_process through the trainer: a run interrupted and resumed with the reader process
ends with the parameters of an uninterrupted run with the reader thread, and leaves no child behind.
(A world of one, in this process: the order of one rank's batches is what is at stake, and the
reader-level tests cover a rank of two, tests/data/test_reader_process.py.)"""

from __future__ import annotations

import json
import multiprocessing

import torch

from tests.training.conftest import cli
from torchrec_app.tools.export import export_checkpoint
from torchrec_app.training.checkpoint import latest_checkpoint

TRAIN = ["train.epochs=2", "train.max_steps=24", "train.batch_size=1024", "checkpoint.keep=0"]  # 16 steps per epoch


def _train(tiny_dataset, out, *overrides: str) -> dict:
    code, stderr = cli(["train", "--recipe", "tiny", "--data", str(tiny_dataset), "--out", str(out), *TRAIN, *overrides])
    assert code == 0, stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_resumed_run_with_reader_process_ends_with_the_thread_runs_parameters(tiny_dataset, tmp_path):
    thread = _train(tiny_dataset, tmp_path / "thread")
    _train(tiny_dataset, tmp_path / "process", "data.reader_process=true", "train.max_steps=5")
    assert multiprocessing.active_children() == []  # the first run's reader process was joined
    resumed = _train(tiny_dataset, tmp_path / "process", "data.reader_process=true")  # from step 5 into the second epoch
    assert multiprocessing.active_children() == []
    assert resumed["resumed_from"].endswith("step_00000005")
    assert resumed["steps"] == thread["steps"] == 24 and resumed["samples"] == thread["samples"]
    exported = {}
    for name in ("thread", "process"):
        export_checkpoint(latest_checkpoint(tmp_path / name / "checkpoints"), tmp_path / f"{name}.pt", per_tensor=False)
        exported[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    assert exported["thread"].keys() == exported["process"].keys()
    for key, value in exported["thread"].items():
        torch.testing.assert_close(exported["process"][key], value, rtol=0, atol=0, msg=key)
