"""The GPU check, dry-run on the CPU: the launch script runs every part on the real code path.

On the CPU the parts run with tiny shapes and the GPU shapes are planned for one CUDA
device; the UVM-caching kernel is CUDA-only, so that part only plans and reports "needs a GPU".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from tests.data.conftest import REPO
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.tools.bench import gpu_check


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # set by in-process tests
    env = {k: v for k, v in os.environ.items() if k not in launcher} | {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", os.path.join(REPO, "launch", "gpu_check.sh"), "--dry-run", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    return done, out


def test_every_part_prints_one_line_and_writes_its_json(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("gpu_check ")]
    assert [line.split(":")[0] for line in lines] == [f"gpu_check {p}" for p in gpu_check.PARTS]
    assert done.stdout.startswith("host: python") and "torchrec" in done.stdout  # what the host runs, first
    for part in gpu_check.PARTS:
        result = json.loads((out / f"{part}.json").read_text())
        assert result["part"] == part and result["environment"]["device_type"] == "cpu"
        assert result["environment"]["versions"]["torch"]


def test_the_dry_run_checks_what_the_cpu_can_run(dry_run):
    _, out = dry_run
    results = {p: json.loads((out / f"{p}.json").read_text()) for p in gpu_check.PARTS}
    equivalence = results["sharded_equivalence"]
    assert equivalence["status"] == "pass" and equivalence["weights_moved"] > 1e-3 and equivalence["logit_diff"] < 1e-4
    dcnv2 = results["dcnv2_mlperf"]
    assert dcnv2["status"] == "pass" and dcnv2["samples_per_second"] > 0 and dcnv2["ids_per_sample"] == 214
    assert dcnv2["step_split"]["ms_per_step"]["embedding_lookup"] > 0
    assert results["fp16_tables"]["status"] == "pass" and results["fp16_tables"]["table_bytes_fp16_over_fp32"] == 0.5
    assert sum(dcnv2["gpu_shape_plan"].values()) == 26  # the GPU shape plans for one device
    uvm = results["uvm_caching"]
    assert uvm["status"] == gpu_check.NEEDS_GPU and uvm["gpu_shape_plan"] == "table_wise/fused_uvm_caching"
    assert uvm["gpu_shape_table_gb"] > 2 * uvm["gpu_shape_hbm_share_gb"]  # the table is far bigger than the HBM it is given


def test_a_failing_part_is_recorded_and_the_next_still_runs(tmp_path, capsys):
    import torch

    runtime = Runtime(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend="gloo")
    no_rows = replace(gpu_check.Shapes.tiny(), rows_cap=0)  # bad input: tables of 0 rows
    results = gpu_check.run_parts(["dcnv2_mlperf", "uvm_caching"], no_rows, str(tmp_path), runtime)
    assert results["dcnv2_mlperf"]["status"] == "error" and "Error" in results["dcnv2_mlperf"]["error"]
    assert results["uvm_caching"]["status"] == gpu_check.NEEDS_GPU
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("gpu_check dcnv2_mlperf: error") and lines[1].startswith("gpu_check uvm_caching: needs a GPU")
    assert json.loads((tmp_path / "dcnv2_mlperf.json").read_text())["traceback"]
