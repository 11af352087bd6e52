"""Split policies: which rows of the input files go to train, valid and test.

* ``explicit`` — ``--train FILES --valid FILES [--test FILES]``: every row of a file goes
  to the file's split.
* ``kaggle_days`` — one file (Criteo Kaggle ``train.txt``) cut by row order into 7 equal
  "days" (day ``d`` holds rows ``[d N / 7, (d + 1) N / 7)``): days 1-6 are train, day 7
  is halved by row order into valid then test (the DLRM / DCNv2 papers' split).
* ``criteo_1tb_days`` — files named ``day_0 .. day_23`` (optionally ``.gz``): days 0-22
  are train, ``day_23`` is halved by row order into valid then test (MLPerf).
* ``random`` — every row independently train/valid/test with probability 0.8/0.1/0.1,
  from a hash of the seed, the file and the row's byte offset: the same seed gives the
  same split however the work is divided among processes.

With any policy, ``--score FILES`` adds a ``score`` split: unlabeled rows (Kaggle's
``test.txt``) preprocessed with the same ids, for prediction; training ignores it.

Row positions count every data line (a skipped bad row still takes its position), so a
split does not move when bad rows are skipped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "valid", "test", "score")
LABELED_SPLITS = SPLITS[:3]
POLICIES = ("kaggle_days", "criteo_1tb_days", "random")
RANDOM_FRACTIONS = (0.8, 0.1, 0.1)
_DAY_RE = re.compile(r"day_(\d+)(\.gz)?$")


@dataclass(frozen=True, slots=True)
class SplitRule:
    """How the rows of one source file are assigned to splits.

    Attributes:
        split: every row goes here (when ``bounds`` is empty and ``seed`` is None).
        bounds: ``((end_row, split), ...)`` ascending: rows before ``end_row`` (0-based,
            in the file) go to ``split`` (row-order policies).
        seed: random policy: seed of the row hash.
    """

    split: str = ""
    bounds: tuple[tuple[int, str], ...] = ()
    seed: int | None = None

    @property
    def needs_row_numbers(self) -> bool:
        """Row-order policies, and scoring data (a row's position is its id)."""
        return bool(self.bounds) or self.split == "score"

    def assign(self, rows: np.ndarray, keys: np.ndarray, source: int) -> np.ndarray:
        """Split code (index into :data:`SPLITS`) of each row.

        Args:
            rows: 0-based row positions in the file (used by row-order rules).
            keys: byte offsets of the rows in the (decompressed) file (random rule).
            source: index of the file among the inputs (random rule).

        >>> SplitRule(bounds=((2, "train"), (3, "valid"), (4, "test"))).assign(np.arange(4), np.arange(4), 0).tolist()
        [0, 0, 1, 2]
        """
        if self.seed is not None:
            u = _uniform_hash(keys.astype(np.uint64), np.uint64(self.seed), np.uint64(source))
            return np.searchsorted(np.cumsum(RANDOM_FRACTIONS)[:-1], u, side="right").astype(np.int8)
        if self.bounds:
            ends = np.array([end for end, _ in self.bounds])
            codes = np.array([SPLITS.index(split) for _, split in self.bounds], dtype=np.int8)
            return codes[np.minimum(np.searchsorted(ends, rows, side="right"), len(codes) - 1)]
        return np.full(len(rows), SPLITS.index(self.split), dtype=np.int8)


def _uniform_hash(keys: np.ndarray, seed: np.uint64, source: np.uint64) -> np.ndarray:
    """splitmix64 of (seed, source, key) mapped to [0, 1)."""
    with np.errstate(over="ignore"):
        z = keys + (seed * np.uint64(0x9E3779B97F4A7C15)) + (source << np.uint64(48)) + np.uint64(0x632BE59BD9B4E019)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True, slots=True)
class Source:
    """One input file and the rule for its rows."""

    path: str
    rule: SplitRule


def explicit_sources(files: dict[str, list[str]]) -> list[Source]:
    """Sources of ``--train/--valid/--test``."""
    return [Source(os.path.abspath(p), SplitRule(split=split)) for split in SPLITS for p in files.get(split) or []]


def policy_sources(policy: str, inputs: list[str], seed: int, count_rows) -> list[Source]:
    """Sources of ``--input FILES --split POLICY``; ``count_rows(path)`` counts data rows.

    Raises:
        ValueError: the inputs do not fit the policy (names the files and what is expected).
    """
    paths = [os.path.abspath(p) for p in inputs]
    if policy == "random":
        return [Source(p, SplitRule(seed=seed)) for p in paths]
    if policy == "kaggle_days":
        if len(paths) != 1:
            raise ValueError(f"--split kaggle_days expects one file (Criteo Kaggle train.txt), got {len(paths)}: {inputs}")
        n = count_rows(paths[0])
        train_end = 6 * n // 7
        valid_end = train_end + (n - train_end) // 2
        return [Source(paths[0], SplitRule(bounds=((train_end, "train"), (valid_end, "valid"), (n, "test"))))]
    if policy == "criteo_1tb_days":
        sources = []
        for p in sorted(paths, key=lambda q: _day_of(q)):
            day = _day_of(p)
            if day < 23:
                sources.append(Source(p, SplitRule(split="train")))
            else:
                n = count_rows(p)
                sources.append(Source(p, SplitRule(bounds=((n // 2, "valid"), (n, "test")))))
        return sources
    raise ValueError(f"--split {policy!r} is not one of {', '.join(POLICIES)}")


def _day_of(path: str) -> int:
    match = _DAY_RE.search(os.path.basename(path))
    if not match or int(match.group(1)) > 23:
        raise ValueError(f"--split criteo_1tb_days expects files named day_0 .. day_23 (optionally .gz), got {path}")
    return int(match.group(1))
