"""Shared by the training tests: the command line run in-process, and one short run with two checkpoints."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from torchrec_app.cli import main as cli_main


def cli(args: list[str]) -> tuple[int, str]:
    """Run ``torchrec-app ARGS`` in this process (a single-process run); return exit status and stderr."""
    saved = dict(os.environ)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = cli_main(args)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, err.getvalue()


@pytest.fixture(scope="session")
def two_checkpoint_run(tiny_dataset, tmp_path_factory) -> Path:
    """A real single-process run of the tiny recipe with checkpoints at steps 1 and 2 (copy it before changing it)."""
    out = tmp_path_factory.mktemp("two_checkpoints") / "run"
    code, stderr = cli(["train", "--recipe", "tiny", "--data", str(tiny_dataset), "--out", str(out),
                        "train.max_steps=2", "checkpoint.every=1"])
    assert code == 0, stderr[-3000:]
    return out
