"""torchx components: valid definitions, a real 2-process local_cwd run of the tiny recipe,
and a restart after a worker is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torchx.components.component_test_base import ComponentTestCase

import launch.components as components
from torchrec_app.training.checkpoint import latest_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TORCHX = str(Path(sys.executable).parent / "torchx")


class ComponentDefinitionTest(ComponentTestCase):
    def test_components_validate(self):
        for name in ("train", "train_gpu", "smoke"):
            self.validate(components, name)

    def test_train_component_runs_our_module_on_nnodes_x_nproc(self):
        app = components.train("train.epochs=2", recipe="tiny", data="/d", nnodes=1, nproc=2)
        role = app.roles[0]
        command = " ".join([role.entrypoint, *role.args])
        assert "-m torchrec_app.train" in command and "--nproc_per_node 2" in command.replace("=", " ")
        assert "--recipe tiny" in command and "--data /d" in command and "train.epochs=2" in command
        assert components.train_gpu(data="/d").roles[0].resource.gpu == 8

    def test_max_restarts_goes_to_torchrun_and_max_retries_to_the_scheduler(self):
        for component in (components.train, components.train_gpu):
            role = component(data="/d", max_restarts=3, max_retries=2).roles[0]
            assert role.args[1].startswith("torchrun --max_restarts 3 --rdzv_backend"), role.args
            assert role.max_retries == 2
            assert component(data="/d").roles[0].args[1].startswith("torchrun --max_restarts 0 ")
        with pytest.raises(ValueError, match="--max_restarts must be >= 0"):
            components.train(data="/d", max_restarts=-1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchx_train(data: Path, out: Path, *args: str) -> list[str]:
    return [TORCHX, "run", "-s", "local_cwd", "launch/components.py:train", "--nproc", "2",
            "--rdzv_port", str(_free_port()), *args, "--recipe", "tiny", "--data", str(data), "--out", str(out)]


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def test_torchx_local_cwd_runs_tiny_recipe_on_two_processes(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(_torchx_train(tiny_dataset, out) + ["train.max_steps=10"],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 10
    assert summary["valid_auc"] is not None


def _first_attempt_worker(out: Path, rank: int) -> int | None:
    """The pid of the training worker of rank ``rank`` in torchrun's first attempt of the job
    writing to ``out`` (its command line names ``out``; torchrun put RANK and the restart
    count in its environment), or None if there is none (yet)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:  # gone, or not ours
            continue
        if str(out).encode() in cmdline and {f"RANK={rank}".encode(), b"TORCHELASTIC_RESTART_COUNT=0"} <= environ:
            return int(proc.name)
    return None


def test_torchx_max_restarts_restarts_a_killed_worker_from_the_last_checkpoint(tiny_dataset, tmp_path):
    """The README's restart path: a rank dies (SIGKILL, mid-training, after a checkpoint);
    torchrun restarts both ranks once, they resume from the checkpoint, the job succeeds."""
    out = tmp_path / "run"
    steps_per_epoch = -(-16_003 // (64 * 2))  # the tiny dataset's train rows over the global batch
    job = subprocess.Popen(
        _torchx_train(tiny_dataset, out, "--max_restarts", "1") + ["train.epochs=2", "checkpoint.every=50"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(out / "checkpoints") is None:
            assert job.poll() is None and time.monotonic() < deadline, "the job ended or stalled before its first checkpoint"
            time.sleep(0.05)
        victim = _first_attempt_worker(out, rank=1)
        assert victim is not None, "found no rank-1 worker of the first attempt"
        os.kill(victim, signal.SIGKILL)
        output, _ = job.communicate(timeout=400)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-5000:]
    assert "SUCCEEDED" in output, output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["restarts"] == 1
    assert summary["resumed_from"] and Path(summary["resumed_from"]).name.startswith("step_"), summary["resumed_from"]
    assert summary["steps"] == 2 * steps_per_epoch and summary["world_size"] == 2
