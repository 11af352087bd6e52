"""Helpers of the feed data tests: a small generated feed dataset (through the CLI), read helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from torchrec_app.cli import main as cli_main
from torchrec_app.data.metadata import load_metadata

#: a small planted world: a few thousand impressions, generated and preprocessed in about a second
SMALL_WORLD = ["generate_feed.items=1500", "generate_feed.keywords=2000", "generate_feed.categories=24"]


def generate(out: Path, rows: int, *overrides: str, seed: int = 0) -> Path:
    """Raw feed files (``train|valid|test.<format>``, ``truth.json``) in ``out``."""
    assert cli_main(["generate", "--kind", "feed", "--rows", str(rows), "--seed", str(seed), "--out", str(out),
                     *SMALL_WORLD, *overrides]) == 0  # fmt: skip
    return out


def preprocess(raw: Path, out: Path, *overrides: str, ext: str = "parquet", splits=("train", "valid", "test")) -> int:
    """``preprocess --kind feed`` of the raw files in ``raw``; returns the exit code."""
    files = [arg for split in splits for arg in (f"--{split}", str(raw / f"{split}.{ext}"))]
    return cli_main(["preprocess", "--kind", "feed", *files, "--out", str(out), *overrides])


def split_table(data_dir: Path, split: str) -> pa.Table:
    """Every preprocessed row of a split, in file order."""
    meta = load_metadata(str(data_dir))
    return pa.concat_tables([pq.read_table(os.path.join(data_dir, f.path)) for f in meta.files[split]])


@pytest.fixture(scope="session")
def feed_raw(tmp_path_factory) -> Path:
    """6000 generated impressions (Parquet), shared by the read-only tests."""
    return generate(tmp_path_factory.mktemp("feed") / "raw", 6000)


@pytest.fixture(scope="session")
def feed_dataset(feed_raw, tmp_path_factory) -> Path:
    """``feed_raw`` preprocessed with the default settings (no sampling)."""
    out = tmp_path_factory.mktemp("feed_parquet") / "parquet"
    assert preprocess(feed_raw, out) == 0
    return out
