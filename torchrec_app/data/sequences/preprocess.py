"""Interactions -> per-user time-ordered sequences -> Parquet rows for next-item training.

    interactions (user, item, timestamp[, rating])       formats.read_interactions
      -> implicit feedback: all, or rating >= threshold
      -> k-core: drop users / items with too few interactions, until stable
      -> ids: users 0..U-1, items 1..N (0 is padding), both in raw-id order
      -> each user's items ordered by time (ties: file order)
      -> split (leave_one_out | time_cut) -> train windows, valid / test rows
      -> <out>/{train,valid,test}.parquet, interactions.parquet, items.parquet, users.parquet,
         metadata.json (kind "sequences", written last)

**One Parquet row = one example** (what the generic reader hands to ``make_batch``):

* ``user`` int32, ``items`` list<int32>, ``target`` int32.
* train rows: ``items`` is a window of at most ``max_len + 1`` consecutive training items of
  one user (target 0): models predict each item from the ones before it (SASRec,
  GRU4Rec) or masked ones from the rest (BERT4Rec). A long sequence is cut from its end
  into windows overlapping by one item, so every item but a user's first is a target once.
* valid / test rows: ``items`` is the user's whole history before the target (in time
  order, not truncated: it is also the set of seen items the evaluator masks), ``target``
  the held-out item.

**Splits** (both leak-free: no training row holds an item at or after its user's
validation target, and no history holds its own target or anything after it):

* ``leave_one_out`` (SASRec / BERT4Rec papers): per user with >= 3 items, the last item is
  the test target (history: all before it), the second-last the valid target (history: all
  before it), the rest is training data. Users with < 3 items are training data only.
* ``time_cut`` (global temporal split): interactions before ``valid_time`` are training data;
  each user's first interaction in ``[valid_time, test_time)`` is a valid target and the
  first at or after ``test_time`` a test target, each with everything the user did before it
  as history (also what happened after the cut: it is input, never a label). A user with no
  history before a target gets no row for it (counted in ``extra.cold_targets``).

``interactions.parquet`` (``user, item, timestamp, rating, split``) keeps every kept
interaction in time order with its split (``train``, ``valid``, ``test``, or ``unused``: after
the valid cut but not a target), for models that read the user-item matrix (EASE,
Multi-VAE) instead of sequences; ``items.parquet`` maps item ids to raw ids and side
information (``title, year, year_id, genres, genre_ids``); ``users.parquet`` maps user ids to
raw ids. Everything is read and checked before anything is written: bad input leaves an
earlier dataset in ``<out>`` untouched, and each file is written atomically, ``metadata.json``
last (removed first, so a half-rewritten directory is never mistaken for a dataset).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from torchrec_app.config.sequences import SequencePreprocessConfig
from torchrec_app.data.metadata import METADATA_FILE, DatasetMetadata, SplitFile, save_metadata
from torchrec_app.data.sequences.formats import detect_format, items_path_for, read_interactions, read_items
from torchrec_app.data.truth import TRUTH_FILE
from torchrec_app.utils.fs import atomic_path

KIND = "sequences"
SPLIT_NAMES = ("train", "valid", "test")
#: ``interactions.parquet`` ``split`` values: train data, a valid / test target, or unused (after a time cut, not a target).
SPLIT_CODES = ["train", "valid", "test", "unused"]
ROW_SCHEMA = pa.schema([("user", pa.int32()), ("items", pa.list_(pa.int32())), ("target", pa.int32())])


@dataclass(slots=True)
class Sequences:
    """Every kept interaction grouped by user and ordered by time.

    Attributes:
        items: all item ids (1..N), user after user, each user's in time order.
        timestamps: their times.
        ratings: their ratings (NaN when the file has none).
        offsets: ``U + 1``: user ``u``'s interactions are ``[offsets[u], offsets[u + 1])``.
        raw_users, raw_items: raw id of each user (0..U-1) / item (index i is item i + 1).
    """

    items: np.ndarray
    timestamps: np.ndarray
    ratings: np.ndarray
    offsets: np.ndarray
    raw_users: np.ndarray
    raw_items: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        return len(self.raw_items)


def implicit_feedback(table: pa.Table, threshold: float, source: str = "") -> pa.Table:
    """The interactions that count as positive: all of them, or those rated >= ``threshold``."""
    if threshold <= 0:
        return table
    if table.column("rating").null_count == table.num_rows:
        raise ValueError(f"{source or 'the input'} has no ratings, so sequence_preprocess.rating_threshold={threshold} cannot apply; set it to 0")
    return table.filter(pc.fill_null(pc.greater_equal(table.column("rating"), threshold), False))


def k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Mask of the interactions kept by iterated k-core filtering (codes ``users``, ``items`` >= 0).

    Removes users with fewer than ``min_user`` and items with fewer than ``min_item``
    interactions, repeatedly, until both hold for everything left.

    >>> k_core(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 0]), 2, 2).tolist()
    [True, True, True, True, False]
    """
    keep = np.ones(len(users), dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
        item_counts = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        new = keep & (user_counts[users] >= min_user) & (item_counts[items] >= min_item)
        if new.sum() == keep.sum():
            return new
        keep = new


def build_sequences(table: pa.Table, config: SequencePreprocessConfig, source: str = "") -> Sequences:
    """Implicit feedback, k-core, ids and time order (see the module docstring)."""
    rows_in = table.num_rows
    table = implicit_feedback(table, config.rating_threshold, source)
    raw_user_codes, raw_users = _codes(table.column("user"))
    raw_item_codes, raw_items = _codes(table.column("item"))
    keep = k_core(raw_user_codes, raw_item_codes, config.min_user_interactions, config.min_item_interactions)
    if not keep.any():
        raise ValueError(
            f"{source or 'the input'}: no interactions left after {config.min_user_interactions}/{config.min_item_interactions}-core "
            f"filtering of {table.num_rows} interactions; lower sequence_preprocess.min_user_interactions / min_item_interactions"
        )
    user_codes, users_left = _recode(raw_user_codes[keep])
    item_codes, items_left = _recode(raw_item_codes[keep])
    timestamps = table.column("timestamp").to_numpy()[keep].astype(np.int64)
    ratings = table.column("rating").to_numpy(zero_copy_only=False)[keep].astype(np.float32)
    order = np.lexsort((np.arange(len(user_codes)), timestamps, user_codes))  # user, then time, then file order
    counts = np.bincount(user_codes, minlength=len(users_left))
    offsets = np.zeros(len(users_left) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    stats = {
        "interactions_read": rows_in, "interactions_implicit": table.num_rows, "interactions": int(keep.sum()),
        "users": len(users_left), "items": len(items_left),
        "users_removed_by_k_core": len(raw_users) - len(users_left), "items_removed_by_k_core": len(raw_items) - len(items_left),
    }  # fmt: skip
    return Sequences(
        items=(item_codes[order] + 1).astype(np.int32), timestamps=timestamps[order], ratings=ratings[order], offsets=offsets,
        raw_users=raw_users[users_left], raw_items=raw_items[items_left], stats=stats,
    )


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes 0..K-1 of ``column`` in sorted raw-id order, and the sorted raw ids."""
    values = column.to_numpy(zero_copy_only=False)
    uniques, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), uniques


def _recode(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes renumbered 0..K'-1 over the ones still present (order kept), and which old codes they were."""
    present, new = np.unique(codes, return_inverse=True)
    return new.astype(np.int64), present


# ------------------------------------------------------------------ splits


@dataclass(slots=True)
class SplitRows:
    """Rows of one split: users, item lists (flat + offsets) and targets."""

    users: list[int] = field(default_factory=list)
    items: list[np.ndarray] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)

    def add(self, user: int, items: np.ndarray, target: int = 0) -> None:
        self.users.append(user)
        self.items.append(items)
        self.targets.append(target)

    def table(self) -> pa.Table:
        lengths = np.array([len(x) for x in self.items], dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(self.items).astype(np.int32) if self.items else np.zeros(0, np.int32)
        return pa.table({
            "user": pa.array(np.asarray(self.users, dtype=np.int32)),
            "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
            "target": pa.array(np.asarray(self.targets, dtype=np.int32)),
        }, schema=ROW_SCHEMA)


def train_windows(items: np.ndarray, max_len: int) -> list[np.ndarray]:
    """``items`` cut from the end into windows of ``max_len + 1`` overlapping by one (each >= 2 items).

    >>> [w.tolist() for w in train_windows(np.arange(1, 9), 3)]
    [[1, 2], [2, 3, 4, 5], [5, 6, 7, 8]]
    """
    windows = []
    end = len(items)
    while end >= 2:
        windows.append(items[max(0, end - max_len - 1) : end])
        end -= max_len
    return windows[::-1]


def resolve_time(value: float, timestamps: np.ndarray) -> int:
    """A cut time: a quantile of ``timestamps`` when ``value <= 1``, else ``value`` itself.

    >>> resolve_time(0.5, np.arange(0, 101)), resolve_time(1234.0, np.arange(3))
    (50, 1234)
    """
    if value <= 1:
        return int(np.quantile(timestamps, value, method="lower"))
    return int(value)


def split_sequences(seqs: Sequences, config: SequencePreprocessConfig) -> tuple[dict[str, SplitRows], np.ndarray, dict]:
    """Rows of each split, the split code of every interaction (index into :data:`SPLIT_CODES`), and stats."""
    rows = {name: SplitRows() for name in SPLIT_NAMES}
    split_of = np.zeros(len(seqs.items), dtype=np.int8)
    stats: dict = {"split": config.split}
    if config.split == "leave_one_out":
        for user in range(seqs.num_users):
            start, end = int(seqs.offsets[user]), int(seqs.offsets[user + 1])
            items = seqs.items[start:end]
            train_end = len(items) - 2 if len(items) >= 3 else len(items)
            for window in train_windows(items[:train_end], config.max_len):
                rows["train"].add(user, window)
            if len(items) >= 3:
                rows["valid"].add(user, items[: train_end], int(items[train_end]))
                rows["test"].add(user, items[: train_end + 1], int(items[train_end + 1]))
                split_of[start + train_end] = 1
                split_of[start + train_end + 1] = 2
        stats["train_only_users"] = int(sum(1 for u in range(seqs.num_users) if seqs.offsets[u + 1] - seqs.offsets[u] < 3))
    else:
        valid_time = resolve_time(config.valid_time, seqs.timestamps)
        test_time = resolve_time(config.test_time, seqs.timestamps)
        if test_time <= valid_time:
            raise ValueError(f"time_cut: the test cut {test_time} is not after the valid cut {valid_time}; "
                             "move sequence_preprocess.test_time later")
        cold = {"valid": 0, "test": 0}
        for user in range(seqs.num_users):
            start, end = int(seqs.offsets[user]), int(seqs.offsets[user + 1])
            items, times = seqs.items[start:end], seqs.timestamps[start:end]
            n_train = int(np.searchsorted(times, valid_time, side="left"))
            n_before_test = int(np.searchsorted(times, test_time, side="left"))
            for window in train_windows(items[:n_train], config.max_len):
                rows["train"].add(user, window)
            split_of[start + n_train : end] = 3
            for name, code, position, limit in (("valid", 1, n_train, n_before_test), ("test", 2, n_before_test, end - start)):
                if position < limit:
                    if position == 0:
                        cold[name] += 1
                        continue
                    rows[name].add(user, items[:position], int(items[position]))
                    split_of[start + position] = code
        stats.update(valid_time=valid_time, test_time=test_time, cold_targets=cold)
    return rows, split_of, stats


# ------------------------------------------------------------------ side information


def item_side_table(seqs: Sequences, movies: pa.Table | None) -> tuple[pa.Table, list[str], list[int]]:
    """``items.parquet`` rows for items 1..N (raw id, title, year, genres and their ids), genre and year vocabularies."""
    n = seqs.num_items
    titles, years, genres = [""] * n, [0] * n, [[] for _ in range(n)]
    if movies is not None:
        index = {int(raw): i for i, raw in enumerate(seqs.raw_items.tolist())} if seqs.raw_items.dtype.kind in "iu" else {
            raw: i for i, raw in enumerate(seqs.raw_items.tolist())}
        for raw, title, year, item_genres in zip(*(movies.column(c).to_pylist() for c in ("item", "title", "year", "genres"))):
            i = index.get(raw)
            if i is not None:
                titles[i], years[i], genres[i] = title, int(year), list(item_genres)
    genre_names = sorted({g for gs in genres for g in gs})
    year_values = sorted({y for y in years if y > 0})
    genre_id = {g: i + 1 for i, g in enumerate(genre_names)}  # 0: padding / none
    year_id = {y: i + 1 for i, y in enumerate(year_values)}  # 0: unknown
    table = pa.table({
        "item": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "raw_item": pa.array(seqs.raw_items),
        "title": pa.array(titles, pa.string()),
        "year": pa.array(years, pa.int32()),
        "year_id": pa.array([year_id.get(y, 0) for y in years], pa.int32()),
        "genres": pa.array(genres, pa.list_(pa.string())),
        "genre_ids": pa.array([[genre_id[g] for g in gs] for gs in genres], pa.list_(pa.int32())),
    })
    return table, genre_names, year_values


# ------------------------------------------------------------------ the whole run


def preprocess_sequences(
    out_dir: str,
    inputs: list[str],
    config: SequencePreprocessConfig,
    items_file: str | None = None,
) -> DatasetMetadata:
    """Read ``inputs`` (one or more files of the same format), build the dataset in ``out_dir``.

    ``items_file``: the movies file (default: the one distributed beside a MovieLens ratings
    file, if present). Raises ``DataFormatError`` / ``ValueError`` naming the file (and line)
    before writing anything.
    """
    tables, bad_rows, sources = [], 0, []
    fmt = config.format
    for path in inputs:
        result = read_interactions(path, fmt, config.on_bad_rows, config.max_bad_rows - bad_rows)
        tables.append(result.table)
        bad_rows += result.bad_rows
        sources.append({"path": os.path.abspath(path), "bytes": os.path.getsize(path), "bad_rows": result.bad_rows})
    detected = fmt if fmt != "auto" else detect_format(inputs[0])
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    seqs = build_sequences(table, config, ", ".join(inputs))
    rows, split_of, split_stats = split_sequences(seqs, config)
    items_file = items_file or items_path_for(inputs[0], detected)
    movies = read_items(items_file, detected if detected != "interactions" else "ml-1m") if items_file else None
    items_table, genre_names, year_values = item_side_table(seqs, movies)
    max_genres = max((len(g) for g in items_table.column("genre_ids").to_pylist()), default=0)
    split_tables = {name: rows[name].table() for name in SPLIT_NAMES}
    user_of = np.repeat(np.arange(seqs.num_users, dtype=np.int32), np.diff(seqs.offsets))
    interactions = pa.table({
        "user": pa.array(user_of), "item": pa.array(seqs.items), "timestamp": pa.array(seqs.timestamps),
        "rating": pa.array(seqs.ratings, pa.float32()),
        "split": pa.DictionaryArray.from_arrays(pa.array(split_of.astype(np.int32)), pa.array(SPLIT_CODES)),
    })  # fmt: skip
    users = pa.table({"user": pa.array(np.arange(seqs.num_users, dtype=np.int32)), "raw_user": pa.array(seqs.raw_users)})

    # -- everything is in memory and checked: now write (metadata.json last) --
    os.makedirs(out_dir, exist_ok=True)
    metadata_path = os.path.join(out_dir, METADATA_FILE)
    if os.path.exists(metadata_path):
        os.remove(metadata_path)
    files = {}
    for name, split_table in split_tables.items():
        files[name] = [SplitFile(path=f"{name}.parquet", rows=split_table.num_rows)]
        _write_parquet(os.path.join(out_dir, f"{name}.parquet"), split_table, config.row_group_rows)
    for name, extra_table in (("interactions", interactions), ("items", items_table), ("users", users)):
        _write_parquet(os.path.join(out_dir, f"{name}.parquet"), extra_table, 1 << 20)
    truth = os.path.join(os.path.dirname(os.path.abspath(inputs[0])), TRUTH_FILE)
    if os.path.isfile(truth):
        with atomic_path(os.path.join(out_dir, TRUTH_FILE)) as tmp:
            shutil.copyfile(truth, tmp)
    sparse = ["item", "genre", "year"]
    meta = DatasetMetadata(
        kind=KIND,
        label="target",
        dense_features=[],
        sparse_features=sparse,
        num_embeddings={"item": seqs.num_items + 1, "genre": len(genre_names) + 1, "year": len(year_values) + 1},
        id_strategies={f: "vocab" for f in sparse},
        split_policy=config.split,
        split_rows={name: t.num_rows for name, t in split_tables.items()},
        files=files,
        sources=sources,
        bad_rows_skipped=bad_rows,
        dense_transform="",
        vocab_dir="",
        extra={
            "format": detected, "num_items": seqs.num_items, "num_users": seqs.num_users, "max_len": config.max_len,
            "rating_threshold": config.rating_threshold,
            "k_core": [config.min_user_interactions, config.min_item_interactions],
            "max_genres": max_genres, "genres": genre_names, "years": year_values,
            "items_file": "items.parquet", "users_file": "users.parquet", "interactions_file": "interactions.parquet",
            "items_source": os.path.abspath(items_file) if items_file else None,
            **seqs.stats, **split_stats,
        },
    )  # fmt: skip
    save_metadata(out_dir, meta)
    return meta


def _write_parquet(path: str, table: pa.Table, row_group_rows: int) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_rows, compression="lz4")
