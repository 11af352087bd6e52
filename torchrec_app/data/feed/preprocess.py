"""Raw feed impressions -> Parquet with vocabularies (``preprocess --kind feed``).

    raw train / valid / test files (Parquet with list columns, or JSON Lines)   formats.read_feed_file
      -> checked rows (bad rows named by file, line / row and field, or skipped and counted)
      -> histories cut to the newest ``max_history`` events
      -> vocabularies counted on the (unsampled) train split: user, item (the candidate and
         every history share it), category, keywords, each context categorical
      -> ids -> table rows (0: rare or unseen), dense: log1p(position), log1p(price), hour,
         each standardised with the train mean and std
      -> the sampling levers on train only (sampling.py): users, sessions, negatives, core-set
      -> <out>/build-<fingerprint>/{train,valid,test}/part-00000.parquet, vocab/<name>.parquet,
         then <out>/metadata.json (kind "feed"), then truth.json

Everything is read and checked before anything is written, and the dataset is published
the way the Criteo path does it (:mod:`torchrec_app.data.preprocess.output`): a build
directory named by the fingerprint of the inputs and settings, then one atomic rename of
``metadata.json``; bad input or a crash leaves the previous dataset in ``<out>`` intact.

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


def read_split(files: list[str], config: FeedPreprocessConfig, budget: int) -> tuple[pa.Table, int, list[dict]]:
    """Rows of one split's files (concatenated, histories cut), bad rows skipped, and the sources' records."""
    tables, bad, sources = [], 0, []
    for path in files:
        result = read_feed_file(path, config.format, config.on_bad_rows, budget - bad)
        bad += result.bad_rows
        tables.append(result.table)
        sources.append({"path": os.path.abspath(path), "bytes": os.path.getsize(path), "format": result.format,
                        "rows": result.table.num_rows, "bad_rows": result.bad_rows})  # fmt: skip
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    for name in HISTORY_FEATURES:
        column = pc.list_slice(table.column(name), 0, config.max_history)
        table = table.set_column(table.schema.get_field_index(name), name, column.cast(pa.list_(pa.int64())))
    return table, bad, sources


def _ids(table: pa.Table, column: str) -> np.ndarray:
    """Raw ids of a column, lists flattened, as uint64."""
    data = table.column(column)
    if pa.types.is_list(data.type):
        data = pc.list_flatten(data)
    return data.to_numpy().astype(np.uint64) if len(data) else np.zeros(0, np.uint64)


def build_vocabularies(train: pa.Table, min_frequency: int) -> dict[str, Vocabulary]:
    """One vocabulary per :data:`VOCABULARIES` entry, counted over every train column that reads it."""
    counts = {name: [] for name in VOCABULARIES}
    for column, vocabulary in VOCABULARY_OF.items():
        counts[vocabulary].append(Counts.of(_ids(train, column)))
    return {name: Vocabulary.build(Counts.merge(parts), min_frequency) for name, parts in counts.items()}


def dense_stats(train: pa.Table) -> dict[str, dict[str, float]]:
    """Mean and std of each dense feature after its fixed transform, on train."""
    stats = {}
    for name in DENSE_FEATURES:
        values = _dense_transform(name, train.column(name).to_numpy(zero_copy_only=False))
        stats[name] = {"mean": float(values.mean()) if len(values) else 0.0, "std": float(values.std()) if len(values) else 1.0}
    return stats


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


def sample_train(train: pa.Table, raw_users: np.ndarray, config: FeedPreprocessConfig,
                 sizes: dict[str, int]) -> tuple[pa.Table, dict]:  # fmt: skip
    """The train split after the sampling levers (users, sessions, negatives, core-set, in that
    order), and the record of what each did (``extra.sampling``)."""
    record: dict = {
        "seed": config.seed, "negative_keep_rate": config.negative_keep_rate, "user_keep_rate": config.user_keep_rate,
        "session_keep_rate": config.session_keep_rate, "coreset_rate": config.coreset_rate, "rows_before": train.num_rows,
    }  # fmt: skip
    steps = []
    keep = keep_groups(raw_users, config.user_keep_rate, config.seed, salt=1)
    steps.append(("users", keep))
    keep = keep & keep_groups(train.column("session").to_numpy(), config.session_keep_rate, config.seed, salt=2)
    steps.append(("sessions", keep))
    keep = keep & negative_downsample(labels_of(train), config.negative_keep_rate, config.seed)
    steps.append(("negatives", keep))
    record["rows_after"] = {name: int(mask.sum()) for name, mask in steps}
    train = train.filter(pa.array(keep)) if not keep.all() else train
    if config.coreset_rate < 1.0:
        if config.coreset_score == "file":
            losses = _scores_file(config.coreset_scores_file, len(keep))[keep]
        else:
            losses = proxy_losses(train, sizes, config.seed)
        p = coreset_probabilities(losses, config.coreset_rate, config.coreset_uniform_mix)
        chosen = draw_coreset(p, config.seed)
        importance = importance_weights(p, chosen)
        train = train.filter(pa.array(chosen))
        train = train.set_column(train.schema.get_field_index(IMPORTANCE), IMPORTANCE, pa.array(importance.astype(np.float32)))
        record["rows_after"]["coreset"] = int(chosen.sum())
        record["coreset"] = {
            "score": config.coreset_score, "scores_file": os.path.abspath(config.coreset_scores_file) if config.coreset_score == "file" else None,
            "uniform_mix": config.coreset_uniform_mix,
            "keep_probability": {"min": float(p.min()) if len(p) else None, "max": float(p.max()) if len(p) else None},
            "importance": {"min": float(importance.min()) if len(importance) else None,
                           "max": float(importance.max()) if len(importance) else None, "mean": 1.0},
        }  # fmt: skip
    record["rows"] = train.num_rows
    return train, record


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

    Raises:
        DataFormatError / ValueError: bad input (file, line or row, field) or settings, before
            anything is written; the previous dataset in ``out_dir`` stays.
    """
    config.check_scores_file()
    if not files.get("train"):
        raise ValueError("a feed dataset needs --train FILES (and --valid / --test FILES)")
    unknown = sorted(set(files) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; a feed dataset has {list(SPLIT_NAMES)}")
    tables, sources, bad = {}, [], 0
    for split in SPLIT_NAMES:
        if files.get(split):
            tables[split], split_bad, split_sources = read_split(files[split], config, config.max_bad_rows - bad)
            bad += split_bad
            sources += [{**s, "split": split} for s in split_sources]
    vocabularies = build_vocabularies(tables["train"], config.min_frequency)
    sizes = {name: vocab.num_embeddings for name, vocab in vocabularies.items()}
    stats = dense_stats(tables["train"])
    encoded = {split: encode(table, vocabularies, stats) for split, table in tables.items()}
    encoded["train"], sampling = sample_train(encoded["train"], _ids(tables["train"], "user"), config, sizes)

    # -- everything is read, checked and computed: build, then publish --
    os.makedirs(out_dir, exist_ok=True)
    build = prepare_build(out_dir, fingerprint(files, config))
    name = os.path.basename(build)
    split_files = {}
    for split, table in encoded.items():
        relative = os.path.join(name, split, "part-00000.parquet")
        path = os.path.join(out_dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, row_group_size=config.row_group_rows, compression="lz4")
        split_files[split] = [SplitFile(path=relative, rows=table.num_rows)]
    for vocabulary, vocab in vocabularies.items():
        vocab.save(os.path.join(build, VOCAB_DIR, f"{vocabulary}.parquet"))
    meta = feed_metadata(encoded, split_files, sizes, stats, sampling, sources, bad, config, os.path.join(name, VOCAB_DIR))
    publish(out_dir, build, meta, explicit_sources(files))
    return meta


def feed_metadata(encoded: dict[str, pa.Table], split_files: dict[str, list[SplitFile]], sizes: dict[str, int],
                  stats: dict, sampling: dict, sources: list[dict], bad: int, config: FeedPreprocessConfig,
                  vocab_dir: str) -> DatasetMetadata:  # fmt: skip
    """``metadata.json`` of a feed dataset (see the module docstring)."""
    sparse = [*POOLED_FEATURES, CANDIDATE]
    feature_tables = {feature: table_name(vocabulary) for feature, vocabulary in VOCABULARY_OF.items()}
    positive_rates = {
        split: {o: float(np.mean(table.column(label_column(o)).to_numpy())) if table.num_rows else None for o in OBJECTIVES}
        for split, table in encoded.items()
    }
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
        split_rows={split: table.num_rows for split, table in encoded.items()},
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
