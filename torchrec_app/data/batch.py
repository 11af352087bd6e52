"""The unit the trainer steps on: one rank's fixed-size batch, with a weight per row.

Every rank must run the same number of steps, or the embedding all-to-alls hang; and
every row of an evaluation split must count exactly once. Both hold if each batch has
exactly ``batch_size`` rows and the tail of a split is *padded* rather than dropped or
duplicated: padding rows carry ``weights == 0`` (no dense value, empty bags, label 0) and
contribute nothing to the loss or the metrics. Fixed shapes also suit GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


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
