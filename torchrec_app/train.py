"""Train a sharded DLRM / DCNv2 model: ``torchrec-app train`` or ``python -m torchrec_app.train``.

One process (a world of one, gloo on CPU)::

    torchrec-app train --recipe default --data data/generated/parquet

Two CPU processes on this machine, through torchx (gloo)::

    torchx run -s local_cwd dist.ddp -j 1x2 -m torchrec_app.train -- --recipe default --data DIR
    torchx run -s local_cwd launch/components.py:train --nproc 2 --recipe default --data DIR

One GPU node with 8 GPUs (nccl), and two such nodes::

    torchx run -s local_cwd dist.ddp -j 1x8 -m torchrec_app.train -- --recipe criteo_1tb_dcnv2_mlperf --data DIR
    torchx run -s slurm dist.ddp -j 2x8 -m torchrec_app.train -- --recipe criteo_1tb_dcnv2_mlperf --data DIR

Each rank reads its share of the data; rank 0 writes the run directory (``--out``,
default ``runs/<recipe>-<time>``) with config, plan, metrics.jsonl and summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import torch.distributed as dist

from torchrec_app.config import AppConfig, ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", default=None, help="train with this plan JSON (from `torchrec-app plan --json`)")


def _agree_on_run_path(out: str | None, recipe: str) -> Path:
    """Rank 0 picks the run directory; every rank uses the same one.

    Under torchrun / torchx the default is named by the elastic run id, which stays the
    same when the job restarts after a failure, so the restarted job finds its checkpoints.
    """
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    default = f"runs/{recipe}-{run_id}" if run_id and run_id != "none" else f"runs/{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    choice = [out or default]
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(choice, src=0)
    return Path(choice[0])


def run(args: argparse.Namespace, config: AppConfig) -> int:
    """Run training as this process's rank; print and return the summary's verdict."""
    from dataclasses import replace

    from torchrec_app.distributed.runtime import init_runtime, shutdown_runtime
    from torchrec_app.training.run_dir import RunDir
    from torchrec_app.training.trainer import Trainer

    if not args.data:
        raise ConfigError("train needs --data DIR: a preprocessed dataset (make one with `torchrec-app generate` then `torchrec-app preprocess`, see README)")
    if args.plan:
        config = replace(config, sharding=replace(config.sharding, plan_file=args.plan))
    runtime = init_runtime()
    try:
        run_path = _agree_on_run_path(args.out, config.recipe)
        trainer = Trainer(config, runtime, Path(args.data), RunDir(run_path, enabled=runtime.is_main))
        summary = trainer.train()
        if runtime.is_main:
            brief = {k: v for k, v in summary.items() if k != "history"}
            print(json.dumps(brief, indent=2, default=str))
            print(f"run directory: {run_path}")
    finally:
        shutdown_runtime()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from torchrec_app.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
