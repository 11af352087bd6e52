"""The unit the trainer steps on: one rank's fixed-size batch, with a weight per row.

Every rank must run the same number of steps, or the embedding all-to-alls hang; and
every row of an evaluation split must count exactly once. Both hold if each batch has
exactly ``batch_size`` rows and the tail of a split is *padded* rather than dropped or
duplicated: padding rows carry ``weights == 0`` (no dense value, empty bags, label 0) and
contribute nothing to the loss or the metrics. Fixed shapes also suit GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from torchrec_app.config.data import ReaderConfig
from torchrec_app.data.metadata import DatasetMetadata


@dataclass
class Batch(Pipelineable):
    """One rank's batch of ``B`` rows (``B`` = the configured per-rank batch size).

    Attributes:
        dense_features: ``B x num_dense`` float32, already transformed (``log(1 + x)``).
        sparse_features: KJT with one key per sparse feature, stride ``B``.
        labels: ``B`` float32 in {0, 1}.
        weights: ``B`` float32; 1 for a real row, 0 for padding.
    """

    dense_features: torch.Tensor
    sparse_features: KeyedJaggedTensor
    labels: torch.Tensor
    weights: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return Batch(
            dense_features=self.dense_features.to(device=device, non_blocking=non_blocking),
            sparse_features=self.sparse_features.to(device=device, non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            weights=self.weights.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        self.dense_features.record_stream(stream)
        self.sparse_features.record_stream(stream)
        self.labels.record_stream(stream)
        self.weights.record_stream(stream)

    def pin_memory(self) -> "Batch":
        return Batch(
            dense_features=self.dense_features.pin_memory(),
            sparse_features=self.sparse_features.pin_memory(),
            labels=self.labels.pin_memory(),
            weights=self.weights.pin_memory(),
        )

    @property
    def num_real_rows(self) -> int:
        """Rows that are data, not padding."""
        return int(self.weights.count_nonzero())


def pad_rows(num_rows: int, batch_size: int) -> int:
    """Rows of padding that bring ``num_rows`` up to a whole number of batches.

    >>> pad_rows(10, 4), pad_rows(8, 4), pad_rows(0, 4)
    (2, 0, 0)
    """
    return -num_rows % batch_size


def criteo_batch_maker(meta: DatasetMetadata, config: ReaderConfig) -> tuple[list[str], Callable[[pa.Table | None, int], Batch]]:
    """The columns a Criteo-kind dataset's batches read, and the function making a padded :class:`Batch`.

    ``make_batch(table, batch_size)`` puts the ``n <= batch_size`` rows of ``table`` first
    (weight 1) and pads to ``batch_size`` (weight 0, label 0, dense 0, empty bags). KJT
    layout: keys are ``meta.sparse_features`` in order; values int64 (taken modulo
    ``config.max_ind_range`` when set); lengths int32, one per row per feature,
    feature-major; stride ``batch_size``.
    """
    features, dense_names, cap = list(meta.sparse_features), list(meta.dense_features), config.max_ind_range

    def make_batch(table: pa.Table | None, size: int) -> Batch:
        n = 0 if table is None else table.num_rows
        dense = np.zeros((size, len(dense_names)), dtype=np.float32)
        labels = np.zeros(size, dtype=np.float32)
        weights = np.zeros(size, dtype=np.float32)
        lengths = np.zeros((len(features), size), dtype=np.int32)
        weights[:n] = 1.0
        values = np.zeros(0, dtype=np.int64)
        if n:
            for j, name in enumerate(dense_names):
                dense[:n, j] = table.column(name).to_numpy()
            labels[:n] = table.column(meta.label).to_numpy()
            if not meta.multi_hot:
                values = np.empty((len(features), n), dtype=np.int64)
                for f, name in enumerate(features):
                    values[f] = table.column(name).to_numpy()
                lengths[:, :n] = 1
                values = values.reshape(-1)
            else:
                parts = []
                for f, name in enumerate(features):
                    column = table.column(name).combine_chunks()
                    lengths[f, :n] = pc.fill_null(pc.list_value_length(column), 0).to_numpy()
                    parts.append(pc.list_flatten(column).to_numpy().astype(np.int64))
                values = np.concatenate(parts) if parts else values
            if cap > 0:
                np.remainder(values, cap, out=values)
        kjt = KeyedJaggedTensor(keys=features, values=torch.from_numpy(values), lengths=torch.from_numpy(lengths.reshape(-1)))
        return Batch(dense_features=torch.from_numpy(dense), sparse_features=kjt,
                     labels=torch.from_numpy(labels), weights=torch.from_numpy(weights))  # fmt: skip

    return [meta.label, *dense_names, *features], make_batch
