"""In-memory :class:`FeedBatch` es for the feed model's tests (built from Python lists, no files).

A row is a dict: ``dense`` (list of floats), ``pooled`` ({feature: [ids]}), ``item`` (the candidate
id, or None for a padding row), ``history`` ({action: [ids] newest first}), ``labels`` (one 0/1
per objective), ``importance`` (float, default 1).
"""

from __future__ import annotations

import random

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.data.feed.batch import ACTIONS, CANDIDATE, OBJECTIVES, FeedBatch, history_key
from torchrec_app.models.feed.model import FeedInputs

POOLED = ("user", "category", "keywords")
INPUTS = FeedInputs(num_dense=3, pooled_features=list(POOLED), pooled_rows={"user": 20, "category": 6, "keywords": 40}, num_items=50)


def _kjt(keys: list[str], per_row: list[dict[str, list[int]]]) -> KeyedJaggedTensor:
    values = [i for key in keys for row in per_row for i in row.get(key, [])]
    lengths = [len(row.get(key, [])) for key in keys for row in per_row]
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.tensor(values, dtype=torch.int64), lengths=torch.tensor(lengths, dtype=torch.int32)
    )


def feed_batch(rows: list[dict]) -> FeedBatch:
    """A FeedBatch of ``rows`` (see the module docstring); a row with ``item`` None is padding."""
    real = [row.get("item") is not None for row in rows]
    sequences = [
        {CANDIDATE: [row["item"]] if ok else [], **{history_key(a): row.get("history", {}).get(a, []) if ok else [] for a in ACTIONS}}
        for row, ok in zip(rows, real)
    ]
    return FeedBatch(
        dense_features=torch.tensor([row.get("dense", [0.0] * INPUTS.num_dense) for row in rows], dtype=torch.float32),
        pooled=_kjt(list(INPUTS.pooled_features), [row.get("pooled", {}) if ok else {} for row, ok in zip(rows, real)]),
        sequences=_kjt([CANDIDATE, *(history_key(a) for a in ACTIONS)], sequences),
        labels=torch.tensor(
            [row.get("labels", [0] * len(OBJECTIVES)) if ok else [0] * len(OBJECTIVES) for row, ok in zip(rows, real)], dtype=torch.float32
        ),
        weights=torch.tensor([1.0 if ok else 0.0 for ok in real]),
        importance=torch.tensor([row.get("importance", 1.0) if ok else 0.0 for row, ok in zip(rows, real)]),
    )


def random_rows(count: int, seed: int, max_history: int = 6, inputs: FeedInputs = INPUTS) -> list[dict]:
    """Random real rows: histories of 0..max_history items per action (empty ones included)."""
    rng = random.Random(seed)
    return [{
        "dense": [rng.random() for _ in range(inputs.num_dense)],
        "pooled": {f: [rng.randrange(inputs.pooled_rows[f]) for _ in range(rng.randint(0 if f == "keywords" else 1, 3))]
                   for f in inputs.pooled_features},
        "item": rng.randrange(inputs.num_items),
        "history": {a: [rng.randrange(inputs.num_items) for _ in range(rng.randint(0, max_history))] for a in ACTIONS},
        "labels": [int(rng.random() < p) for p in (0.4, 0.3, 0.2, 0.2, 0.1)],
    } for _ in range(count)]  # fmt: skip


def without_history(batch: FeedBatch) -> FeedBatch:
    """``batch`` with the candidate as the only sequence key (what the task's batch maker sends for ``encoder=none``)."""
    batch.sequences = batch.sequences.split([1, len(batch.sequences.keys()) - 1])[0]
    return batch
