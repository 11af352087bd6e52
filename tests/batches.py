"""Deterministic in-memory batches for tests that must not depend on files."""

from __future__ import annotations

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.data.batch import Batch


def random_batch(features: list[str], num_dense: int, num_embeddings: dict[str, int], rows: int,
                 generator: torch.Generator, max_ids_per_row: int = 3) -> Batch:
    """A batch of ``rows`` rows: random dense values, 0..max ids per feature per row, random labels."""
    lengths = torch.randint(0, max_ids_per_row + 1, (len(features), rows), generator=generator)
    values = torch.cat([
        torch.randint(0, num_embeddings[f], (int(lengths[i].sum()),), generator=generator)
        for i, f in enumerate(features)
    ])
    return Batch(
        dense_features=torch.rand(rows, num_dense, generator=generator),
        sparse_features=KeyedJaggedTensor.from_lengths_sync(keys=features, values=values, lengths=lengths.flatten().int()),
        labels=torch.randint(0, 2, (rows,), generator=generator).float(),
        weights=torch.ones(rows),
    )


def rank_slice(batch: Batch, rank: int, world_size: int) -> Batch:
    """Rows ``[rank * B, (rank + 1) * B)`` of a global batch of ``world_size * B`` rows."""
    rows = batch.labels.numel() // world_size
    start, stop = rank * rows, (rank + 1) * rows
    kjt = batch.sparse_features
    keys, lengths = kjt.keys(), kjt.lengths().view(len(kjt.keys()), -1)
    values_per_key = torch.split(kjt.values(), lengths.sum(dim=1).tolist())
    new_values, new_lengths = [], []
    for i in range(len(keys)):
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths[i].cumsum(0)])
        new_values.append(values_per_key[i][offsets[start]:offsets[stop]])
        new_lengths.append(lengths[i, start:stop])
    return Batch(
        dense_features=batch.dense_features[start:stop],
        sparse_features=KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(new_values), lengths=torch.cat(new_lengths)),
        labels=batch.labels[start:stop],
        weights=batch.weights[start:stop],
    )
