"""Feed datasets through the generic per-rank reader: FeedBatch layout, padding, equal batch counts,
and batches TorchRec's EmbeddingCollection (one item table) and EmbeddingBagCollection accept."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from tests.data.feed.conftest import preprocess, split_table
from torchrec_app.config.data import ReaderConfig
from torchrec_app.data.feed.batch import ITEM_TABLE, OBJECTIVES, FeedBatch
from torchrec_app.data.feed.batches import make_feed_batch
from torchrec_app.data.feed.schema import DENSE_FEATURES, LABEL_COLUMNS, PARQUET_SCHEMA, POOLED_FEATURES, SEQUENCE_FEATURES
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.reader import num_batches, read_batches


def _real_rows(batch: FeedBatch, key: str, kjt: str) -> list[list[int]]:
    jagged = getattr(batch, kjt)[key]
    return [row.tolist() for row in jagged.to_dense()[: batch.num_real_rows]]


def test_each_rank_reads_its_rows_in_equal_batch_counts(feed_dataset):
    table = split_table(feed_dataset, "valid")
    batch_size, world = 128, 2
    expected = num_batches(table.num_rows, batch_size, world)
    read = {name: [] for name in (*SEQUENCE_FEATURES, *POOLED_FEATURES, "labels", "dense")}
    for rank in range(world):
        batches = list(read_batches(str(feed_dataset), "valid", batch_size=batch_size, rank=rank, world_size=world,
                                    config=ReaderConfig(prefetch_batches=2), shuffle=False, seed=0))  # fmt: skip
        assert len(batches) == expected
        for batch in batches:
            assert isinstance(batch, FeedBatch) and batch.labels.shape == (batch_size, len(OBJECTIVES))
            assert batch.pooled.keys() == list(POOLED_FEATURES) and batch.sequences.keys() == list(SEQUENCE_FEATURES)
            assert batch.pooled.stride() == batch.sequences.stride() == batch_size
            n = batch.num_real_rows
            assert (batch.weights[n:] == 0).all() and (batch.importance[n:] == 0).all() and (batch.labels[n:] == 0).all()
            assert (batch.sequences.lengths().view(len(SEQUENCE_FEATURES), -1)[:, n:] == 0).all()
            assert (batch.sequences["item"].lengths()[:n] == 1).all()
            for key in SEQUENCE_FEATURES:
                read[key] += _real_rows(batch, key, "sequences")
            for key in POOLED_FEATURES:
                read[key] += _real_rows(batch, key, "pooled")
            read["labels"] += batch.labels[:n].tolist()
            read["dense"] += batch.dense_features[:n].tolist()
    columns = table.to_pydict()
    for key in (*SEQUENCE_FEATURES, *POOLED_FEATURES):  # every row once, in file order, ids unchanged
        assert read[key] == [v if isinstance(v, list) else [v] for v in columns[key]], key
    assert read["labels"] == [[float(columns[c][r]) for c in LABEL_COLUMNS] for r in range(table.num_rows)]
    np.testing.assert_allclose(read["dense"], np.stack([columns[c] for c in DENSE_FEATURES], axis=1), rtol=1e-6)


def test_shuffled_train_epoch_reads_every_row_once_with_its_importance(feed_raw, tmp_path):
    assert preprocess(feed_raw, tmp_path / "out", "feed_preprocess.coreset_rate=0.5") == 0
    table = split_table(tmp_path / "out", "train")
    config = ReaderConfig(shuffle_buffer_rows=500, prefetch_batches=0)
    pairs = []
    for rank in range(2):
        reader = read_batches(str(tmp_path / "out"), "train", batch_size=256, rank=rank, world_size=2, config=config, shuffle=True, seed=3)
        for batch in reader.batches(epoch=1):
            n = batch.num_real_rows
            keys = batch.sequences["item"].values().tolist()  # one candidate per real row
            pairs += list(zip(keys, batch.dense_features[:n, 0].tolist(), batch.importance[:n].tolist()))
    expected = zip(table.column("item").to_pylist(), table.column("position").to_pylist(), table.column("importance").to_pylist())
    assert sorted(pairs) == sorted((i, float(np.float32(p)), float(np.float32(w))) for i, p, w in expected)


def test_a_model_can_ask_for_shorter_histories():
    row = {"keywords": [1], "item": 4, "hist_click": [9, 8, 7, 6], "hist_watch": [5], "hist_chat": [], "hist_hide": [], "hist_report": []}
    table = pa.Table.from_pylist([{name: 0 for name in PARQUET_SCHEMA.names} | row | {"importance": 1.0}], schema=PARQUET_SCHEMA)
    batch = make_feed_batch(table, 3, max_history=2)
    assert _real_rows(batch, "hist_click", "sequences") == [[9, 8]] and _real_rows(batch, "hist_watch", "sequences") == [[5]]
    assert make_feed_batch(None, 3).num_real_rows == 0


def test_batches_feed_torchrec_collections_with_one_item_table(feed_dataset):
    meta = load_metadata(str(feed_dataset))
    feed = meta.extra["feed"]
    ec = EmbeddingCollection(
        tables=[
            EmbeddingConfig(
                name=ITEM_TABLE, num_embeddings=feed["tables"][ITEM_TABLE], embedding_dim=4, feature_names=list(SEQUENCE_FEATURES)
            )
        ]  # fmt: skip
    )
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name=feed["feature_tables"][f], num_embeddings=meta.num_embeddings[f], embedding_dim=4, feature_names=[f])
            for f in POOLED_FEATURES
        ]  # fmt: skip
    )
    reader = read_batches(str(feed_dataset), "test", batch_size=64, rank=0, world_size=1, config=ReaderConfig(), shuffle=False, seed=0)
    batch = next(iter(reader))
    sequences = ec(batch.sequences)
    assert set(sequences.keys()) == set(SEQUENCE_FEATURES)
    assert sequences["hist_click"].values().shape == (int(batch.sequences["hist_click"].lengths().sum()), 4)
    table = ec.embeddings[ITEM_TABLE].weight
    torch.testing.assert_close(sequences["item"].values(), table[batch.sequences["item"].values()])
    assert ebc(batch.pooled).values().shape == (64, 4 * len(POOLED_FEATURES))
