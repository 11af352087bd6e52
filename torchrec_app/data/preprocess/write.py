"""Converting one task: parse, map ids, write its Parquet part of each split.

Each split's part is written under ``NAME.tmp`` in row groups of exactly
``preprocess.row_group_rows`` (the unit a rank reads) and renamed when complete; the task
then leaves ``_progress/task-NNNNN.json`` (its files and bad rows), which a resumed run
reads back with :func:`read_task_marker`.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data import criteo_format as fmt_
from torchrec_app.data.criteo_format import DENSE_FEATURES, ID, LABEL, SPARSE_FEATURES
from torchrec_app.data.metadata import SplitFile
from torchrec_app.data.preprocess.output import PROGRESS_DIR, VOCAB_DIR
from torchrec_app.data.preprocess.parse import iter_task_rows
from torchrec_app.data.preprocess.plan import Task
from torchrec_app.data.preprocess.stage import read_staged, staged_paths
from torchrec_app.data.preprocess.vocab_pass import load_vocabularies, read_staged_marker, staged_marker
from torchrec_app.data.splits import SPLITS
from torchrec_app.data.vocab import Vocabulary, hashed_ids
from torchrec_app.utils.fs import write_json_atomic


@dataclass(slots=True)
class TaskResult:
    """What a finished conversion task wrote."""

    index: int
    files: dict[str, SplitFile]
    bad_rows: int


def convert_task(task: Task, build: str, config: PreprocessConfig, id_dtype: str, use_threads: bool) -> TaskResult:
    """Map ids of ``task``'s rows and write its Parquet part per split (tmp, then rename).

    The rows come from the task's staged stream when the vocabulary pass left one (the
    text was parsed there; the staged files are deleted once the parts are written), else
    from parsing the text. Paths in the result and in the task's progress marker are
    relative to ``build``.
    """
    vocab_features = tuple(f for f in SPARSE_FEATURES if config.strategy_of(f) == "vocab")
    vocabs = load_vocabularies(os.path.join(build, VOCAB_DIR), vocab_features) if vocab_features else {}
    id_type = pa.int32() if id_dtype == "int32" else pa.int64()
    schema = parquet_schema(config.multi_hot, id_type, scoring=task.rule.split == "score")
    staged = read_staged_marker(build, task) if vocab_features else None
    bad_rows: list[str] = []
    if staged is not None:
        tables = read_staged(staged_paths(build, task)[0], vocabs, schema)
    else:
        chunks = iter_task_rows(task, config, use_threads, bad_rows, encode_ids=vocab_features)
        tables = ((rows_to_table(c.rows, config, vocabs, schema, id_dtype), c.splits) for c in chunks)
    writers: dict[str, PartWriter] = {}
    try:
        for table, splits in tables:
            codes = np.unique(splits)
            for code in codes:
                split = SPLITS[code]
                part = table if len(codes) == 1 else table.filter(pa.array(splits == code))
                if split not in writers:
                    path = os.path.join(build, split, f"part-{task.index:05d}.parquet")
                    writers[split] = PartWriter(path, schema, config)
                writers[split].write(part)
        files = {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    bad, examples = (staged["bad_rows"], staged["bad_examples"]) if staged is not None else (len(bad_rows), bad_rows[:20])
    result = TaskResult(task.index, {s: SplitFile(path=os.path.relpath(p, build), rows=n) for s, (p, n) in files.items()}, bad)
    write_json_atomic(task_marker(build, task),
                      {"files": {s: asdict(f) for s, f in result.files.items()}, "bad_rows": bad, "bad_examples": examples})  # fmt: skip
    if staged is not None:
        for path in (*staged_paths(build, task), staged_marker(build, task)):
            os.remove(path)
    return result


def task_marker(build: str, task: Task) -> str:
    """The progress marker of a converted task."""
    return os.path.join(build, PROGRESS_DIR, f"task-{task.index:05d}.json")


def parquet_schema(multi_hot: bool, id_type: pa.DataType, *, scoring: bool = False) -> pa.Schema:
    """Columns of the output: label int8 (scoring data: ``id`` int64 instead), I* float32,
    C* ids (lists of ids when multi-hot)."""
    sparse_type = pa.list_(id_type) if multi_hot else id_type
    first = (ID, pa.int64()) if scoring else (LABEL, pa.int8())
    return pa.schema([first] + [(f, pa.float32()) for f in DENSE_FEATURES] + [(f, sparse_type) for f in SPARSE_FEATURES])


def rows_to_table(
    rows: fmt_.ParsedRows, config: PreprocessConfig, vocabs: dict[str, Vocabulary], schema: pa.Schema, id_dtype: str
) -> pa.Table:
    """Arrow table of parsed rows with ids mapped by each feature's strategy."""
    dense = rows.dense
    first = pa.array(rows.row_ids, pa.int64()) if schema.names[0] == ID else pa.array(rows.labels.astype(np.int8))
    columns = [first] + [pa.array(dense[j]) for j in range(len(DENSE_FEATURES))]
    for f, feature in enumerate(SPARSE_FEATURES):
        raw = rows.sparse[f]
        to_ids = vocabs[feature].lookup if feature in vocabs else functools.partial(hashed_ids, hash_size=config.hash_size)
        ids = (raw.map(to_ids) if isinstance(raw, fmt_.EncodedIds) else to_ids(raw)).astype(id_dtype, copy=False)
        if rows.lengths is None:
            columns.append(pa.array(ids))
        else:
            offsets = np.zeros(len(rows.lengths[f]) + 1, dtype=np.int32)
            np.cumsum(rows.lengths[f], out=offsets[1:])
            columns.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)))
    return pa.Table.from_arrays(columns, schema=schema)


class PartWriter:
    """Writes one split's part of a task in row groups of exactly ``row_group_rows``."""

    def __init__(self, path: str, schema: pa.Schema, config: PreprocessConfig):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path, self.tmp = path, path + ".tmp"
        self.group = config.row_group_rows
        compression = None if config.compression == "none" else config.compression
        self.writer = pq.ParquetWriter(self.tmp, schema, compression=compression, use_dictionary=False, write_statistics=False)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.group:
            merged = pa.concat_tables(self.pending)
            whole = (merged.num_rows // self.group) * self.group
            self.writer.write_table(merged.slice(0, whole), row_group_size=self.group)
            self.rows += whole
            rest = merged.slice(whole)
            self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> tuple[str, int]:
        if self.pending_rows:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=self.group)
            self.rows += self.pending_rows
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.path, self.rows

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


def read_task_marker(build: str, task: Task) -> TaskResult | None:
    """What a finished task wrote, or None if it must be redone."""
    marker = task_marker(build, task)
    if not os.path.exists(marker):
        return None
    try:
        with open(marker) as f:
            raw = json.load(f)
        files = {s: SplitFile(**entry) for s, entry in raw["files"].items()}
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    if not all(os.path.exists(os.path.join(build, f.path)) for f in files.values()):
        return None
    return TaskResult(task.index, files, int(raw["bad_rows"]))
