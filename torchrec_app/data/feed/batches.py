"""Rows of a feed dataset -> fixed-size :class:`~torchrec_app.data.feed.batch.FeedBatch` es (kind ``feed``).

The generic reader (:mod:`torchrec_app.data.reader`: per-rank row ranges, equal batch
counts on every rank, seekable shuffle, prefetch) hands each slice of at most ``B``
Parquet rows to ``make_batch(table, B)``, which returns exactly ``B`` rows: the real rows
first (weight 1, their ``importance``), then padding (weight 0, importance 0, zero labels
and dense, empty bags and sequences), like the Criteo :class:`~torchrec_app.data.batch.Batch`.

KJT layout (both stride ``B``, values int64, lengths int32, feature-major):

* ``pooled``: keys :data:`~torchrec_app.data.feed.schema.POOLED_FEATURES`; each single-id
  feature has length 1 per real row, ``keywords`` its bag's length.
* ``sequences``: keys ``item`` (length 1 per real row) and ``hist_<action>`` (the newest
  ``max_history`` ids, newest first; possibly empty), all over the item table.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config.data import ReaderConfig
from torchrec_app.data.feed.batch import FeedBatch
from torchrec_app.data.feed.schema import DENSE_FEATURES, IMPORTANCE, LABEL_COLUMNS, POOLED_FEATURES, SEQUENCE_FEATURES
from torchrec_app.data.metadata import DatasetMetadata

#: the Parquet columns a feed batch reads
COLUMNS: list[str] = [*DENSE_FEATURES, *POOLED_FEATURES, *SEQUENCE_FEATURES, *LABEL_COLUMNS, IMPORTANCE]


def _jagged(table: pa.Table | None, names: tuple[str, ...], size: int, max_length: int) -> KeyedJaggedTensor:
    """KJT of ``names`` over ``size`` rows (the table's first, then empty rows), lists cut to ``max_length``."""
    n = 0 if table is None else table.num_rows
    lengths = np.zeros((len(names), size), dtype=np.int32)
    parts = []
    for f, name in enumerate(names):
        if not n:
            continue
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type):
            if max_length > 0:
                column = pc.list_slice(column, 0, max_length)
            lengths[f, :n] = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
            parts.append(pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64))
        else:
            lengths[f, :n] = 1
            parts.append(column.to_numpy(zero_copy_only=False).astype(np.int64))
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return KeyedJaggedTensor(keys=list(names), values=torch.from_numpy(values), lengths=torch.from_numpy(lengths.reshape(-1)),
                             stride=size)  # fmt: skip


def make_feed_batch(table: pa.Table | None, size: int, max_history: int = 0) -> FeedBatch:
    """One padded batch of ``size`` rows from up to ``size`` preprocessed rows (``None``: padding only).

    >>> import pyarrow as pa
    >>> from torchrec_app.data.feed.schema import PARQUET_SCHEMA
    >>> row = {name: 0 for name in PARQUET_SCHEMA.names} | {"keywords": [4, 5], "item": 7, "hist_click": [3, 2, 1],
    ...        "hist_watch": [], "hist_chat": [], "hist_hide": [9], "hist_report": [], "label_chat": 1, "importance": 2.0}
    >>> b = make_feed_batch(pa.Table.from_pylist([row], schema=PARQUET_SCHEMA), 2, max_history=2)
    >>> b.sequences["hist_click"].to_dense(), b.sequences["item"].to_dense()
    ([tensor([3, 2]), tensor([], dtype=torch.int64)], [tensor([7]), tensor([], dtype=torch.int64)])
    >>> b.pooled["keywords"].lengths().tolist(), b.labels[:, 2].tolist(), b.weights.tolist(), b.importance.tolist()
    ([2, 0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0])
    """
    n = 0 if table is None else table.num_rows
    if n > size:
        raise ValueError(f"make_batch got {n} rows for a batch of {size}")
    dense = np.zeros((size, len(DENSE_FEATURES)), dtype=np.float32)
    labels = np.zeros((size, len(LABEL_COLUMNS)), dtype=np.float32)
    weights = np.zeros(size, dtype=np.float32)
    importance = np.zeros(size, dtype=np.float32)
    if n:
        for j, name in enumerate(DENSE_FEATURES):
            dense[:n, j] = table.column(name).to_numpy(zero_copy_only=False)
        for j, name in enumerate(LABEL_COLUMNS):
            if name in table.column_names:  # an unlabeled split keeps label 0
                labels[:n, j] = table.column(name).to_numpy(zero_copy_only=False)
        weights[:n] = 1.0
        importance[:n] = table.column(IMPORTANCE).to_numpy(zero_copy_only=False) if IMPORTANCE in table.column_names else 1.0
    return FeedBatch(
        dense_features=torch.from_numpy(dense),
        pooled=_jagged(table, POOLED_FEATURES, size, 0),
        sequences=_jagged(table, SEQUENCE_FEATURES, size, max_history),
        labels=torch.from_numpy(labels),
        weights=torch.from_numpy(weights),
        importance=torch.from_numpy(importance),
    )


def feed_batch_maker(meta: DatasetMetadata, config: ReaderConfig) -> tuple[list[str], Callable[[pa.Table | None, int], FeedBatch]]:
    """The columns a feed dataset's batches read, and ``make_batch(table, B)`` (histories cut to the
    dataset's ``max_history``). A model wanting shorter histories passes its own maker
    (``Task.batch_maker``: ``lambda t, b: make_feed_batch(t, b, max_history=k)``)."""
    max_history = int(meta.extra.get("feed", {}).get("max_history", 0))

    def make_batch(table: pa.Table | None, size: int) -> FeedBatch:
        return make_feed_batch(table, size, max_history)

    return list(COLUMNS), make_batch
