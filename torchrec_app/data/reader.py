"""Per-rank fixed-size batches from a preprocessed Parquet dataset.

    meta = load_metadata(data_dir)
    sizes = table_sizes(meta, config.data)                      # rows of each table
    stream = read_batches(data_dir, "train", batch_size=1024, rank=r, world_size=w,
                          config=config.data, shuffle=True, seed=0, epoch=e)
    for batch in stream: ...                                    # len(stream) batches

Division of rows across ranks (the policy the trainer relies on):

* The ``N`` rows of a split, in file order, are cut into ``world_size`` contiguous
  ranges; rank ``r`` reads rows ``[r N // W, (r + 1) N // W)`` (sizes differ by at most
  one). Each real row is read by exactly one rank per epoch.
* Every rank yields ``ceil(ceil(N / W) / batch_size)`` batches, computed from
  ``metadata.json`` alone, so all ranks step together and the embedding all-to-alls
  never wait on a rank that ran out. Every batch has exactly ``batch_size`` rows: a
  rank's last batch is padded, and a rank with fewer rows may end with a batch of
  padding only. Padding rows have weight 0, label 0, dense 0 and empty bags (length 0 in
  every feature); real rows have weight 1. Nothing is dropped or duplicated.
* ``shuffle=True`` (training): the row-group pieces of the rank's range are read in an
  order drawn from ``(seed, epoch, rank)`` and pass through a shuffle buffer of
  ``config.shuffle_buffer_rows`` rows, so each epoch has a different order.
  ``shuffle=False`` (evaluation): file order.
* A background thread prepares ``config.prefetch_batches`` batches ahead.
* ``config.max_ind_range > 0``: ids are taken modulo it here (vectorised), and
  :func:`table_sizes` caps the tables to match.

KJT layout: keys are ``meta.sparse_features`` in order; values int64; lengths int32
(one per row per feature, feature-major), stride ``batch_size``.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config.data import ReaderConfig
from torchrec_app.data.batch import Batch
from torchrec_app.data.metadata import DatasetMetadata, load_metadata


def table_sizes(meta: DatasetMetadata, config: ReaderConfig) -> dict[str, int]:
    """Rows of each sparse feature's table: ``num_embeddings``, capped at ``max_ind_range`` when set.

    >>> meta = DatasetMetadata(dense_features=[], sparse_features=["C1", "C2"], num_embeddings={"C1": 10, "C2": 500})
    >>> table_sizes(meta, ReaderConfig(max_ind_range=100))
    {'C1': 10, 'C2': 100}
    """
    cap = config.max_ind_range
    return {f: min(meta.num_embeddings[f], cap) if cap > 0 else meta.num_embeddings[f] for f in meta.sparse_features}


def rank_rows(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """The ``[start, end)`` rows of a split that ``rank`` reads.

    >>> [rank_rows(10, r, 3) for r in range(3)]
    [(0, 3), (3, 6), (6, 10)]
    """
    return num_rows * rank // world_size, num_rows * (rank + 1) // world_size


def num_batches(num_rows: int, batch_size: int, world_size: int) -> int:
    """Batches every rank yields for a split of ``num_rows`` rows.

    >>> num_batches(10, 2, 3), num_batches(0, 4, 2), num_batches(1, 4, 2)
    (2, 0, 1)
    """
    per_rank = -(-num_rows // world_size)
    return -(-per_rank // batch_size)


@dataclass(slots=True)
class _Rows:
    """A run of rows as numpy arrays (feature-major sparse)."""

    dense: np.ndarray  # n x D float32
    labels: np.ndarray  # n float32
    onehot: np.ndarray | None  # F x n int64 (one-hot datasets)
    values: list[np.ndarray] | None  # per feature, int64 (multi-hot datasets)
    offsets: list[np.ndarray] | None  # per feature, n + 1 int64

    def __len__(self) -> int:
        return len(self.labels)

    def slice(self, start: int, end: int) -> "_Rows":
        if self.onehot is not None:
            return _Rows(self.dense[start:end], self.labels[start:end], self.onehot[:, start:end], None, None)
        values = [v[o[start] : o[end]] for v, o in zip(self.values, self.offsets)]
        offsets = [o[start : end + 1] - o[start] for o in self.offsets]
        return _Rows(self.dense[start:end], self.labels[start:end], None, values, offsets)

    def take(self, index: np.ndarray) -> "_Rows":
        if self.onehot is not None:
            return _Rows(self.dense[index], self.labels[index], self.onehot[:, index], None, None)
        values, offsets = [], []
        for v, o in zip(self.values, self.offsets):
            lengths = (o[1:] - o[:-1])[index]
            new = np.zeros(len(index) + 1, dtype=np.int64)
            np.cumsum(lengths, out=new[1:])
            gather = np.repeat(o[:-1][index] - new[:-1], lengths) + np.arange(new[-1])
            values.append(v[gather])
            offsets.append(new)
        return _Rows(self.dense[index], self.labels[index], None, values, offsets)

    @staticmethod
    def concat(parts: list["_Rows"]) -> "_Rows":
        if len(parts) == 1:
            return parts[0]
        dense = np.concatenate([p.dense for p in parts])
        labels = np.concatenate([p.labels for p in parts])
        if parts[0].onehot is not None:
            return _Rows(dense, labels, np.concatenate([p.onehot for p in parts], axis=1), None, None)
        values, offsets = [], []
        for f in range(len(parts[0].values)):
            values.append(np.concatenate([p.values[f] for p in parts]))
            shifts = np.cumsum([0] + [p.offsets[f][-1] for p in parts[:-1]])
            offsets.append(np.concatenate([parts[0].offsets[f][:1]] + [p.offsets[f][1:] + s for p, s in zip(parts, shifts)]))
        return _Rows(dense, labels, None, values, offsets)


@dataclass(frozen=True, slots=True)
class _Piece:
    """Rows ``[start, start + length)`` of row group ``group`` of file ``path``."""

    path: str
    group: int
    start: int
    length: int


class BatchStream:
    """The batches of one rank for one epoch of one split (see the module docstring)."""

    def __init__(self, data_dir: str, split: str, *, batch_size: int, rank: int, world_size: int, config: ReaderConfig,
                 shuffle: bool, seed: int, epoch: int = 0):  # fmt: skip
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"read_batches: need batch_size >= 1 and 0 <= rank < world_size, got {batch_size=}, {rank=}, {world_size=}")
        self.meta = load_metadata(data_dir)
        if split not in self.meta.split_rows:
            raise ValueError(f"{data_dir}: the dataset has no {split!r} split; it has {sorted(self.meta.split_rows)}")
        self.data_dir, self.split = data_dir, split
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.config, self.shuffle, self.seed, self.epoch = config, shuffle, seed, epoch
        self.start, self.end = rank_rows(self.meta.split_rows[split], rank, world_size)
        self._len = num_batches(self.meta.split_rows[split], batch_size, world_size)

    def __len__(self) -> int:
        return self._len

    @property
    def num_rows(self) -> int:
        """Real (weight 1) rows this rank yields."""
        return self.end - self.start

    def __iter__(self) -> Iterator[Batch]:
        if self.config.prefetch_batches <= 0:
            return self._batches()
        return _prefetch(self._batches(), self.config.prefetch_batches)

    # -- producing -------------------------------------------------------------------

    def _pieces(self) -> list[_Piece]:
        pieces, offset = [], 0
        for entry in self.meta.files[self.split]:
            if offset >= self.end:
                break
            if offset + entry.rows > self.start:
                path = os.path.join(self.data_dir, entry.path)
                metadata = pq.ParquetFile(path).metadata
                group_start = offset
                for g in range(metadata.num_row_groups):
                    n = metadata.row_group(g).num_rows
                    lo, hi = max(group_start, self.start), min(group_start + n, self.end)
                    if lo < hi:
                        pieces.append(_Piece(path, g, lo - group_start, hi - lo))
                    group_start += n
            offset += entry.rows
        return pieces

    def _read(self, piece: _Piece, files: dict[str, pq.ParquetFile]) -> _Rows:
        if piece.path not in files:
            files[piece.path] = pq.ParquetFile(piece.path)
        table = files[piece.path].read_row_group(piece.group).slice(piece.start, piece.length)
        meta = self.meta
        dense = np.empty((table.num_rows, len(meta.dense_features)), dtype=np.float32)
        for j, name in enumerate(meta.dense_features):
            dense[:, j] = table.column(name).to_numpy()
        labels = table.column(meta.label).to_numpy().astype(np.float32)
        cap = self.config.max_ind_range
        if not meta.multi_hot:
            onehot = np.empty((len(meta.sparse_features), table.num_rows), dtype=np.int64)
            for f, name in enumerate(meta.sparse_features):
                onehot[f] = table.column(name).to_numpy()
            if cap > 0:
                np.remainder(onehot, cap, out=onehot)
            return _Rows(dense, labels, onehot, None, None)
        values, offsets = [], []
        for name in meta.sparse_features:
            column = table.column(name).combine_chunks()
            lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy()
            v = pc.list_flatten(column).to_numpy().astype(np.int64)
            if cap > 0:
                np.remainder(v, cap, out=v)
            o = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=o[1:])
            values.append(v)
            offsets.append(o)
        return _Rows(dense, labels, None, values, offsets)

    def _rows(self) -> Iterator[_Rows]:
        """Rows of this rank's range, shuffled when training."""
        pieces = self._pieces()
        files: dict[str, pq.ParquetFile] = {}
        buffer = self.config.shuffle_buffer_rows
        if not self.shuffle or buffer == 0:
            for piece in pieces:
                yield self._read(piece, files)
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        pool: list[_Rows] = []
        pooled = 0
        for i in rng.permutation(len(pieces)):
            rows = self._read(pieces[i], files)
            pool.append(rows)
            pooled += len(rows)
            if pooled >= buffer + self.batch_size:
                merged = _Rows.concat(pool)
                order = rng.permutation(pooled)
                emit = ((pooled - buffer // 2) // self.batch_size) * self.batch_size
                yield merged.take(order[:emit])
                pool, pooled = [merged.take(order[emit:])], pooled - emit
        if pooled:
            merged = _Rows.concat(pool)
            yield merged.take(rng.permutation(pooled))

    def _batches(self) -> Iterator[Batch]:
        size, emitted = self.batch_size, 0
        pending: list[_Rows] = []
        pending_rows = 0
        for rows in self._rows():
            pending.append(rows)
            pending_rows += len(rows)
            if pending_rows < size:
                continue
            merged = _Rows.concat(pending)
            whole = (pending_rows // size) * size
            for start in range(0, whole, size):
                yield self._to_batch(merged.slice(start, start + size))
                emitted += 1
            rest = merged.slice(whole, pending_rows)
            pending, pending_rows = ([rest] if len(rest) else []), len(rest)
        if pending_rows:
            yield self._to_batch(_Rows.concat(pending))
            emitted += 1
        while emitted < self._len:  # ranks with fewer rows: batches of padding only
            yield self._to_batch(None)
            emitted += 1

    def _to_batch(self, rows: _Rows | None) -> Batch:
        """A Batch of exactly ``batch_size`` rows: ``rows`` then padding (weight 0)."""
        size, meta = self.batch_size, self.meta
        n = 0 if rows is None else len(rows)
        num_features = len(meta.sparse_features)
        dense = np.zeros((size, len(meta.dense_features)), dtype=np.float32)
        labels = np.zeros(size, dtype=np.float32)
        weights = np.zeros(size, dtype=np.float32)
        lengths = np.zeros((num_features, size), dtype=np.int32)
        weights[:n] = 1.0
        if rows is None:
            values = np.zeros(0, dtype=np.int64)
        else:
            dense[:n] = rows.dense
            labels[:n] = rows.labels
            if rows.onehot is not None:
                values = np.ascontiguousarray(rows.onehot).reshape(-1)
                lengths[:, :n] = 1
            else:
                values = np.concatenate(rows.values) if num_features else np.zeros(0, np.int64)
                for f, o in enumerate(rows.offsets):
                    lengths[f, :n] = o[1:] - o[:-1]
        kjt = KeyedJaggedTensor(
            keys=list(meta.sparse_features),
            values=torch.from_numpy(values),
            lengths=torch.from_numpy(lengths.reshape(-1)),
        )
        return Batch(
            dense_features=torch.from_numpy(dense),
            sparse_features=kjt,
            labels=torch.from_numpy(labels),
            weights=torch.from_numpy(weights),
        )


def _prefetch(batches: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Run ``batches`` in a background thread, ``depth`` batches ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            q.put(err)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def read_batches(data_dir: str, split: str, *, batch_size: int, rank: int, world_size: int, config: ReaderConfig,
                 shuffle: bool, seed: int, epoch: int = 0) -> BatchStream:  # fmt: skip
    """The batches of ``rank`` for one epoch of ``split`` (see the module docstring).

    Raises:
        FileNotFoundError / ValueError: no complete dataset in ``data_dir`` (names the
            path), or no such split.
    """
    return BatchStream(data_dir, split, batch_size=batch_size, rank=rank, world_size=world_size, config=config,
                       shuffle=shuffle, seed=seed, epoch=epoch)  # fmt: skip
