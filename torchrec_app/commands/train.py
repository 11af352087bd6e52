"""``torchrec-app train``: train as this process's rank (see :mod:`torchrec_app.train` for launching)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from torchrec_app.config import AppConfig, ConfigError


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


def run(args: argparse.Namespace, config: AppConfig) -> int:
    """Run training as this process's rank; print the summary on rank 0."""
    from torchrec_app.distributed.runtime import init_runtime, shutdown_runtime
    from torchrec_app.tools.bench.callbacks import bench_callbacks
    from torchrec_app.training.guard import TrainingDiverged
    from torchrec_app.training.run_dir import RunDir
    from torchrec_app.training.trainer import Trainer

    if not args.data:
        raise ConfigError("train needs --data DIR: a preprocessed dataset (make one with `torchrec-app generate` then `torchrec-app preprocess`, see README)")
    if args.plan:
        config = replace(config, sharding=replace(config.sharding, plan_file=args.plan))
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
            brief = {k: v for k, v in summary.items() if k != "history"}
            print(json.dumps(brief, indent=2, default=str))
            print(f"run directory: {run_path}")
    finally:
        shutdown_runtime()
    return 0
