"""Shared fixtures: a small generated Criteo-format dataset, preprocessed once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrec_app.cli import main as cli_main

TINY_ROWS = 20_003  # deliberately not a multiple of any batch size x world size


def make_dataset(root: Path, rows: int, seed: int = 0) -> Path:
    """Generate ``rows`` rows of planted-signal data and preprocess them; return the Parquet dir."""
    raw, out = root / "raw", root / "parquet"
    assert cli_main(["generate", "--rows", str(rows), "--seed", str(seed), "--out", str(raw)]) == 0
    assert cli_main([
        "preprocess", "--train", str(raw / "train.txt"), "--valid", str(raw / "valid.txt"),
        "--test", str(raw / "test.txt"), "--out", str(out),
    ]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """~20k rows of generated data (8:1:1), preprocessed to Parquet."""
    return make_dataset(tmp_path_factory.mktemp("tiny_dataset"), TINY_ROWS)
