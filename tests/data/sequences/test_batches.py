"""make_batch of kind sequences: fixed size, most recent items, whole histories to mask, one KJT for every lookup."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from torchrec_app.data.sequences.batches import ItemSide, SequenceBatcher, iter_batches

ROWS = pa.table({
    "user": pa.array([0, 1, 2], pa.int32()),
    "items": pa.array([[1, 2, 3, 4, 5], [6], [7, 8, 9]], pa.list_(pa.int32())),
    "target": pa.array([0, 0, 0], pa.int32()),
})
EVAL = pa.table({
    "user": pa.array([5, 6], pa.int32()),
    "items": pa.array([[1, 2, 3, 4, 5, 6], [9]], pa.list_(pa.int32())),
    "target": pa.array([7, 3], pa.int32()),
})


def test_training_rows_keep_their_most_recent_items_and_pad_the_tail():
    batch = SequenceBatcher(num_items=9, train_len=3, eval_len=2, loss="full")(ROWS, 4)
    assert batch.items.tolist() == [[3, 4, 5], [6, 0, 0], [7, 8, 9], [0, 0, 0]]
    assert batch.lengths.tolist() == [3, 1, 3, 0] and batch.weights.tolist() == [1, 1, 1, 0]
    kjt = batch.features.to_dict()
    assert kjt["item"].values().tolist() == [3, 4, 5, 6, 7, 8, 9]
    # full softmax: a training batch carries the whole catalog once, in row 0
    assert kjt["catalog"].values().tolist() == list(range(1, 10)) and kjt["catalog"].lengths().tolist() == [9, 0, 0, 0]
    assert batch.seen_lengths.tolist() == [0, 0, 0, 0]


def test_evaluation_rows_carry_target_and_whole_history():
    batch = SequenceBatcher(num_items=9, train_len=3, eval_len=2, loss="full")(EVAL, 3)
    kjt = batch.features.to_dict()
    assert kjt["item"].values().tolist() == [5, 6, 9]  # last eval_len history items
    assert batch.targets.tolist() == [7, 3, 0]
    assert kjt["catalog"].lengths().sum() == 0  # no catalog lookups while evaluating
    assert batch.seen_values.tolist() == [1, 2, 3, 4, 5, 6, 9] and batch.seen_lengths.tolist() == [6, 1, 0]
    assert batch.users.tolist() == [5, 6, -1]


def test_sampled_negatives_are_reproducible_and_in_range():
    batcher = SequenceBatcher(num_items=9, train_len=3, eval_len=3, loss="sampled", num_negatives=50, seed=7)
    first = batcher(ROWS, 4).features.to_dict()["negative"]
    again = batcher(ROWS, 4).features.to_dict()["negative"]
    assert torch.equal(first.values(), again.values()) and first.lengths().tolist() == [50, 0, 0, 0]
    assert 1 <= int(first.values().min()) and int(first.values().max()) <= 9
    other = SequenceBatcher(num_items=9, train_len=3, eval_len=3, loss="sampled", num_negatives=50, seed=8)(ROWS, 4)
    assert not torch.equal(first.values(), other.features.to_dict()["negative"].values())


def test_side_information_follows_each_item_position():
    side = ItemSide(genre_ids=np.array([[0, 0]] + [[i % 3 + 1, 0 if i % 2 else 3] for i in range(1, 10)]),
                    year_ids=np.arange(10) * 10)
    batch = SequenceBatcher(num_items=9, train_len=3, eval_len=3, loss="in_batch", side=side)(ROWS, 4)
    kjt = batch.features.to_dict()
    items = kjt["item"].values()
    assert batch.features.keys() == ["item", "genre_1", "genre_2", "year"]
    assert kjt["genre_1"].values().tolist() == [i % 3 + 1 for i in items.tolist()]
    assert kjt["genre_2"].values().tolist() == [0 if i % 2 else 3 for i in items.tolist()]
    assert kjt["year"].values().tolist() == (items * 10).tolist()
    assert torch.equal(kjt["year"].lengths(), kjt["item"].lengths())


def test_every_rank_gets_the_same_number_of_batches():
    batcher = SequenceBatcher(num_items=9, train_len=3, eval_len=3, loss="in_batch")
    per_rank = [list(iter_batches(ROWS, batcher, batch_size=1, rank=r, world_size=2)) for r in range(2)]
    assert [len(b) for b in per_rank] == [2, 2]
    assert sum(b.num_real_rows for bs in per_rank for b in bs) == 3
