"""``torchrec-app train``: train as this process's rank (see :mod:`torchrec_app.train` for launching)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from torchrec_app.config import AppConfig, ConfigError

#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ('recipe', 'data', 'out')

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", default=None, help="train with this plan JSON (from `torchrec-app plan --json`)")


def agree_on_run_path(out: str | None, recipe: str) -> Path:
    """Rank 0 picks the run directory; every rank uses the same one.

    Under torchrun / torchx the default is named by the elastic run id, which stays the
    same when the job restarts after a failure, so the restarted job finds its checkpoints.
    """
    import torch.distributed as dist

    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    default = f"runs/{recipe}-{run_id}" if run_id and run_id != "none" else f"runs/{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    choice = [out or default]
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(choice, src=0)
    return Path(choice[0])


def format_result(summary: dict[str, Any], run_path: Path) -> str:
    """The end of a run on one screen: metrics per split (and the gap to the oracle when the
    data is generated), speed, memory, where early stopping stopped, and where everything is.

    >>> print(format_result({"model": "dcnv2", "recipe": "default", "task": "ctr", "world_size": 2, "backend": "gloo",
    ...     "valid_auc": 0.71234, "valid_logloss": 0.45, "valid_oracle_auc": 0.7861, "valid_auc_gap_to_oracle": 0.0738,
    ...     "test_auc": 0.7101, "test_logloss": 0.4589, "samples_per_second": 16500.0, "train_seconds": 39.2,
    ...     "peak_rss_mb": 1234.0, "steps": 250, "best_step": 150, "best_epoch": 0, "early_stopped": True,
    ...     "monitor": "logloss"}, Path("runs/x")))
    result: dcnv2 (recipe default, task ctr) on 2 gloo processes
      split   AUC     logloss  oracle AUC  gap
      valid   0.7123  0.4500   0.7861      0.0738
      test    0.7101  0.4589   -           -
      16,500 samples/s | 39.2 s training | peak memory 1,234 MiB/process
      best logloss at step 150 (epoch 0); stopped early at step 250
      run directory: runs/x (summary.json, metrics.jsonl, config.json, plan.txt)

    A multi-task run (``objectives`` in the summary) adds a line per objective under each split:

    >>> print(format_result({"model": "feed", "recipe": "feed", "task": "feed", "world_size": 1, "backend": "gloo",
    ...     "objectives": ["click", "chat"], "valid_auc": 0.7, "valid_logloss": 0.1, "valid_click/auc": 0.75,
    ...     "valid_click/logloss": 0.2, "valid_click/calibration": 1.02, "valid_oracle_click/auc": 0.79,
    ...     "valid_chat/auc": 0.65, "valid_chat/logloss": 0.05, "valid_chat/calibration": None, "samples_per_second": 900.0,
    ...     "train_seconds": 9.0, "peak_rss_mb": 450.0, "steps": 10}, Path("runs/f")).splitlines()[2:5])
    ['  valid   0.7000  0.1000   -           -', '   click  0.7500  0.2000   0.7900      0.0400  calibration 1.02', '   chat   0.6500  0.0500   -           -       calibration -']
    """
    def num(value: Any, digits: int = 4) -> str:
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    lines = [f"result: {summary['model']} (recipe {summary['recipe']}, task {summary.get('task', '?')}) on "
             f"{summary['world_size']} {summary['backend']} process{'es' if summary['world_size'] > 1 else ''}",
             "  split   AUC     logloss  oracle AUC  gap"]  # fmt: skip
    for split in ("valid", "test"):
        if summary.get(f"{split}_auc") is None and summary.get(f"{split}_logloss") is None:
            continue
        lines.append(f"  {split:<7} {num(summary.get(f'{split}_auc')):<7} {num(summary.get(f'{split}_logloss')):<8} "
                     f"{num(summary.get(f'{split}_oracle_auc')):<11} {num(summary.get(f'{split}_auc_gap_to_oracle'))}")  # fmt: skip
        for head in summary.get("objectives") or []:  # a multi-task model: one line per objective under its split
            auc, oracle = summary.get(f"{split}_{head}/auc"), summary.get(f"{split}_oracle_{head}/auc")
            gap = oracle - auc if isinstance(auc, float) and isinstance(oracle, float) else None
            lines.append(f"   {head:<6} {num(auc):<7} {num(summary.get(f'{split}_{head}/logloss')):<8} {num(oracle):<11} "
                         f"{num(gap):<7} calibration {num(summary.get(f'{split}_{head}/calibration'), 2)}")  # fmt: skip
    lines.append(f"  {summary['samples_per_second']:,.0f} samples/s | {summary['train_seconds']:.1f} s training | "
                 f"peak memory {summary['peak_rss_mb']:,.0f} MiB/process")  # fmt: skip
    stop = f"; stopped early at step {summary['steps']}" if summary.get("early_stopped") else f"; {summary['steps']} steps"
    if summary.get("stop_reason") and not summary.get("early_stopped"):
        stop = f"; stopped at step {summary['steps']} ({summary['stop_reason']})"
    if summary.get("best_step") is not None:
        lines.append(f"  best {summary.get('monitor', 'validation')} at step {summary['best_step']} "
                     f"(epoch {summary['best_epoch']}){stop}")  # fmt: skip
    lines.append(f"  run directory: {run_path} (summary.json, metrics.jsonl, config.json, plan.txt)")
    return "\n".join(lines)


def run(args: argparse.Namespace, config: AppConfig) -> int:
    """Run training as this process's rank; print the summary on rank 0."""
    from torchrec_app.data.metadata import load_metadata
    from torchrec_app.distributed.runtime import init_runtime, shutdown_runtime
    from torchrec_app.tools.bench.callbacks import bench_callbacks
    from torchrec_app.training.guard import TrainingDiverged
    from torchrec_app.training.run_dir import RunDir
    from torchrec_app.training.trainer import Trainer

    if not args.data:
        raise ConfigError("train needs --data DIR: a preprocessed dataset (make one with `torchrec-app generate` then `torchrec-app preprocess`, see README)")
    try:
        load_metadata(args.data)  # before any process group: a wrong --data is one line, not a traceback per rank
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    if args.plan:
        config = replace(config, sharding=replace(config.sharding, plan_file=args.plan))
    from torchrec_app.models import task_for

    if task_for(config.model.name).fit is not None:  # closed form (EASE): one solve on one process, no loop
        return _fit_closed_form(args, config)
    runtime = init_runtime()
    try:
        run_path = agree_on_run_path(args.out, config.recipe)
        trainer = Trainer(config, runtime, Path(args.data), RunDir(run_path, enabled=runtime.is_main),
                          callbacks=bench_callbacks(config.bench))  # fmt: skip
        try:
            summary = trainer.train()
        except TrainingDiverged as err:
            if runtime.is_main:
                print(f"torchrec-app train: error: {err}", file=sys.stderr, flush=True)
            return 1
        if runtime.is_main:
            print(format_result(summary, run_path))
    finally:
        shutdown_runtime()
    return 0


def _fit_closed_form(args: argparse.Namespace, config: AppConfig) -> int:
    """``train`` for a closed-form model (:mod:`torchrec_app.training.closed_form`): refuses more than one process."""
    from torchrec_app.training.closed_form import check_single_process, fit_closed_form
    from torchrec_app.training.run_dir import RunDir

    check_single_process(config.model.name, int(os.environ.get("WORLD_SIZE", "1")))
    run_path = Path(args.out or f"runs/{config.recipe}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        summary = fit_closed_form(config, Path(args.data), RunDir(run_path, enabled=True))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    ks = [k.removeprefix("test_") for k in summary if k.startswith("test_") and ("@" in k or k == "test_mrr")]
    print(f"result: {summary['model']} (recipe {summary['recipe']}, closed form) on 1 process, {summary['train_seconds']:.1f} s solve")
    for split in ("valid", "test"):
        if f"{split}_users" in summary:
            print(f"  {split:<6} " + "  ".join(f"{k}={summary[f'{split}_{k}']:.4f}" for k in ks) + f"  ({summary[f'{split}_users']} users)")
    print(f"  run directory: {run_path} (summary.json, metrics.jsonl, config.json, details/)")
    return 0
