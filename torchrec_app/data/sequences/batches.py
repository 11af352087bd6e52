"""Rows of a sequences dataset -> fixed-size :class:`SequenceBatch` es (the ``make_batch`` of kind ``sequences``).

The generic reader hands each slice of at most ``batch_size`` Parquet rows (``user``,
``items``, ``target``; see :mod:`~torchrec_app.data.sequences.preprocess`) to
``SequenceBatcher(...)(table, batch_size)``, which returns a batch of exactly
``batch_size`` rows, the tail padded (weight 0, no items, user -1).

Everything the item table is asked for travels in **one** ``KeyedJaggedTensor`` (stride
``B``), so ``TrainPipelineSparseDist`` can run its input all-to-all ahead of the forward.
Its keys, in order (a key is always present; unused ones have zero lengths):

===========  ===========================================================================
``item``     each row's items, oldest first: a training row's last ``train_len`` items, an
             evaluation row's last ``eval_len`` history items
``negative`` ``sampled`` loss: ``num_negatives`` uniform ids in row 0, shared by the batch
``catalog``  ``full`` loss, training batches: every item ``1..N`` in row 0, so each rank gets
             the whole catalog's embeddings for its softmax (only for catalogs that fit)
``genre_k``  side information (``k = 1..max_genres``): the k-th genre id of each ``item``
             position (0: none); all share the table ``t_genre``
``year``     side information: the year id of each ``item`` position (0: unknown)
``genre_catalog``  S3Rec pretraining, training batches: every genre ``1..G`` in row 0
===========  ===========================================================================

Dense tensors beside it: ``items`` (``B x width`` the same ids, right-padded with 0),
``lengths``, ``targets``, ``users``, ``weights``, and the items to mask in evaluation
(``seen_values`` / ``seen_lengths``: an evaluation row's *whole* history, not truncated).

Negatives are drawn from a generator seeded by the batcher's seed and the batch's rows, so
the same batch always gets the same negatives (reproducible and resumable).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

ITEM, NEGATIVE, CATALOG, YEAR, GENRE_CATALOG = "item", "negative", "catalog", "year", "genre_catalog"


def genre_key(k: int) -> str:
    """KJT key of the k-th genre slot (1-based)."""
    return f"genre_{k}"


@dataclass
class SequenceBatch(Pipelineable):
    """One rank's batch of ``B`` rows of a sequences dataset (see the module docstring).

    Attributes:
        features: KJT (stride ``B``) with the keys of the module docstring.
        items: ``B x W`` int64, the ``item`` ids right-padded with 0.
        lengths: ``B`` int64, ids per row in ``items``.
        targets: ``B`` int64, the held-out item of an evaluation row (0: training row or padding).
        users: ``B`` int64 (-1: padding).
        seen_values: int64, the items each row has seen (evaluation rows' whole history), row after row.
        seen_lengths: ``B`` int64.
        weights: ``B`` float32, 1 for a real row, 0 for padding.
    """

    features: KeyedJaggedTensor
    items: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    users: torch.Tensor
    seen_values: torch.Tensor
    seen_lengths: torch.Tensor
    weights: torch.Tensor

    def _map(self, fn) -> "SequenceBatch":
        return SequenceBatch(**{name: fn(getattr(self, name)) for name in self.__dataclass_fields__})

    def to(self, device: torch.device, non_blocking: bool = False) -> "SequenceBatch":
        return self._map(lambda t: t.to(device=device, non_blocking=non_blocking))

    def record_stream(self, stream: torch.Stream) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).record_stream(stream)

    def pin_memory(self) -> "SequenceBatch":
        return self._map(lambda t: t.pin_memory())

    @property
    def num_real_rows(self) -> int:
        return int(self.weights.count_nonzero())

    @property
    def seen_offsets(self) -> torch.Tensor:
        """``B + 1`` offsets into ``seen_values``."""
        return torch.nn.functional.pad(torch.cumsum(self.seen_lengths, 0), (1, 0))


@dataclass
class ItemSide:
    """Per-item side information: ``genre_ids`` ``(N + 1) x max_genres`` (0 pads) and ``year_ids`` ``N + 1``."""

    genre_ids: np.ndarray
    year_ids: np.ndarray

    @staticmethod
    def from_items_table(table: pa.Table, num_items: int, max_genres: int) -> "ItemSide":
        genre_ids = np.zeros((num_items + 1, max(1, max_genres)), dtype=np.int64)
        year_ids = np.zeros(num_items + 1, dtype=np.int64)
        items = table.column("item").to_numpy()
        year_ids[items] = table.column("year_id").to_numpy()
        for item, genres in zip(items, table.column("genre_ids").to_pylist()):
            genre_ids[item, : len(genres)] = genres
        return ItemSide(genre_ids[:, :max_genres] if max_genres else genre_ids[:, :0], year_ids)

    @staticmethod
    def load(data_dir: str, extra: dict) -> "ItemSide":
        """The side information of a preprocessed dataset (``items.parquet``, ``metadata.extra``)."""
        table = pq.read_table(os.path.join(data_dir, extra.get("items_file", "items.parquet")))
        return ItemSide.from_items_table(table, int(extra["num_items"]), int(extra.get("max_genres", 0)))


@dataclass
class SequenceBatcher:
    """``make_batch(table, batch_size) -> SequenceBatch`` for one model configuration.

    Args:
        num_items: catalog size N (ids 1..N; 0 is padding).
        train_len: items kept of a training row (the most recent ones).
        eval_len: history items kept of an evaluation row (the most recent ones).
        loss: ``full`` (adds the ``catalog`` key to training batches), ``sampled`` (adds
            ``num_negatives`` ids under ``negative``) or ``in_batch``.
        side: item side information to add as ``genre_k`` / ``year`` keys (None: no side keys).
        seed: seed of the negatives.
        genre_catalog: number of genres G to add as ``genre_catalog`` to training batches (0: none).

    >>> t = pa.table({"user": pa.array([3, 4], pa.int32()), "items": pa.array([[5, 6, 7], [8]], pa.list_(pa.int32())),
    ...               "target": pa.array([0, 0], pa.int32())})
    >>> b = SequenceBatcher(num_items=9, train_len=2, eval_len=2, loss="in_batch")(t, 3)
    >>> b.items.tolist(), b.lengths.tolist(), b.weights.tolist(), b.users.tolist()
    ([[6, 7], [8, 0], [0, 0]], [2, 1, 0], [1.0, 1.0, 0.0], [3, 4, -1])
    >>> b.features.keys(), b.features["item"].lengths().tolist()
    (['item'], [2, 1, 0])
    """

    num_items: int
    train_len: int
    eval_len: int
    loss: str = "full"
    num_negatives: int = 0
    side: ItemSide | None = None
    seed: int = 0
    genre_catalog: int = 0
    keys: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = [ITEM]
        if self.loss == "sampled":
            self.keys.append(NEGATIVE)
        if self.loss == "full":
            self.keys.append(CATALOG)
        if self.side is not None:
            self.keys += [genre_key(k + 1) for k in range(self.side.genre_ids.shape[1])] + [YEAR]
        if self.genre_catalog:
            self.keys.append(GENRE_CATALOG)

    @property
    def width(self) -> int:
        return max(self.train_len, self.eval_len)

    def __call__(self, table: pa.Table | None, batch_size: int) -> SequenceBatch:
        if table is None:  # a batch of padding only
            table = pa.table({"user": pa.array([], pa.int32()), "items": pa.array([], pa.list_(pa.int32())),
                              "target": pa.array([], pa.int32())})
        n = table.num_rows
        if n > batch_size:
            raise ValueError(f"make_batch got {n} rows for a batch of {batch_size}")
        users = table.column("user").to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
        targets = table.column("target").to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
        column = table.column("items")
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64) if n else np.zeros(0, np.int64)
        flat = pc.list_flatten(column).to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        evaluation = targets > 0
        keep = np.minimum(lengths, np.where(evaluation, self.eval_len, self.train_len))
        first = starts[:-1] + lengths - keep  # the most recent `keep` items of each row
        positions = np.arange(keep.sum()) - np.repeat(np.cumsum(keep) - keep, keep)  # 0.. within each row
        item_values = flat[np.repeat(first, keep) + positions]
        pad = batch_size - n
        item_lengths = np.concatenate([keep, np.zeros(pad, np.int64)])
        seen_lengths = np.concatenate([np.where(evaluation, lengths, 0), np.zeros(pad, np.int64)])
        seen_values = flat[np.repeat(evaluation, lengths)]
        values = {ITEM: item_values}
        key_lengths = {ITEM: item_lengths}
        if NEGATIVE in self.keys:
            rng = np.random.default_rng([self.seed, zlib.crc32(users.tobytes()), zlib.crc32(item_values[:64].tobytes())])
            values[NEGATIVE] = rng.integers(1, self.num_items + 1, size=self.num_negatives)
            key_lengths[NEGATIVE] = _first_row(self.num_negatives, batch_size)
        training = not evaluation.any()
        for key, count in ((CATALOG, self.num_items), (GENRE_CATALOG, self.genre_catalog)):
            if key in self.keys:
                values[key] = np.arange(1, count + 1) if training else np.zeros(0, np.int64)
                key_lengths[key] = _first_row(count if training else 0, batch_size)
        if self.side is not None:
            for k in range(self.side.genre_ids.shape[1]):
                values[genre_key(k + 1)] = self.side.genre_ids[item_values, k]
                key_lengths[genre_key(k + 1)] = item_lengths
            values[YEAR] = self.side.year_ids[item_values]
            key_lengths[YEAR] = item_lengths

        padded = np.zeros((batch_size, self.width), dtype=np.int64)
        padded[np.repeat(np.arange(n), keep), positions] = item_values
        features = KeyedJaggedTensor(
            keys=list(self.keys),
            values=torch.from_numpy(np.concatenate([values[k] for k in self.keys]).astype(np.int64)),
            lengths=torch.from_numpy(np.concatenate([key_lengths[k] for k in self.keys]).astype(np.int32)),
            stride=batch_size,
        )
        return SequenceBatch(
            features=features,
            items=torch.from_numpy(padded),
            lengths=torch.from_numpy(item_lengths),
            targets=torch.from_numpy(np.concatenate([targets, np.zeros(pad, np.int64)])),
            users=torch.from_numpy(np.concatenate([users, np.full(pad, -1, np.int64)])),
            seen_values=torch.from_numpy(seen_values.astype(np.int64)),
            seen_lengths=torch.from_numpy(seen_lengths),
            weights=torch.from_numpy(np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])),
        )


#: The Parquet columns a sequences dataset's batches read.
COLUMNS = ["user", "items", "target"]


def sequences_batch_maker(meta, config) -> tuple[list[str], SequenceBatcher]:
    """The model-independent batch maker of kind ``sequences`` (the reader's default): rows kept to
    the preprocessing's ``max_len + 1`` items, no loss-specific keys, no side information. Training
    uses the model's own (``Task.batch_maker``, :func:`torchrec_app.models.sequential.model.batcher_for`)."""
    max_len = int(meta.extra.get("max_len", 200))
    return list(COLUMNS), SequenceBatcher(num_items=int(meta.extra["num_items"]), train_len=max_len + 1, eval_len=max_len,
                                          loss="in_batch")


def _first_row(count: int, batch_size: int) -> np.ndarray:
    lengths = np.zeros(batch_size, dtype=np.int64)
    if batch_size:
        lengths[0] = count
    return lengths


def read_split(data_dir: str, split: str) -> pa.Table:
    """Every row of one split of a sequences dataset (small datasets, tests and tools)."""
    return pq.read_table(os.path.join(data_dir, f"{split}.parquet"))


def iter_batches(table: pa.Table, batcher: SequenceBatcher, batch_size: int, rank: int = 0, world_size: int = 1):
    """Fixed-size batches of this rank's contiguous row range, the same count on every rank (a stand-in
    for the generic reader, for tests and tools: no shuffle, no prefetch)."""
    rows = table.num_rows
    start, end = rows * rank // world_size, rows * (rank + 1) // world_size
    per_rank = -(-rows // world_size)
    for b in range(-(-per_rank // batch_size)):
        lo, hi = min(end, start + b * batch_size), min(end, start + (b + 1) * batch_size)
        yield batcher(table.slice(lo, hi - lo), batch_size)
