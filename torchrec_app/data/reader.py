"""Per-rank fixed-size batches from a preprocessed Parquet dataset, seekable and resumable.

    meta = load_metadata(data_dir)
    reader = read_batches(data_dir, "train", batch_size=1024, rank=r, world_size=w,
                          config=config.data, shuffle=True, seed=0)
    for batch in reader.batches(epoch=e, start=k): ...        # len(reader) batches per epoch
    train = TrainBatches(reader)                               # endless, Stateful: epoch and batch
    for batch in train.take(n): ...

Division of rows across ranks (the policy the trainer relies on):

* The ``N`` rows of a split, in file order, are cut into ``world_size`` contiguous
  ranges; rank ``r`` reads rows ``[r N // W, (r + 1) N // W)`` (sizes differ by at most
  one). Each real row is read by exactly one rank per epoch.
* Every rank yields ``ceil(ceil(N / W) / batch_size)`` batches per epoch, computed from
  ``metadata.json`` alone, so all ranks step together and the embedding all-to-alls
  never wait on a rank that ran out. Every batch has exactly ``batch_size`` rows: a
  rank's last batch is padded, and a rank with fewer rows may end with a batch of
  padding only. Padding rows have weight 0 (what else they hold is the batch kind's
  business: for Criteo label 0, dense 0 and empty bags). Nothing is dropped or duplicated.

Order of rows in an epoch (``shuffle=True``, training): the rank's range is made of
*pieces* (the parts of Parquet row groups inside it); their order is drawn from
``(seed, epoch, rank)``, and the resulting sequence of rows is cut into *windows* of
``config.shuffle_buffer_rows`` rows, each permuted by its own draw from
``(seed, epoch, rank, window)``. Batch ``k`` is rows ``[k B, (k + 1) B)`` of that order.
Because the order is a function of the metadata and the seed only, a reader can start
at any batch of any epoch by reading just the window that holds it: resume **seeks**
(:meth:`SplitReader.batches` ``start=``) instead of re-reading the batches already
trained on. (The previous shuffle buffer mixed rows of neighbouring pieces the same way,
but its state depended on every row read before.) ``shuffle=False`` (evaluation) or a
window of 0 rows: file order.

What a batch *is* depends on the dataset's ``kind`` (``metadata.json``): a registered
:data:`BatchMaker` turns a ``pyarrow.Table`` of up to ``batch_size`` rows into a padded
batch (:func:`register_batch_maker`; Criteo's is :func:`torchrec_app.data.batch.criteo_batch_maker`).
A background thread prepares ``config.prefetch_batches`` batches ahead.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from torchrec_app.config.data import ReaderConfig
from torchrec_app.data.batch import criteo_batch_maker
from torchrec_app.data.feed.batches import feed_batch_maker
from torchrec_app.data.metadata import DatasetMetadata, load_metadata
from torchrec_app.data.sequences.batches import sequences_batch_maker

#: ``make_batch(table, batch_size)``: up to ``batch_size`` rows (``None``: none) -> one padded batch.
BatchMaker = Callable[[pa.Table | None, int], Any]
#: dataset kind -> ``(metadata, reader config) -> (columns to read, BatchMaker)``
BATCH_MAKERS: dict[str, Callable[[DatasetMetadata, ReaderConfig], tuple[list[str], BatchMaker]]] = {
    "criteo": criteo_batch_maker,
    "sequences": sequences_batch_maker,
    "feed": feed_batch_maker,
}


def register_batch_maker(kind: str, factory: Callable[[DatasetMetadata, ReaderConfig], tuple[list[str], BatchMaker]]) -> None:
    """Make datasets whose ``metadata.json`` says ``kind`` readable: ``factory(meta, config)`` returns
    the Parquet columns to read and the function turning a table of them into a batch."""
    BATCH_MAKERS[kind] = factory


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


@dataclass(frozen=True, slots=True)
class _Piece:
    """Rows ``[start, start + length)`` of row group ``group`` of file ``path``."""

    path: str
    group: int
    start: int
    length: int


class SplitReader:
    """The batches of one rank for one split, any epoch, from any batch (see the module docstring)."""

    def __init__(self, data_dir: str, split: str, *, batch_size: int, rank: int, world_size: int, config: ReaderConfig,
                 shuffle: bool, seed: int, epoch: int = 0,
                 batch_maker: tuple[list[str], BatchMaker] | None = None):  # fmt: skip
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"read_batches: need batch_size >= 1 and 0 <= rank < world_size, got {batch_size=}, {rank=}, {world_size=}")
        self.meta = load_metadata(data_dir)
        if split not in self.meta.split_rows:
            raise ValueError(f"{data_dir}: the dataset has no {split!r} split; it has {sorted(self.meta.split_rows)}")
        if batch_maker is None and self.meta.kind not in BATCH_MAKERS:
            raise ValueError(f"{data_dir}: dataset kind {self.meta.kind!r} has no batch reader; known: {sorted(BATCH_MAKERS)}")
        self.data_dir, self.split = data_dir, split
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.config, self.shuffle, self.seed, self.epoch = config, shuffle, seed, epoch
        self.start, self.end = rank_rows(self.meta.split_rows[split], rank, world_size)
        self._len = num_batches(self.meta.split_rows[split], batch_size, world_size)
        self.columns, self.make_batch = batch_maker or BATCH_MAKERS[self.meta.kind](self.meta, config)
        self._pieces_in_file_order: list[_Piece] | None = None
        #: What rebuilds this reader in another process (:mod:`~torchrec_app.data.reader_process`).
        self.arguments = dict(data_dir=data_dir, split=split, batch_size=batch_size, rank=rank, world_size=world_size,
                              config=config, shuffle=shuffle, seed=seed, epoch=epoch, batch_maker=batch_maker)  # fmt: skip

    def __len__(self) -> int:
        return self._len

    @property
    def num_rows(self) -> int:
        """Real (weight 1) rows this rank yields per epoch."""
        return self.end - self.start

    def __iter__(self) -> Iterator[Any]:
        """The batches of epoch ``self.epoch``, from the first."""
        return self.batches(self.epoch)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Batches ``start .. len - 1`` of ``epoch``, reading only the rows they hold."""
        if not 0 <= start <= self._len:
            raise ValueError(f"batch {start} is outside an epoch of {self._len} batches")
        batches = self._batches(epoch, start)
        return _prefetch(batches, self.config.prefetch_batches) if self.config.prefetch_batches > 0 else batches

    # -- the order of rows in an epoch ---------------------------------------------------

    def _pieces(self) -> list[_Piece]:
        if self._pieces_in_file_order is None:
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
            self._pieces_in_file_order = pieces
        return self._pieces_in_file_order

    def _window_rows(self) -> int:
        """Rows per shuffled window; 0 = file order, no permutation."""
        return self.config.shuffle_buffer_rows if self.shuffle else 0

    def _epoch_pieces(self, epoch: int) -> list[_Piece]:
        pieces = self._pieces()
        if not self._window_rows():
            return pieces
        order = np.random.default_rng([self.seed, epoch, self.rank]).permutation(len(pieces))
        return [pieces[i] for i in order]

    def _tables(self, epoch: int, first_row: int) -> Iterator[pa.Table]:
        """Consecutive runs of this epoch's row order, starting at position ``first_row``."""
        pieces = self._epoch_pieces(epoch)
        offsets = np.cumsum([0] + [p.length for p in pieces])
        total = int(offsets[-1])
        window = self._window_rows()
        cache = _RowGroupCache(self.columns)
        if not window:
            for i, piece in enumerate(pieces):
                lo = max(first_row - int(offsets[i]), 0)
                if lo < piece.length:
                    yield cache.read(piece, lo, piece.length - lo)
            return
        for w in range(first_row // window, -(-total // window)):
            begin, end = w * window, min((w + 1) * window, total)
            parts = []
            for i in range(int(np.searchsorted(offsets, begin, side="right")) - 1, len(pieces)):
                if offsets[i] >= end:
                    break
                lo, hi = max(begin, int(offsets[i])), min(end, int(offsets[i + 1]))
                parts.append(cache.read(pieces[i], lo - int(offsets[i]), hi - lo))
            order = np.random.default_rng([self.seed, epoch, self.rank, w]).permutation(end - begin)
            skip = max(first_row - begin, 0)
            yield pa.concat_tables(parts).take(pa.array(order[skip:]))

    def _batches(self, epoch: int, start: int) -> Iterator[Any]:
        size = self.batch_size
        emitted = start
        pending: list[pa.Table] = []
        pending_rows = 0
        if start * size < self.num_rows:
            for table in self._tables(epoch, start * size):
                pending.append(table)
                pending_rows += table.num_rows
                if pending_rows < size:
                    continue
                merged = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
                whole = (pending_rows // size) * size
                for offset in range(0, whole, size):
                    yield self.make_batch(merged.slice(offset, size), size)
                    emitted += 1
                rest = merged.slice(whole)
                pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
            if pending_rows:
                yield self.make_batch(pa.concat_tables(pending), size)
                emitted += 1
        while emitted < self._len:  # ranks with fewer rows: batches of padding only
            yield self.make_batch(None, size)
            emitted += 1


class _RowGroupCache:
    """Decoded row groups, the last few kept: neighbouring windows share a row group."""

    def __init__(self, columns: list[str], keep: int = 2) -> None:
        self.columns, self.keep = columns, keep
        self.files: dict[str, pq.ParquetFile] = {}
        self.groups: OrderedDict[tuple[str, int], pa.Table] = OrderedDict()

    def read(self, piece: _Piece, offset: int, length: int) -> pa.Table:
        """Rows ``[offset, offset + length)`` of ``piece``."""
        key = (piece.path, piece.group)
        if key not in self.groups:
            if piece.path not in self.files:
                self.files[piece.path] = pq.ParquetFile(piece.path)
            file = self.files[piece.path]
            present = [c for c in self.columns if c in file.schema_arrow.names]  # e.g. no label in a score split
            self.groups[key] = file.read_row_group(piece.group, columns=present)
            while len(self.groups) > self.keep:
                self.groups.popitem(last=False)
        return self.groups[key].slice(piece.start + offset, length)


class TrainBatches:
    """The train split as an endless stream of epochs, with its position (``Stateful``).

    ``take(n)`` yields the next ``n`` batches, crossing epoch boundaries; the position
    (epoch, batch in epoch) counts the batches handed out, so after a drained segment it
    is exactly what was trained on. ``state_dict`` / ``load_state_dict`` save and restore
    it; a restored stream seeks straight to its batch (see the module docstring).

    With ``reader.config.reader_process`` the batches are prepared in a separate process
    (:class:`~torchrec_app.data.reader_process.ReaderProcess`, started here so that its
    start-up overlaps the caller's; same batches, same order); :meth:`close` stops it.
    """

    def __init__(self, reader: SplitReader) -> None:
        self.reader = reader
        self.epoch = 0
        self.batch_in_epoch = 0
        self._live: Iterator[Any] | None = None  # the current epoch's iterator, kept across take() calls
        self.process = None
        if reader.config.reader_process:
            from torchrec_app.data.reader_process import ReaderProcess

            in_child = dict(reader.arguments, config=replace(reader.config, reader_process=False, prefetch_batches=0))
            self.process = ReaderProcess(SplitReader, in_child, depth=max(1, reader.config.prefetch_batches), nice=reader.config.reader_nice)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.reader)

    def take(self, n: int) -> Iterator[Any]:
        """The next ``n`` batches."""
        for _ in range(n):
            if self.batch_in_epoch >= len(self.reader):
                self.epoch, self.batch_in_epoch, self._live = self.epoch + 1, 0, None
            if self._live is None:
                source = self.process or self.reader
                self._live = source.batches(self.epoch, self.batch_in_epoch)
            batch = next(self._live)
            self.batch_in_epoch += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch_in_epoch, self._live = int(state["epoch"]), int(state["batch_in_epoch"]), None

    def wait_ready(self) -> float:
        """Wait for the reader process to have started, if there is one; the seconds waited."""
        return self.process.wait_ready() if self.process is not None else 0.0

    def close(self) -> None:
        """Stop the reader process, if there is one (idempotent)."""
        self._live = None
        if self.process is not None:
            self.process.close()


def _prefetch(batches: Iterator[Any], depth: int) -> Iterator[Any]:
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
                 shuffle: bool, seed: int, epoch: int = 0,
                 batch_maker: tuple[list[str], BatchMaker] | None = None) -> SplitReader:  # fmt: skip
    """The reader of ``rank`` for ``split``; iterating it yields epoch ``epoch`` (see the module docstring).

    ``batch_maker``: ``(columns, make_batch)`` to use instead of the dataset kind's registered one
    (a model family whose batches depend on its settings, ``Task.batch_maker``).

    Raises:
        FileNotFoundError / ValueError: no complete dataset in ``data_dir`` (names the
            path), no such split, or a dataset kind without a batch reader.
    """
    return SplitReader(data_dir, split, batch_size=batch_size, rank=rank, world_size=world_size, config=config,
                       shuffle=shuffle, seed=seed, epoch=epoch, batch_maker=batch_maker)  # fmt: skip
