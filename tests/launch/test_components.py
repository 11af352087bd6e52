"""torxchx components: valid definitions, and a real 2-process local_cwd run of the tiny recipe."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from torchx.components.component_test_base import ComponentTestCase

import launch.components as components

ROOT = Path(__file__).resolve().parents[2]


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchx_local_cwd_runs_tiny_recipe_on_two_processes(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "torchx"), "run", "-s", "local_cwd", "launch/components.py:train",
         "--nproc", "2", "--rdzv_port", str(_free_port()), "--recipe", "tiny", "--data", str(tiny_dataset),
         "--out", str(out), "train.max_steps=10"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 10
    assert summary["valid_auc"] is not None
