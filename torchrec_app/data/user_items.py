"""A sequences dataset -> the user-item layout of one protocol, for EASE, Multi-VAE and their ensembles.

General recommenders read a user's items as a *set* (a row of the user-item matrix),
not a sequence. ``preprocess --kind user_items --input SEQUENCES_DIR`` derives that layout
from a dataset written by ``preprocess --kind sequences`` (so both families start from the
same implicit feedback, k-core and ids) for one of two protocols:

* ``general`` (random held-out past items, "weak generalisation"): per user with ``n >= 3``
  items, ``h = max(1, round(holdout_fraction * n))`` items drawn at random are the test
  targets, ``h`` others the valid targets, the rest train. Valid input (and masked items):
  the train items; test input: train + valid items. The draw is a hash of ``(seed, user)``.
* ``sequential`` (the future): the sequences dataset's own valid / test targets and
  histories (its leave-one-out or time cut); train rows are each user's ``train``
  interactions. Users, targets and masked items equal the next-item models' ones, so
  ``torchrec-app compare`` pairs an EASE run with a SASRec run user by user.

Both are leak-free (tested): no train row holds a valid or test target of its user, no
valid input holds a test target, and no input holds its own targets.

Layout (readable with pyarrow alone)::

    DIR/metadata.json    kind "user_items"; num_embeddings {item: N + 1}; extra: protocol, source, counts
    DIR/train.parquet    user int32, items list<int32> (train items, time order), targets list<int32> (empty)
    DIR/valid.parquet    user, items (the input, = the items masked in the ranking), targets (held out)
    DIR/test.parquet     same, for the test targets
    DIR/items.parquet    copied from the sequences dataset (side information: year, genres)

Batches (:class:`UserItemsBatch`, the kind's batch maker): one row per user, the input
items in one ``KeyedJaggedTensor`` key ``item`` (so ``TrainPipelineSparseDist`` runs the
input all-to-all of a sharded item table ahead of the forward).
"""

from __future__ import annotations

import os
import shutil
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from torchrec_app.config.general import UserItemsConfig
from torchrec_app.data.metadata import METADATA_FILE, DatasetMetadata, SplitFile, load_metadata, save_metadata
from torchrec_app.data.truth import TRUTH_FILE
from torchrec_app.utils.fs import atomic_path

KIND = "user_items"
ITEM = "item"
COLUMNS = ["user", "items", "targets"]
ROW_SCHEMA = pa.schema([("user", pa.int32()), ("items", pa.list_(pa.int32())), ("targets", pa.list_(pa.int32()))])


def _hash_seed(*values: int) -> int:
    return zlib.crc32(np.asarray(values, dtype=np.int64).tobytes())


def general_holdout(items: np.ndarray, user: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, valid, test)`` items of one user, each in the input's (time) order.

    >>> train, valid, test = general_holdout(np.arange(1, 21), user=3, fraction=0.1, seed=0)
    >>> len(train), len(valid), len(test), sorted(set(train) | set(valid) | set(test)) == list(range(1, 21))
    (16, 2, 2, True)
    >>> [len(x) for x in general_holdout(np.array([4, 5]), 0, 0.1, 0)]   # fewer than 3 items: train only
    [2, 0, 0]
    """
    n = len(items)
    if n < 3:
        return items, items[:0], items[:0]
    held = max(1, int(round(fraction * n)))
    held = min(held, (n - 1) // 2)
    order = np.random.default_rng(_hash_seed(seed, user)).permutation(n)
    test_pos, valid_pos = np.sort(order[:held]), np.sort(order[held : 2 * held])
    train_mask = np.ones(n, dtype=bool)
    train_mask[order[: 2 * held]] = False
    return items[train_mask], items[valid_pos], items[test_pos]


@dataclass(slots=True)
class _Rows:
    users: list
    items: list
    targets: list

    def add(self, user: int, items: np.ndarray, targets: np.ndarray) -> None:
        self.users.append(user)
        self.items.append(items)
        self.targets.append(targets)

    def table(self) -> pa.Table:
        def lists(parts: list[np.ndarray]) -> pa.Array:
            lengths = np.array([len(p) for p in parts], dtype=np.int64)
            offsets = np.zeros(len(parts) + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            flat = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))

        return pa.table({"user": pa.array(np.asarray(self.users, dtype=np.int32)), "items": lists(self.items),
                         "targets": lists(self.targets)}, schema=ROW_SCHEMA)  # fmt: skip


def _user_groups(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, offsets) of a time-ordered ``user, item`` table grouped by user (users ascending)."""
    users = table.column("user").to_numpy().astype(np.int64)
    items = table.column("item").to_numpy().astype(np.int32)
    order = np.argsort(users, kind="stable")  # keeps each user's time order
    users, items = users[order], items[order]
    uniques, starts = np.unique(users, return_index=True)
    offsets = np.append(starts, len(users))
    return uniques, items, offsets


def derive_user_items(sequences_dir: str, out_dir: str, config: UserItemsConfig) -> DatasetMetadata:
    """Write the user-item layout of ``config.protocol`` from the sequences dataset ``sequences_dir``.

    Raises ``ValueError`` naming the directory when it is not a sequences dataset; nothing is
    written before everything is computed, files are written atomically, ``metadata.json`` last.
    """
    source = load_metadata(sequences_dir)
    if source.kind != "sequences":
        raise ValueError(f"{sequences_dir}: a {source.kind!r} dataset; --kind user_items derives from a sequences dataset "
                         "(torchrec-app preprocess --kind sequences ...)")  # fmt: skip
    extra = source.extra
    interactions = pq.read_table(os.path.join(sequences_dir, extra.get("interactions_file", "interactions.parquet")),
                                 columns=["user", "item", "split"])  # fmt: skip
    rows = {name: _Rows([], [], []) for name in ("train", "valid", "test")}
    stats: dict = {}
    if config.protocol == "general":
        users, items, offsets = _user_groups(interactions)
        for u, start, end in zip(users.tolist(), offsets[:-1].tolist(), offsets[1:].tolist()):
            train, valid, test = general_holdout(items[start:end], u, config.holdout_fraction, config.seed)
            rows["train"].add(u, train, train[:0])
            if len(test):
                rows["valid"].add(u, train, valid)
                kept = np.isin(items[start:end], test, invert=True)  # train + valid, in time order
                rows["test"].add(u, items[start:end][kept], test)
    else:
        split = pc.cast(interactions.column("split"), pa.string())
        train_users, train_items, offsets = _user_groups(interactions.filter(pc.equal(split, "train")))
        for u, start, end in zip(train_users.tolist(), offsets[:-1].tolist(), offsets[1:].tolist()):
            rows["train"].add(u, train_items[start:end], train_items[:0])
        for name in ("valid", "test"):
            table = pq.read_table(os.path.join(sequences_dir, f"{name}.parquet"))
            for u, history, target in zip(table.column("user").to_pylist(), table.column("items").to_pylist(),
                                          table.column("target").to_pylist()):  # fmt: skip
                rows[name].add(u, np.asarray(history, dtype=np.int32), np.asarray([target], dtype=np.int32))
        stats["split"] = source.split_policy
    tables = {name: r.table() for name, r in rows.items()}

    os.makedirs(out_dir, exist_ok=True)
    metadata_path = os.path.join(out_dir, METADATA_FILE)
    if os.path.exists(metadata_path):
        os.remove(metadata_path)
    for name, table in tables.items():
        with atomic_path(os.path.join(out_dir, f"{name}.parquet")) as tmp:
            pq.write_table(table, tmp, compression="lz4")
    for name in (extra.get("items_file", "items.parquet"), TRUTH_FILE):
        path = os.path.join(sequences_dir, name)
        if os.path.isfile(path) and (name != TRUTH_FILE or config.protocol == "sequential"):  # the oracle is next-item's
            with atomic_path(os.path.join(out_dir, name)) as tmp:
                shutil.copyfile(path, tmp)
    meta = DatasetMetadata(
        kind=KIND, label="targets", dense_features=[], sparse_features=[ITEM],
        num_embeddings={ITEM: int(extra["num_items"]) + 1}, id_strategies={ITEM: "vocab"},
        split_policy=config.protocol, split_rows={n: t.num_rows for n, t in tables.items()},
        files={n: [SplitFile(path=f"{n}.parquet", rows=t.num_rows)] for n, t in tables.items()},
        sources=[{"path": os.path.abspath(sequences_dir), "kind": "sequences"}], dense_transform="", vocab_dir="",
        extra={
            "protocol": config.protocol, "holdout_fraction": config.holdout_fraction, "seed": config.seed,
            "num_items": int(extra["num_items"]), "num_users": int(extra["num_users"]),
            "items_file": extra.get("items_file", "items.parquet"), "max_genres": extra.get("max_genres", 0),
            "genres": extra.get("genres", []), "years": extra.get("years", []),
            "train_interactions": int(sum(len(x) for x in rows["train"].items)),
            "valid_targets": int(sum(len(x) for x in rows["valid"].targets)),
            "test_targets": int(sum(len(x) for x in rows["test"].targets)), **stats,
        },
    )  # fmt: skip
    save_metadata(out_dir, meta)
    return meta


def read_split(data_dir: str, split: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """``(users, items per user, targets per user)`` of one split of a user-item dataset."""
    table = pq.read_table(os.path.join(data_dir, f"{split}.parquet"))
    items = [np.asarray(x, dtype=np.int64) for x in table.column("items").to_pylist()]
    targets = [np.asarray(x, dtype=np.int64) for x in table.column("targets").to_pylist()]
    return table.column("user").to_numpy().astype(np.int64), items, targets


# ------------------------------------------------------------------ batches


@dataclass
class UserItemsBatch(Pipelineable):
    """``B`` users of a user-item split (the tail padded: weight 0, user -1, no items).

    Attributes:
        features: KJT (stride ``B``), key ``item``: the input items (training: after input dropout).
        items: ``B x W`` int64, every input item (before dropout), right-padded with 0: the
            multinomial likelihood's counts, and the items masked in the ranking.
        num_items: ``B`` float32, input items per user before dropout (``||x||^2`` of the binary row).
        targets: ``B x T`` int64 held-out items, -1 padded (training rows: ``B x 0``).
        users: ``B`` int64.
        weights: ``B`` float32, 1 for a real row, 0 for padding.
    """

    features: KeyedJaggedTensor
    items: torch.Tensor
    num_items: torch.Tensor
    targets: torch.Tensor
    users: torch.Tensor
    weights: torch.Tensor

    def _map(self, fn) -> "UserItemsBatch":
        return UserItemsBatch(**{name: fn(getattr(self, name)) for name in self.__dataclass_fields__})

    def to(self, device: torch.device, non_blocking: bool = False) -> "UserItemsBatch":
        return self._map(lambda t: t.to(device=device, non_blocking=non_blocking))

    def record_stream(self, stream: torch.Stream) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).record_stream(stream)

    def pin_memory(self) -> "UserItemsBatch":
        return self._map(lambda t: t.pin_memory())

    def seen(self) -> torch.Tensor:
        """``B x W`` the input items with -1 for padding (what the evaluator masks)."""
        return torch.where(self.items > 0, self.items, torch.full_like(self.items, -1))


class UserItemsBatcher:
    """``make_batch(table, batch_size)`` of the ``user_items`` kind.

    ``input_dropout`` > 0 drops that share of each *training* user's input items from the KJT
    (Multi-VAE's input dropout), drawn from a hash of ``(seed, user, how many times this batcher
    has batched the user)``: independent of the rank layout, new masks every epoch; a resumed
    run draws masks afresh. Evaluation rows (with targets) are never dropped.
    """

    def __init__(self, input_dropout: float = 0.0, seed: int = 0) -> None:
        self.input_dropout, self.seed = input_dropout, seed
        self._times: dict[int, int] = {}

    def __call__(self, table: pa.Table, batch_size: int) -> UserItemsBatch:
        rows = table.num_rows
        users = table.column("user").to_numpy().astype(np.int64)
        items = [np.asarray(x, dtype=np.int64) for x in table.column("items").to_pylist()]
        targets = [np.asarray(x, dtype=np.int64) for x in table.column("targets").to_pylist()]
        training = all(len(t) == 0 for t in targets)
        kept = []
        for u, x in zip(users.tolist(), items):
            if training and self.input_dropout > 0 and len(x):
                count = self._times.get(u, 0)
                self._times[u] = count + 1
                keep = np.random.default_rng(_hash_seed(self.seed, u, count)).random(len(x)) >= self.input_dropout
                x = x[keep]
            kept.append(x)
        pad = batch_size - rows
        lengths = torch.tensor([len(x) for x in kept] + [0] * pad, dtype=torch.int64)
        values = torch.from_numpy(np.concatenate(kept)) if kept else torch.zeros(0, dtype=torch.int64)
        width = max([len(x) for x in items], default=0)
        dense = np.zeros((batch_size, width), dtype=np.int64)
        for r, x in enumerate(items):
            dense[r, : len(x)] = x
        t_width = max([len(t) for t in targets], default=0)
        target_rows = np.full((batch_size, t_width), -1, dtype=np.int64)
        for r, t in enumerate(targets):
            target_rows[r, : len(t)] = t
        return UserItemsBatch(
            features=KeyedJaggedTensor.from_lengths_sync(keys=[ITEM], values=values, lengths=lengths),
            items=torch.from_numpy(dense),
            num_items=torch.tensor([len(x) for x in items] + [0] * pad, dtype=torch.float32),
            targets=torch.from_numpy(target_rows),
            users=torch.tensor(users.tolist() + [-1] * pad, dtype=torch.int64),
            weights=torch.tensor([1.0] * rows + [0.0] * pad, dtype=torch.float32),
        )
