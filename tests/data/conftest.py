"""Helpers of the data tests: fixture paths, a reference parser, small generated datasets."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from torchrec_app.config.data import GeneratorConfig, PreprocessConfig, ReaderConfig
from torchrec_app.data.generate import generate_dataset
from torchrec_app.data.preprocess import preprocess_dataset
from torchrec_app.data.reader import read_batches
from torchrec_app.data.splits import explicit_sources

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "data", "fixtures")
TINY_TSV = os.path.join(FIXTURES, "criteo_tiny.tsv")
TINY_CSV = os.path.join(FIXTURES, "criteo_tiny_header.csv")


def reference_rows(path: str) -> list[tuple[float, list[float], list[int | None]]]:
    """(label, transformed dense, raw ids or None) per row, parsed the slow obvious way."""
    rows = []
    with open(path) as f:
        lines = f.read().splitlines()
    delimiter = "\t" if "\t" in lines[0] else ","
    if lines[0].startswith("label"):
        lines = lines[1:]
    for line in lines:
        fields = line.split(delimiter)
        dense = [np.float32(math.log1p(max(float(v), 0.0))) if v else np.float32(0.0) for v in fields[1:14]]
        ids = [int(v, 16) if v else None for v in fields[14:]]
        rows.append((float(fields[0]), dense, ids))
    return rows


def read_all(data_dir: str, split: str, *, batch_size: int = 7, rank: int = 0, world_size: int = 1, **reader) -> list:
    """Every real row of a split as (label, dense list, per-feature id lists), in order."""
    config = ReaderConfig(**{"prefetch_batches": 2, **reader})
    rows = []
    for batch in read_batches(data_dir, split, batch_size=batch_size, rank=rank, world_size=world_size, config=config,
                              shuffle=False, seed=0):  # fmt: skip
        rows.extend(batch_rows(batch))
    return rows


def batch_rows(batch) -> list:
    """Real rows of a batch as (label, dense, [ids of each feature])."""
    kjt = batch.sparse_features
    size = len(batch.labels)
    lengths = kjt.lengths().view(len(kjt.keys()), size).tolist()
    values = kjt.values().tolist()
    per_feature, pos = [], 0
    for feature_lengths in lengths:
        bags = []
        for n in feature_lengths:
            bags.append(values[pos : pos + n])
            pos += n
        per_feature.append(bags)
    labels, dense, weights = batch.labels.tolist(), batch.dense_features.tolist(), batch.weights.tolist()
    return [(labels[i], dense[i], [bags[i] for bags in per_feature]) for i in range(size) if weights[i] != 0]


def write_lines(path: str, lines: list[str]) -> str:
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def make_line(label: str = "1", dense: list[str] | None = None, sparse: list[str] | None = None, sep: str = "\t") -> str:
    dense = dense if dense is not None else [str(i) for i in range(13)]
    sparse = sparse if sparse is not None else [f"{0x1000 + i:08x}" for i in range(26)]
    return sep.join([label, *dense, *sparse])


def preprocess(out_dir: str, train: list[str], valid: list[str] | None = None, test: list[str] | None = None, **config):
    files = {"train": train, "valid": valid or [], "test": test or []}
    return preprocess_dataset(str(out_dir), explicit_sources(files), PreprocessConfig(**{"workers": 1, **config}), log=lambda *a: None)


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """A 20k-row generated dataset, preprocessed (one-hot, vocab ids): (text dir, parquet dir)."""
    root = tmp_path_factory.mktemp("generated")
    text = str(root / "text")
    generate_dataset(text, GeneratorConfig(rows=20_000, seed=3))
    out = str(root / "parquet")
    preprocess(out, [f"{text}/train.txt"], [f"{text}/valid.txt"], [f"{text}/test.txt"], row_group_rows=1000)
    return text, out
