"""Per-feature vocabularies: raw ids counted on the train split, frequent ones numbered.

Index 0 is reserved for ids seen fewer than ``min_frequency`` times in train and for ids
never seen there (valid/test). Kept ids get 1..V in order of decreasing count (ties by
raw id), so hot rows sit at the start of the table. A feature's table has ``V + 1`` rows.

Each vocabulary is saved beside the data as ``vocab/<feature>.parquet`` with columns
``raw_id`` (uint64, sorted), ``count`` (int64, in train) and ``index`` (int32; 0 when
rare), so the counts of every train id are kept too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from torchrec_app.utils.fs import atomic_path

OOV_INDEX = 0


def hashed_ids(raw: np.ndarray, hash_size: int) -> np.ndarray:
    """The ``hash`` id strategy: ``raw % hash_size`` of uint64 raw ids.

    >>> hashed_ids(np.array([5, 12], np.uint64), hash_size=7).tolist()
    [5, 5]
    """
    return raw % np.uint64(hash_size)


@dataclass(slots=True)
class Counts:
    """Distinct raw ids (uint64; sorted when made by ``of`` or ``merge``) and how often each occurs."""

    ids: np.ndarray
    counts: np.ndarray

    @staticmethod
    def of(values: np.ndarray) -> "Counts":
        ids, counts = np.unique(values, return_counts=True)
        return Counts(ids.astype(np.uint64), counts.astype(np.int64))

    @staticmethod
    def merge(parts: list["Counts"]) -> "Counts":
        """Sum counts of the same ids.

        >>> Counts.merge([Counts.of(np.array([5, 5, 7], np.uint64)), Counts.of(np.array([7, 9], np.uint64))])
        Counts(ids=array([5, 7, 9], dtype=uint64), counts=array([2, 2, 1]))
        """
        if not parts:
            return Counts(np.zeros(0, np.uint64), np.zeros(0, np.int64))
        ids, inverse = np.unique(np.concatenate([p.ids for p in parts]), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([p.counts for p in parts]), minlength=len(ids))
        return Counts(ids.astype(np.uint64), counts.astype(np.int64))


@dataclass(slots=True)
class Vocabulary:
    """Lookup of raw ids to table rows for one feature.

    >>> v = Vocabulary.build(Counts(np.array([3, 8, 9], np.uint64), np.array([5, 1, 7])), min_frequency=2)
    >>> v.num_embeddings, v.lookup(np.array([9, 3, 8, 4], np.uint64)).tolist()
    (3, [1, 2, 0, 0])
    """

    ids: np.ndarray  # sorted raw ids seen in train
    counts: np.ndarray  # their train counts
    index: np.ndarray  # their table row (0: rare)
    _table: "_HashTable | None" = field(default=None, repr=False)

    @staticmethod
    def build(counts: Counts, min_frequency: int) -> "Vocabulary":
        kept = np.flatnonzero(counts.counts >= min_frequency)
        order = kept[np.lexsort((counts.ids[kept], -counts.counts[kept]))]
        index = np.zeros(len(counts.ids), dtype=np.int32)
        index[order] = np.arange(1, len(order) + 1, dtype=np.int32)
        return Vocabulary(counts.ids, counts.counts, index)

    @property
    def num_embeddings(self) -> int:
        return int(self.index.max(initial=0)) + 1

    def lookup(self, raw: np.ndarray) -> np.ndarray:
        """Table rows (int32) of raw ids; rare and unseen ids -> 0.

        A vectorised hash table: keys are bucketed by a multiplicative hash into at least
        twice as many buckets as keys, so most lookups resolve in one or two gathers
        (about 3-5x faster than ``np.searchsorted`` on large vocabularies).
        """
        if self._table is None:
            self._table = _HashTable.build(self.ids, self.index)
        return self._table.lookup(np.asarray(raw, dtype=np.uint64))

    def save(self, path: str) -> None:
        """Write as Parquet (temporary name, then rename)."""
        table = pa.table({"raw_id": self.ids, "count": self.counts, "index": self.index})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)

    @staticmethod
    def load(path: str) -> "Vocabulary":
        table = pq.read_table(path)
        return Vocabulary(
            table.column("raw_id").to_numpy().astype(np.uint64),
            table.column("count").to_numpy(),
            table.column("index").to_numpy().astype(np.int32),
        )


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


@dataclass(slots=True)
class _HashTable:
    """Keys grouped by bucket (``hash(key) >> (64 - bits)``), with each bucket's start."""

    bits: int
    keys: np.ndarray  # uint64, bucket order
    values: np.ndarray  # int32, same order
    starts: np.ndarray  # int64, 2**bits + 1

    @staticmethod
    def build(keys: np.ndarray, values: np.ndarray) -> "_HashTable":
        bits = max(4, int(np.ceil(np.log2(max(2 * len(keys), 2)))))
        buckets = _HashTable._bucket(keys, bits)
        order = np.argsort(buckets, kind="stable")
        starts = np.searchsorted(buckets[order], np.arange((1 << bits) + 1))
        return _HashTable(bits, keys[order], values[order].astype(np.int32), starts)

    @staticmethod
    def _bucket(keys: np.ndarray, bits: int) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((keys * _HASH_MULTIPLIER) >> np.uint64(64 - bits)).astype(np.intp)

    def lookup(self, raw: np.ndarray) -> np.ndarray:
        out = np.zeros(len(raw), dtype=np.int32)
        bucket = self._bucket(raw, self.bits)
        pos, end = self.starts[bucket], self.starts[bucket + 1]
        active = np.flatnonzero(pos < end)
        pos, end = pos[active], end[active]
        while len(active):
            hit = self.keys[pos] == raw[active]
            out[active[hit]] = self.values[pos[hit]]
            more = ~hit & (pos + 1 < end)
            active, pos, end = active[more], pos[more] + 1, end[more]
        return out
