"""The trainer end to end on 2 real gloo ranks, on generated data with a planted signal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.multiprocess import run_on_ranks
from torchrec_app.config import resolve_config
from torchrec_app.data.metadata import load_metadata
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.training.run_dir import RunDir
from torchrec_app.training.trainer import Trainer


def train_on_rank(runtime: Runtime, data: str, out: str, overrides: list[str]) -> dict:
    config = resolve_config("tiny", overrides)
    summary = Trainer(config, runtime, Path(data), RunDir(Path(out), enabled=runtime.is_main)).train()
    return summary


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summaries = run_on_ranks(train_on_rank, 2, str(tiny_dataset), str(out),
                             ["train.epochs=2", "train.batch_size=256", "train.eval_every=20", "train.early_stop_patience=100"])
    return out, summaries


def test_learning_beats_chance_on_planted_signal(trained):
    _, (summary, _) = trained
    assert summary["valid_auc"] > 0.6, summary
    assert summary["test_auc"] > 0.6, summary
    assert summary["test_auc"] <= summary["test_oracle_auc"] + 0.03  # cannot beat the truth by much


def test_every_rank_agrees_on_the_summary(trained):
    _, (rank0, rank1) = trained
    for key in ("valid_auc", "test_auc", "samples", "steps"):
        assert rank0[key] == rank1[key], key


def test_no_row_dropped_or_repeated(trained, tiny_dataset):
    _, (summary, _) = trained
    rows = load_metadata(tiny_dataset).split_rows
    assert summary["samples"] == 2 * rows["train"]  # two epochs, padding excluded
    assert summary["valid_rows"] == rows["valid"] and summary["test_rows"] == rows["test"]


def test_run_directory_holds_what_a_user_reads(trained):
    out, (summary, _) = trained
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "plan.txt", "plan.json", "metrics.jsonl", "summary.json"} <= files
    on_disk = json.loads((out / "summary.json").read_text())
    for key in ("valid_auc", "valid_logloss", "test_auc", "test_logloss", "samples_per_second", "train_seconds",
                "world_size", "backend", "model", "sharding_types", "peak_rss_mb"):
        assert on_disk[key] is not None, key
    assert on_disk["world_size"] == 2 and on_disk["backend"] == "gloo" and on_disk["model"] == "dcnv2"
    assert set(on_disk["sharding_types"]) == {f"t_C{i}" for i in range(1, 27)}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records) and any("valid_auc" in r for r in records)
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2


def test_final_metrics_come_from_the_best_validation_without_scoring_it_twice(trained):
    _, (summary, _) = trained
    validations = [r for r in summary["history"] if "valid_logloss" in r]
    assert len({r["step"] for r in validations}) == len(validations)  # each validation once
    best = min(validations, key=lambda r: r["valid_logloss"])
    assert summary["best_step"] == best["step"]
    assert summary["valid_logloss"] == best["valid_logloss"] and summary["valid_auc"] == best["valid_auc"]
    assert summary["best_epoch"] == best["epoch"] == (best["step"] - 1) // (summary["steps"] // 2)
    assert not summary["early_stopped"]  # patience 100 never ran out
