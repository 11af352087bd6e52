"""Staged rows: a task's text parsed once, kept columnar between the two passes of vocabulary ids.

Vocabulary ids need every train id counted before any id can be mapped. Rather than
parsing the text twice (count, then convert), the vocabulary pass parses each task once
and writes its rows to ``_staged/task-NNNNN.arrows``, an Arrow IPC stream with one record
batch per parsed block:

* ``label`` (int8; scoring data: ``id`` int64), ``I1..I13`` (float32, transformed),
  ``split`` (int8 code into :data:`torchrec_app.data.splits.SPLITS`);
* hashed features: their final ids (``raw % hash_size``);
* vocabulary features: the block's raw ids dictionary-encoded (int32 indices into the
  block's distinct uint64 raw ids, as the parse encoded them:
  :class:`~torchrec_app.data.criteo_format.EncodedIds`, where an id written two ways is
  two entries of the same value), lists of them when multi-hot.

Pass 2 (:func:`read_staged`) reads the stream back and, per block, looks up only the
distinct raw ids in the vocabulary (a few thousand instead of every value) and gathers
the indices; the text is not read again. The stream format (not the IPC file format) is
used because each block has its own dictionaries. A task's staged files are deleted once
its Parquet parts are written; their size is about that of the task's text.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data.criteo_format import DENSE_FEATURES, ID, LABEL, SPARSE_FEATURES, EncodedIds, ParsedRows
from torchrec_app.data.preprocess.plan import Task
from torchrec_app.data.vocab import Counts, Vocabulary, hashed_ids

STAGED_DIR = "_staged"
SPLIT = "split"
_RAW_IDS = pa.dictionary(pa.int32(), pa.uint64())


def staged_paths(build: str, task: Task) -> tuple[str, str]:
    """Where ``task``'s staged rows and its train id counts are written."""
    stem = os.path.join(build, STAGED_DIR, f"task-{task.index:05d}")
    return stem + ".arrows", stem + ".counts.arrow"


def hash_id_type(config: PreprocessConfig) -> pa.DataType:
    """The narrowest type that holds ``raw % hash_size``."""
    return pa.int32() if config.hash_size <= 2**31 else pa.int64()


def staged_schema(config: PreprocessConfig, vocab_features: set[str], scoring: bool) -> pa.Schema:
    """Columns of a staged stream (see the module docstring)."""
    first = (ID, pa.int64()) if scoring else (LABEL, pa.int8())
    fields = [first, *((f, pa.float32()) for f in DENSE_FEATURES), (SPLIT, pa.int8())]
    for feature in SPARSE_FEATURES:
        value_type = _RAW_IDS if feature in vocab_features else hash_id_type(config)
        fields.append((feature, pa.list_(value_type) if config.multi_hot else value_type))
    return pa.schema(fields)


@contextmanager
def staged_writer(path: str, schema: pa.Schema) -> Iterator[pa.ipc.RecordBatchStreamWriter]:
    """An IPC stream writer of staged batches into ``path`` (uncompressed: read back at memory speed)."""
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        yield writer


def stage_batch(rows: ParsedRows, splits: np.ndarray, config: PreprocessConfig, schema: pa.Schema,
                vocab_features: set[str]) -> tuple[pa.RecordBatch, dict[str, tuple[np.ndarray, np.ndarray]]]:  # fmt: skip
    """The staged record batch of one parsed block, and per vocabulary feature the distinct
    raw ids of its train rows with their counts (not sorted; a value may repeat when written
    two ways, which :meth:`Counts.merge` sums)."""
    first = pa.array(rows.row_ids, pa.int64()) if schema.names[0] == ID else pa.array(rows.labels.astype(np.int8))
    columns = [first, *(pa.array(rows.dense[j]) for j in range(len(DENSE_FEATURES))), pa.array(splits)]
    train = splits == 0
    all_train = bool(train.all())
    counts = {}
    for f, feature in enumerate(SPARSE_FEATURES):
        raw = rows.sparse[f]
        if feature in vocab_features:
            encoded = raw if isinstance(raw, EncodedIds) else _encode(raw)
            indices, distinct = encoded.indices, encoded.distinct
            values = pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(distinct))
            if all_train or train.any():
                if all_train:
                    counts[feature] = (distinct, np.bincount(indices, minlength=len(distinct)))
                else:
                    mask = train if rows.lengths is None else np.repeat(train, rows.lengths[f])
                    n = np.bincount(indices[mask], minlength=len(distinct))
                    counts[feature] = (distinct[n > 0], n[n > 0])
        else:
            to_ids = functools.partial(hashed_ids, hash_size=config.hash_size)
            ids = raw.map(to_ids) if isinstance(raw, EncodedIds) else to_ids(raw)
            values = pa.array(ids.astype(hash_id_type(config).to_pandas_dtype()))
        if rows.lengths is not None:
            values = pa.ListArray.from_arrays(pa.array(_offsets(rows.lengths[f])), values)
        columns.append(values)
    return pa.RecordBatch.from_arrays(columns, schema=schema), counts


def _encode(raw: np.ndarray) -> EncodedIds:
    encoded = pc.dictionary_encode(pa.array(raw))
    return EncodedIds(encoded.indices.to_numpy(), encoded.dictionary.to_numpy())


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def read_staged(path: str, vocabs: dict[str, Vocabulary], schema: pa.Schema) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The final table (``schema``: ids mapped, id columns cast) and the split codes of each
    staged block of ``path``."""
    # Read, not memory-mapped: first touches of mapped pages (page faults) cost more than the copy.
    with pa.OSFile(path, "rb") as source:
        yield from _mapped(pa.ipc.open_stream(source), vocabs, schema)


def _mapped(batches, vocabs: dict[str, Vocabulary], schema: pa.Schema) -> Iterator[tuple[pa.Table, np.ndarray]]:
    for batch in batches:
        columns = [batch.column(name) for name in schema.names[: 1 + len(DENSE_FEATURES)]]
        for feature in SPARSE_FEATURES:
            columns.append(_final_ids(batch.column(feature), vocabs.get(feature), schema.field(feature).type))
        yield pa.Table.from_arrays(columns, schema=schema), batch.column(SPLIT).to_numpy()


def _final_ids(column: pa.Array, vocab: Vocabulary | None, target: pa.DataType) -> pa.Array:
    lists = isinstance(column, pa.ListArray)
    values, id_type = (column.values, target.value_type) if lists else (column, target)
    if vocab is not None:
        index = vocab.lookup(values.dictionary.to_numpy())  # the block's distinct raw ids only
        ids = pa.array(index[values.indices.to_numpy()].astype(id_type.to_pandas_dtype(), copy=False))
    else:
        ids = values.cast(id_type)
    return pa.ListArray.from_arrays(column.offsets, ids) if lists else ids


_COUNTS_SCHEMA = pa.schema([("raw_id", pa.uint64()), ("count", pa.int64())])


def write_counts(path: str, counts: list[Counts]) -> None:
    """Save per-feature train counts, one record batch per feature in order."""
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, _COUNTS_SCHEMA) as writer:
        for c in counts:
            writer.write_batch(pa.record_batch([pa.array(c.ids), pa.array(c.counts)], schema=_COUNTS_SCHEMA))


def read_counts(path: str) -> list[Counts]:
    """What :func:`write_counts` saved."""
    with pa.OSFile(path, "rb") as source:
        reader = pa.ipc.open_file(source)
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
    return [Counts(b.column(0).to_numpy(), b.column(1).to_numpy()) for b in batches]
