"""One benchmark measurement = one real training run, launched the way users launch training:

    torchx run -s local_cwd launch/components.py:train --nproc N --rdzv_port P \\
        --recipe R --data D --out RUN_DIR overrides...

(the repository's torchx ``train`` component: ``dist.ddp`` → torchrun, one process per
rank, gloo on CPU, nccl on GPUs). The results are read
back from the run directory the trainer writes: ``summary.json`` (samples/s, train
seconds, peak RSS, AUC/logloss, oracle gaps), ``metrics.jsonl`` (validation AUC over
samples seen) and, when profiled, ``step_profile.json``. The child's output goes to
``RUN_DIR/train.log``; a failed run raises with the tail of that log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrec_app.distributed.runtime import free_port
from torchrec_app.tools.bench.cases import BenchCase


class BenchRunError(RuntimeError):
    """A training run of the benchmark failed; the message names it and shows its log's tail."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one training run left behind."""

    run_dir: str
    """The run directory (config.json, plan, metrics.jsonl, summary.json, train.log)."""
    config: dict[str, Any]
    """config.json: the resolved config the run trained with."""
    summary: dict[str, Any]
    """summary.json (without its history)."""
    evals: list[dict[str, Any]]
    """Validation records of metrics.jsonl: step, samples, train_seconds, valid_auc, valid_logloss."""
    profile: dict[str, Any] | None
    """step_profile.json, if the run was profiled."""
    wall_seconds: float
    """Wall time of the whole subprocess (start-up, planning, training, evaluation)."""


#: The repository's torchx components (the Docker image and source checkouts hold them).
COMPONENTS = Path(__file__).resolve().parents[3] / "launch" / "components.py"


def train_command(case: BenchCase, data: Path, run_dir: Path, overrides: list[str]) -> list[str]:
    """The torchx command line of one run of ``case`` (the README's launch path)."""
    torchx = str(Path(sys.executable).with_name("torchx"))
    return [
        torchx, "run", "-s", "local_cwd", f"{COMPONENTS}:train", "--nproc", str(case.nproc),
        "--rdzv_port", str(free_port()), "--recipe", case.recipe, "--data", str(data), "--out", str(run_dir),
        *case.overrides, *overrides,
    ]  # fmt: skip


def run_training(case: BenchCase, data: Path, run_dir: Path, overrides: list[str], timeout_s: float) -> RunResult:
    """Train ``case`` with ``overrides`` appended, into a fresh ``run_dir``; return its results."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("summary.json", "metrics.jsonl", "step_profile.json"):
        (run_dir / stale).unlink(missing_ok=True)
    log = run_dir / "train.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    start = time.perf_counter()
    with open(log, "w") as out:
        try:
            code = subprocess.run(train_command(case, data, run_dir, overrides), stdout=out, stderr=subprocess.STDOUT,
                                  env=env, timeout=timeout_s).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.perf_counter() - start
    summary_path = run_dir / "summary.json"
    if code != 0 or not summary_path.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BenchRunError(f"bench case {case.name}: training exited with {code} after {wall:.0f}s; "
                            f"log {log} ends with:\n{tail}")  # fmt: skip
    summary = json.loads(summary_path.read_text())
    summary.pop("history", None)
    evals = [r for r in _read_jsonl(run_dir / "metrics.jsonl") if "valid_auc" in r]
    profile_path = run_dir / "step_profile.json"
    profile = json.loads(profile_path.read_text()) if profile_path.exists() else None
    config = json.loads((run_dir / "config.json").read_text())
    return RunResult(run_dir=str(run_dir), config=config, summary=summary, evals=evals, profile=profile, wall_seconds=wall)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
