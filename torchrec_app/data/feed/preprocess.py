"""Raw feed impressions -> Parquet with vocabularies (``preprocess --kind feed``).

    pass 1, each train file in turn (Parquet with list columns, or JSON Lines)   formats.read_feed_file
      -> checked rows (bad rows named by file, line / row and field, or skipped and counted)
      -> histories cut to the newest ``max_history`` events
      -> vocabulary counts (user, item -- the candidate and every history share it --,
         category, keywords, each context categorical) and dense sums, merged over the files
    pass 2, each file of each split in turn
      -> ids -> table rows (0: rare or unseen), dense: log1p(position), log1p(price), hour,
         each standardised with the train mean and std
      -> train only, the row-wise sampling levers (sampling.py): users, sessions, negatives
      -> <out>/build-<fingerprint>/<split>/part-<file index>.parquet
    then (train, when on) the core-set over the written train parts, which are rewritten with
    it; vocab/<name>.parquet; <out>/metadata.json (kind "feed"); truth.json

Only one input file is in memory at a time (plus the vocabularies), except for the core-set
selector, which holds the sampled train split. The dataset is published the way the Criteo
path does it (:mod:`torchrec_app.data.preprocess.output`): everything is written in a build
directory named by the fingerprint of the inputs and settings, then one atomic rename of
``metadata.json`` publishes it; bad input (found in either pass) or a crash leaves the
previous dataset in ``<out>`` intact.

Vocabularies are counted on the whole train split *before* sampling, so every lever's
dataset has the same tables (and model size) as the baseline's.

``metadata.json`` of kind ``feed`` (beside the common fields of
:mod:`torchrec_app.data.metadata`): ``dense_features`` = position, price, hour;
``sparse_features`` = the pooled features then ``item``; ``num_embeddings`` per feature
(``item`` = the item table's rows, read by every sequence key); ``label`` = ``label_click``;
``extra``: ``feed`` (the layout: pooled / sequence features, the item table, objectives,
label columns, ``max_history``, ``tables``: table -> rows, ``feature_tables``: feature ->
table), ``dense_stats`` (the transform), ``positive_rates`` (per split and objective, after
sampling), and ``sampling`` (every lever's setting, the train rows before / after each,
``negative_keep_rate`` -- what the model's calibration correction reads -- and the core-set's
importance range).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from torchrec_app.config.feed_data import FeedPreprocessConfig
from torchrec_app.data.feed.batch import ACTIONS, CANDIDATE, ITEM_TABLE, OBJECTIVES
from torchrec_app.data.feed.formats import read_feed_file
from torchrec_app.data.feed.sampling import (
    coreset_probabilities,
    draw_coreset,
    importance_weights,
    keep_groups,
    labels_of,
    negative_downsample,
    proxy_losses,
)
from torchrec_app.data.feed.schema import (
    DENSE_FEATURES,
    HISTORY_FEATURES,
    IMPORTANCE,
    KIND,
    LABEL_COLUMNS,
    MULTI_HOT_FEATURES,
    PARQUET_SCHEMA,
    POOLED_FEATURES,
    RAW_SCHEMA,
    SEQUENCE_FEATURES,
    VOCABULARIES,
    VOCABULARY_OF,
    label_column,
)
from torchrec_app.data.metadata import DatasetMetadata, SplitFile
from torchrec_app.data.preprocess.output import VOCAB_DIR, prepare_build, publish
from torchrec_app.data.splits import explicit_sources
from torchrec_app.data.vocab import Counts, Vocabulary
from torchrec_app.utils.fs import atomic_path

SPLIT_NAMES = ("train", "valid", "test")


def table_name(vocabulary: str) -> str:
    """The embedding table of a vocabulary (``item`` -> ``t_item``, the table every sequence key reads).

    >>> table_name("item"), table_name("keywords")
    ('t_item', 't_keywords')
    """
    return f"t_{vocabulary}"


def read_file(path: str, config: FeedPreprocessConfig, budget: int) -> tuple[pa.Table, dict]:
    """One raw file's rows (checked, bad rows skipped within ``budget``, histories cut) and its source record."""
    result = read_feed_file(path, config.format, config.on_bad_rows, budget)
    table = result.table
    for name in HISTORY_FEATURES:
        column = pc.list_slice(table.column(name), 0, config.max_history)
        table = table.set_column(table.schema.get_field_index(name), name, column.cast(pa.list_(pa.int64())))
    source = {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "format": result.format,
              "rows": table.num_rows, "bad_rows": result.bad_rows}  # fmt: skip
    return table, source


def _ids(table: pa.Table, column: str) -> np.ndarray:
    """Raw ids of a column, lists flattened, as uint64."""
    data = table.column(column)
    if pa.types.is_list(data.type):
        data = pc.list_flatten(data)
    return data.to_numpy().astype(np.uint64) if len(data) else np.zeros(0, np.uint64)


def count_train(files: list[str], config: FeedPreprocessConfig) -> tuple[dict[str, Vocabulary], dict, list[dict], int]:
    """Pass 1 over the train files, one file in memory at a time: the vocabularies (one per
    :data:`VOCABULARIES` entry, counted over every column that reads it), the dense features' mean
    and std after their fixed transform, the sources' records and the bad rows skipped."""
    counts = {name: Counts.merge([]) for name in VOCABULARIES}
    sums = {name: np.zeros(3) for name in DENSE_FEATURES}  # rows, sum, sum of squares
    sources, bad = [], 0
    for path in files:
        table, source = read_file(path, config, config.max_bad_rows - bad)
        bad += source["bad_rows"]
        sources.append(source)
        for column, vocabulary in VOCABULARY_OF.items():
            counts[vocabulary] = Counts.merge([counts[vocabulary], Counts.of(_ids(table, column))])
        for name in DENSE_FEATURES:
            values = _dense_transform(name, table.column(name).to_numpy(zero_copy_only=False))
            sums[name] += (len(values), values.sum(), np.square(values).sum())
    vocabularies = {name: Vocabulary.build(counts[name], config.min_frequency) for name in VOCABULARIES}
    stats = {}
    for name, (n, total, squares) in sums.items():
        mean = total / n if n else 0.0
        stats[name] = {"mean": float(mean), "std": float(np.sqrt(max(squares / n - mean * mean, 0.0))) if n else 1.0}
    return vocabularies, stats, sources, bad


def _dense_transform(name: str, values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return np.log1p(values) if name in ("position", "price") else values


def encode(table: pa.Table, vocabularies: dict[str, Vocabulary], stats: dict[str, dict[str, float]]) -> pa.Table:
    """Raw rows -> the preprocessed columns (:data:`PARQUET_SCHEMA`), importance 1."""
    columns = {}
    for name, vocabulary in VOCABULARY_OF.items():
        data = table.column(name).combine_chunks()
        if pa.types.is_list(data.type):
            flat = vocabularies[vocabulary].lookup(_ids(table, name))
            offsets = pc.list_value_length(data).to_numpy(zero_copy_only=False).astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(offsets)]).astype(np.int32)
            columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int32()))
        else:
            columns[name] = pa.array(vocabularies[vocabulary].lookup(_ids(table, name)), pa.int32())
    columns["session"] = table.column("session")
    for name in DENSE_FEATURES:
        values = _dense_transform(name, table.column(name).to_numpy(zero_copy_only=False))
        columns[name] = pa.array(((values - stats[name]["mean"]) / max(stats[name]["std"], 1e-9)).astype(np.float32))
    for name in LABEL_COLUMNS:
        columns[name] = pa.array(table.column(name).to_numpy(zero_copy_only=False).astype(np.int8))
    columns[IMPORTANCE] = pa.array(np.ones(table.num_rows, dtype=np.float32))
    return pa.table({name: columns[name] for name in PARQUET_SCHEMA.names}, schema=PARQUET_SCHEMA)


def keep_train_rows(train: pa.Table, raw_users: np.ndarray, config: FeedPreprocessConfig, stream: int) -> dict[str, np.ndarray]:
    """The row-wise levers on one train file's rows: the keep mask after users, sessions and negatives
    (in that order; each mask includes the ones before). ``stream``: the file's index (its own draws)."""
    users = keep_groups(raw_users, config.user_keep_rate, config.seed, salt=1)
    sessions = users & keep_groups(train.column("session").to_numpy(), config.session_keep_rate, config.seed, salt=2)
    negatives = sessions & negative_downsample(labels_of(train), config.negative_keep_rate, config.seed, stream)
    return {"users": users, "sessions": sessions, "negatives": negatives}


def select_coreset(train: pa.Table, losses: np.ndarray, config: FeedPreprocessConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """The core-set of ``train`` (rows kept after the other levers): keep mask, the kept rows'
    importance and the record of it (``extra.sampling.coreset``)."""
    p = coreset_probabilities(losses, config.coreset_rate, config.coreset_uniform_mix)
    chosen = draw_coreset(p, config.seed)
    importance = importance_weights(p, chosen)
    scores_file = os.path.abspath(config.coreset_scores_file) if config.coreset_score == "file" else None
    record = {
        "score": config.coreset_score, "scores_file": scores_file, "uniform_mix": config.coreset_uniform_mix,
        "keep_probability": {"min": float(p.min()) if len(p) else None, "max": float(p.max()) if len(p) else None},
        "importance": {"min": float(importance.min()) if len(importance) else None,
                       "max": float(importance.max()) if len(importance) else None, "mean": 1.0},
    }  # fmt: skip
    return chosen, importance.astype(np.float32), record


def _scores_file(path: str, rows: int) -> np.ndarray:
    """The ``loss`` column of a per-row scores file, checked to have one row per unsampled train row."""
    try:
        table = pq.read_table(path, columns=["loss"])
    except (OSError, pa.ArrowInvalid, KeyError) as err:
        raise ValueError(f"feed_preprocess.coreset_scores_file={path}: cannot read a float column 'loss' ({err})") from None
    losses = table.column("loss").to_numpy(zero_copy_only=False).astype(np.float64)
    if len(losses) != rows:
        raise ValueError(f"feed_preprocess.coreset_scores_file={path}: {len(losses)} rows, expected {rows} "
                         "(one per row of the unsampled train split, in order)")  # fmt: skip
    bad = np.flatnonzero(~np.isfinite(losses) | (losses < 0))
    if len(bad):
        raise ValueError(f"{path}: row {bad[0] + 1}: field 'loss' is {losses[bad[0]]}, expected a finite loss >= 0")
    return losses


def fingerprint(files: dict[str, list[str]], config: FeedPreprocessConfig) -> str:
    """sha256 of the inputs (path, size, mtime, split) and the settings that change the output."""
    state = {
        "kind": KIND,
        "files": {
            split: [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in paths] for split, paths in files.items()
        },
        "config": {k: v for k, v in asdict(config).items() if k not in ("on_bad_rows", "max_bad_rows")},
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def preprocess_feed(out_dir: str, files: dict[str, list[str]], config: FeedPreprocessConfig) -> DatasetMetadata:
    """Build the feed dataset of ``files`` (split -> raw files; ``train`` required) in ``out_dir``.

    Two passes, one input file in memory at a time (the core-set selector excepted: it holds the
    sampled train split): the train files' vocabularies and dense statistics, then every file
    encoded (and train sampled) into its own Parquet part in the build directory, published at
    the end.

    Raises:
        DataFormatError / ValueError: bad input (file, line or row, field) or settings; the previous
            dataset in ``out_dir`` stays.
    """
    config.check_scores_file()
    if not files.get("train"):
        raise ValueError("a feed dataset needs --train FILES (and --valid / --test FILES)")
    unknown = sorted(set(files) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; a feed dataset has {list(SPLIT_NAMES)}")
    vocabularies, stats, train_sources, bad = count_train(files["train"], config)
    sizes = {name: vocab.num_embeddings for name, vocab in vocabularies.items()}

    os.makedirs(out_dir, exist_ok=True)
    build = prepare_build(out_dir, fingerprint(files, config))
    name = os.path.basename(build)
    sources = [{**s, "split": "train"} for s in train_sources]
    sampling: dict = {
        "seed": config.seed, "negative_keep_rate": config.negative_keep_rate, "user_keep_rate": config.user_keep_rate,
        "session_keep_rate": config.session_keep_rate, "coreset_rate": config.coreset_rate, "rows_before": 0,
        "rows_after": {"users": 0, "sessions": 0, "negatives": 0},
    }  # fmt: skip
    try:
        meta = _write_build(out_dir, name, files, vocabularies, stats, sizes, sampling, sources, bad, config)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)  # bad input found in pass 2: nothing of this run stays
        raise
    publish(out_dir, build, meta, explicit_sources(files))
    return meta


def _write_build(out_dir: str, name: str, files: dict[str, list[str]], vocabularies: dict[str, Vocabulary], stats: dict,
                 sizes: dict[str, int], sampling: dict, sources: list[dict], bad: int,
                 config: FeedPreprocessConfig) -> DatasetMetadata:  # fmt: skip
    """Pass 2 (see the module docstring) into the build directory ``out_dir/name``; the metadata to publish."""
    split_files: dict[str, list[SplitFile]] = {}
    build = os.path.join(out_dir, name)
    kept_of_raw = []  # train: which raw rows the row-wise levers kept (the scores file is per raw row)
    for split in SPLIT_NAMES:
        for index, path in enumerate(files.get(split) or []):
            if split == "train":
                table, _ = read_file(path, config, config.max_bad_rows)  # checked in pass 1; its bad rows counted there
            else:
                table, source = read_file(path, config, config.max_bad_rows - bad)
                bad += source["bad_rows"]
                sources.append({**source, "split": split})
            encoded = encode(table, vocabularies, stats)
            if split == "train":
                masks = keep_train_rows(encoded, _ids(table, "user"), config, stream=index)
                sampling["rows_before"] += encoded.num_rows
                for lever, mask in masks.items():
                    sampling["rows_after"][lever] += int(mask.sum())
                kept_of_raw.append(masks["negatives"])
                encoded = encoded.filter(pa.array(masks["negatives"]))
            split_files.setdefault(split, []).append(_write_part(out_dir, name, split, index, encoded, config))
    if config.coreset_rate < 1.0:
        split_files["train"] = _apply_coreset(out_dir, split_files["train"], np.concatenate(kept_of_raw), sizes, sampling, config)
    sampling["rows"] = sum(f.rows for f in split_files["train"])
    for vocabulary, vocab in vocabularies.items():
        vocab.save(os.path.join(build, VOCAB_DIR, f"{vocabulary}.parquet"))
    meta = feed_metadata(out_dir, split_files, sizes, stats, sampling, sources, bad, config, os.path.join(name, VOCAB_DIR))
    return meta


def _write_part(out_dir: str, build_name: str, split: str, index: int, table: pa.Table, config: FeedPreprocessConfig) -> SplitFile:
    """Write one split's part ``index`` (atomically) and return its entry for ``metadata.json``."""
    relative = os.path.join(build_name, split, f"part-{index:05d}.parquet")
    path = os.path.join(out_dir, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=config.row_group_rows, compression="lz4")
    return SplitFile(path=relative, rows=table.num_rows)


def _apply_coreset(out_dir: str, parts: list[SplitFile], kept_of_raw: np.ndarray, sizes: dict[str, int], sampling: dict,
                   config: FeedPreprocessConfig) -> list[SplitFile]:  # fmt: skip
    """Select the core-set over the written train parts and rewrite them with it (and its importance)."""
    tables = [pq.read_table(os.path.join(out_dir, part.path)) for part in parts]
    train = pa.concat_tables(tables)
    if config.coreset_score == "file":
        losses = _scores_file(config.coreset_scores_file, len(kept_of_raw))[kept_of_raw]
    else:
        losses = proxy_losses(train, sizes, config.seed)
    chosen, importance, sampling["coreset"] = select_coreset(train, losses, config)
    sampling["rows_after"]["coreset"] = int(chosen.sum())
    out, start, kept = [], 0, 0
    for part, table in zip(parts, tables):
        mine = chosen[start : start + table.num_rows]
        table = table.filter(pa.array(mine))
        weights = pa.array(importance[kept : kept + table.num_rows])
        table = table.set_column(table.schema.get_field_index(IMPORTANCE), IMPORTANCE, weights)
        start, kept = start + len(mine), kept + table.num_rows
        build_name, split, file = part.path.split(os.sep)[-3:]
        out.append(_write_part(out_dir, build_name, split, int(file[5:10]), table, config))
    return out


def feed_metadata(out_dir: str, split_files: dict[str, list[SplitFile]], sizes: dict[str, int],
                  stats: dict, sampling: dict, sources: list[dict], bad: int, config: FeedPreprocessConfig,
                  vocab_dir: str) -> DatasetMetadata:  # fmt: skip
    """``metadata.json`` of a feed dataset (see the module docstring)."""
    sparse = [*POOLED_FEATURES, CANDIDATE]
    feature_tables = {feature: table_name(vocabulary) for feature, vocabulary in VOCABULARY_OF.items()}
    positive_rates = {}
    for split, parts in split_files.items():
        positives, rows = np.zeros(len(OBJECTIVES)), sum(part.rows for part in parts)
        for part in parts:
            labels = pq.read_table(os.path.join(out_dir, part.path), columns=[label_column(o) for o in OBJECTIVES])
            positives += [pc.sum(labels.column(c)).as_py() or 0 for c in labels.column_names]
        positive_rates[split] = {o: float(positives[k] / rows) if rows else None for k, o in enumerate(OBJECTIVES)}
    return DatasetMetadata(
        kind=KIND,
        label=label_column(OBJECTIVES[0]),
        dense_features=list(DENSE_FEATURES),
        sparse_features=sparse,
        multi_hot=True,
        num_embeddings={feature: sizes[VOCABULARY_OF[feature]] for feature in sparse},
        id_strategies={feature: "vocab" for feature in sparse},
        min_frequency=config.min_frequency,
        split_policy="explicit",
        split_rows={split: sum(part.rows for part in parts) for split, parts in split_files.items()},
        files=split_files,
        sources=sources,
        bad_rows_skipped=bad,
        dense_transform="log1p(position), log1p(price), hour; each standardised with the train mean and std (extra.dense_stats)",
        vocab_dir=vocab_dir,
        extra={
            "feed": {
                "pooled_features": list(POOLED_FEATURES),
                "multi_hot_features": list(MULTI_HOT_FEATURES),
                "sequence_features": list(SEQUENCE_FEATURES),
                "candidate": CANDIDATE,
                "actions": list(ACTIONS),
                "item_table": ITEM_TABLE,
                "objectives": list(OBJECTIVES),
                "label_columns": list(LABEL_COLUMNS),
                "importance_column": IMPORTANCE,
                "max_history": config.max_history,
                "tables": {table_name(v): sizes[v] for v in VOCABULARIES},
                "feature_tables": feature_tables,
                "raw_columns": list(RAW_SCHEMA.names),
            },
            "dense_stats": stats,
            "positive_rates": positive_rates,
            "sampling": sampling,
        },
    )
