"""Closed-form models (EASE): solve, score with the task's evaluator, write the same run directory.

A model whose "training" is one solve has no steps, optimizers or checkpoints, so it does
not enter the loop (:mod:`.trainer`); everything after training is shared with it: the
task's evaluator over the valid and test splits (read by the same reader and batch maker),
``details/<split>.parquet`` through the validator, and the run directory's
``config.json``, ``metadata.json``, ``metrics.jsonl`` and ``summary.json`` with the same keys
(``valid_ndcg@10``, ``test_recall@10``, ..., ``train_seconds``, ``peak_rss_mb``).

One process: refused under a launcher with more than one rank (there is nothing to share).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import AppConfig
from torchrec_app.data.metadata import METADATA_FILE, load_metadata
from torchrec_app.data.reader import read_batches
from torchrec_app.models import task_for
from torchrec_app.training.run_dir import RunDir
from torchrec_app.training.trainer import peak_rss_mb
from torchrec_app.training.validator import Validator


def check_single_process(model_name: str, world_size: int) -> None:
    """``ConfigError`` when a closed-form model is launched on more than one process.

    >>> check_single_process("ease", 2)
    Traceback (most recent call last):
    ...
    torchrec_app.config.errors.ConfigError: model.name=ease is solved in closed form on one process (nothing to shard or average); launch it with --nproc 1 (torchx run ... launch/components.py:train --nproc 1 --recipe ease ...) or run `torchrec-app train` directly
    """
    if world_size > 1:
        raise ConfigError(f"model.name={model_name} is solved in closed form on one process (nothing to shard or average); "
                          f"launch it with --nproc 1 (torchx run ... launch/components.py:train --nproc 1 --recipe {model_name} ...) "
                          "or run `torchrec-app train` directly")  # fmt: skip


def fit_closed_form(config: AppConfig, data_dir: Path, run_dir: RunDir, log=print) -> dict[str, Any]:
    """Solve the task's model on the train split, evaluate valid and test, write the run directory; the summary."""
    metadata = load_metadata(str(data_dir))
    task = task_for(config.model.name)
    if metadata.kind != task.data_kind:
        raise ValueError(f"{data_dir}: a {metadata.kind!r} dataset, but model.name={config.model.name} trains on {task.data_kind!r} data")
    run_dir.write_json("config.json", dataclasses.asdict(config))
    run_dir.write_json(METADATA_FILE, metadata.to_json())
    start = time.perf_counter()
    model = task.fit(config, metadata, str(data_dir))
    train_seconds = time.perf_counter() - start
    log(f"solved {config.model.name} in {train_seconds:.1f} s")
    batch_maker = task.batch_maker(config, metadata, str(data_dir)) if task.batch_maker else None
    batch_size = config.train.eval_batch_size or config.train.batch_size  # users scored at a time

    def batches(split: str):
        return read_batches(str(data_dir), split, batch_size=batch_size, rank=0, world_size=1, config=config.data,
                            shuffle=False, seed=config.train.seed, batch_maker=batch_maker)  # fmt: skip

    validator = Validator(task, config.train, lambda: task.make_evaluator(config, metadata), batches, 1, run_dir.path / "best",
                          log, details_dir=run_dir.path / "details")  # fmt: skip
    summary: dict[str, Any] = {
        "recipe": config.recipe, "model": config.model.name, "task": task.name, "world_size": 1, "backend": "none",
        "device": "cpu", "steps": 0, "epochs_trained": 0, "samples": metadata.split_rows.get("train", 0),
        "train_seconds": train_seconds, "samples_per_second": 0.0, "monitor": task.monitor, "best_step": None,
        "early_stopped": False, "stop_reason": None, "closed_form": True,
    }  # fmt: skip
    for split in ("valid", "test"):
        if metadata.split_rows.get(split):
            metrics = validator.evaluate(model, split, details=True)
            summary.update({f"{split}_{k}": v for k, v in metrics.items()})
            run_dir.log_metrics({"step": 0, **{f"{split}_{k}": v for k, v in metrics.items()}})
    summary["peak_rss_mb"] = peak_rss_mb()
    if task.describe is not None:
        summary.update(task.describe(config, metadata))
    summary["history"] = []
    run_dir.write_json("summary.json", summary)
    return summary
