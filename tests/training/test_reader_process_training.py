"""data.reader_process on 2 real gloo ranks: a run interrupted and resumed with the reader process
ends with the parameters of an uninterrupted run with the reader thread, and leaves no child behind."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import torch

from tests.multiprocess import run_on_ranks
from torchrec_app.config import resolve_config
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.tools.export import export_checkpoint
from torchrec_app.training.checkpoint import latest_checkpoint
from torchrec_app.training.run_dir import RunDir
from torchrec_app.training.trainer import Trainer

TRAIN = ["train.epochs=2", "train.max_steps=12", "train.batch_size=1024", "sharding.types=row_wise", "checkpoint.keep=0"]


def _train(runtime: Runtime, data: str, out: str, overrides: list[str]) -> dict:
    config = resolve_config("tiny", TRAIN + overrides)
    return Trainer(config, runtime, Path(data), RunDir(Path(out), enabled=runtime.is_main)).train()


def thread_then_process_job(runtime: Runtime, data: str, root: str) -> dict:
    thread = _train(runtime, data, f"{root}/thread", [])
    first = _train(runtime, data, f"{root}/process", ["data.reader_process=true", "train.max_steps=5"])
    # resumes at step 5 and crosses into the second epoch (8 steps per epoch)
    second = _train(runtime, data, f"{root}/process", ["data.reader_process=true"])
    return {"thread": thread, "first": first, "second": second, "children": [p.name for p in multiprocessing.active_children()]}


def test_resumed_run_with_reader_process_ends_with_the_thread_runs_parameters(tiny_dataset, tmp_path):
    results = run_on_ranks(thread_then_process_job, 2, str(tiny_dataset), str(tmp_path))
    result = results[0]
    assert result["second"]["resumed_from"].endswith("step_00000005")
    assert result["second"]["steps"] == result["thread"]["steps"] == 12
    assert result["second"]["samples"] == result["thread"]["samples"]
    assert [r["children"] for r in results] == [[], []]  # every reader process joined
    exported = {}
    for name in ("thread", "process"):
        export_checkpoint(latest_checkpoint(tmp_path / name / "checkpoints"), tmp_path / f"{name}.pt", per_tensor=False)
        exported[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    assert exported["thread"].keys() == exported["process"].keys()
    for key, value in exported["thread"].items():
        torch.testing.assert_close(exported["process"][key], value, rtol=0, atol=0, msg=key)
