import pytest
import torch

from tests.data.conftest import batch_rows
from torchrec_app.config.data import ReaderConfig
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.reader import read_batches, table_sizes


def _stream(out, split="valid", **kwargs):
    args = dict(batch_size=64, rank=0, world_size=1, config=ReaderConfig(prefetch_batches=2), shuffle=False, seed=0)
    args.update(kwargs)
    return read_batches(out, split, **args)


def _row_keys(batches):
    """A hashable key per real row (label, dense, ids) to check coverage."""
    keys = []
    for batch in batches:
        for label, dense, ids in batch_rows(batch):
            keys.append((label, tuple(dense), tuple(tuple(i) for i in ids)))
    return keys


def test_two_ranks_cover_each_row_once_with_equal_batch_counts(generated):
    _, out = generated
    meta = load_metadata(out)
    n = meta.split_rows["valid"]
    everything = _row_keys(_stream(out, world_size=1, batch_size=n))
    streams = [_stream(out, rank=r, world_size=2, batch_size=64) for r in range(2)]
    assert len(streams[0]) == len(streams[1]) == -(-(-(-n // 2)) // 64)
    per_rank = [list(s) for s in streams]
    assert len(per_rank[0]) == len(per_rank[1]) == len(streams[0])
    covered = _row_keys(per_rank[0]) + _row_keys(per_rank[1])
    assert sorted(covered) == sorted(everything) and len(covered) == n
    for batches in per_rank:
        for batch in batches:
            assert batch.labels.shape == (64,) and batch.dense_features.shape == (64, 13)
            pad = batch.weights == 0
            assert set(batch.weights.tolist()) <= {0.0, 1.0}
            lengths = batch.sparse_features.lengths().view(26, 64)
            assert (lengths[:, pad] == 0).all() and (lengths[:, ~pad] == 1).all()
            assert (batch.labels[pad] == 0).all() and (batch.dense_features[pad] == 0).all()
    assert sum(int(b.weights.sum()) for b in per_rank[0] + per_rank[1]) == n


def test_more_ranks_than_rows_still_step_together(generated):
    _, out = generated
    streams = [_stream(out, rank=r, world_size=3, batch_size=4096) for r in range(3)]
    assert {len(s) for s in streams} == {1}
    assert sum(next(iter(s)).num_real_rows for s in streams) == load_metadata(out).split_rows["valid"]


def test_training_shuffle_is_seeded_and_changes_with_epoch(generated):
    _, out = generated
    config = ReaderConfig(shuffle_buffer_rows=2000, prefetch_batches=3)

    def labels(epoch, seed=0):
        s = _stream(out, "train", config=config, shuffle=True, seed=seed, epoch=epoch, batch_size=256)
        return [tuple(b.dense_features[:, 4].tolist()) for b in s]

    a, b, c = labels(0), labels(0), labels(1)
    assert a == b and a != c
    ordered = [tuple(b.dense_features[:, 4].tolist()) for b in _stream(out, "train", batch_size=256)]
    assert a != ordered
    assert sorted(sum(map(list, a), [])) == sorted(sum(map(list, ordered), []))  # same rows, new order


def test_eval_keeps_file_order_and_kjt_layout(generated):
    _, out = generated
    batch = next(iter(_stream(out, batch_size=16)))
    kjt = batch.sparse_features
    assert kjt.keys() == load_metadata(out).sparse_features
    assert kjt.values().dtype == torch.int64 and kjt.lengths().dtype == torch.int32
    assert kjt.stride() == 16


def test_max_ind_range_takes_ids_modulo_and_caps_tables(generated):
    _, out = generated
    meta = load_metadata(out)
    plain = next(iter(_stream(out, batch_size=500)))
    capped = next(iter(_stream(out, batch_size=500, config=ReaderConfig(max_ind_range=7, prefetch_batches=0))))
    assert torch.equal(capped.sparse_features.values(), plain.sparse_features.values() % 7)
    sizes = table_sizes(meta, ReaderConfig(max_ind_range=7))
    assert all(sizes[f] == min(7, meta.num_embeddings[f]) for f in meta.sparse_features)


def test_breaking_out_early_does_not_hang(generated):
    _, out = generated
    stream = _stream(out, "train", batch_size=8, config=ReaderConfig(prefetch_batches=1))
    for i, _ in enumerate(stream):
        if i == 2:
            break


def test_missing_dataset_and_split_are_named(tmp_path, generated):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        _stream(str(tmp_path))
    _, out = generated
    with pytest.raises(ValueError, match="no 'holdout' split"):
        _stream(out, "holdout")
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="metadata.json"):
        load_metadata(str(tmp_path))


def test_a_reader_seeks_to_any_batch_of_any_epoch_without_reading_the_ones_before(generated):
    _, out = generated
    config = ReaderConfig(shuffle_buffer_rows=700, prefetch_batches=0)
    reader = _stream(out, "train", config=config, shuffle=True, batch_size=96)
    for epoch in (0, 3):
        whole = [b.dense_features for b in reader.batches(epoch)]
        for start in (0, 1, 7, len(reader) - 1, len(reader)):
            sought = [b.dense_features for b in reader.batches(epoch, start)]
            assert len(sought) == len(whole) - start
            assert all(torch.equal(a, b) for a, b in zip(sought, whole[start:]))


def test_the_train_stream_crosses_epochs_and_resumes_from_its_state(generated):
    from torchrec_app.data.reader import TrainBatches

    _, out = generated
    reader = _stream(out, "train", config=ReaderConfig(shuffle_buffer_rows=500, prefetch_batches=2), shuffle=True,
                     batch_size=128)  # fmt: skip
    steps = len(reader) + 5  # into the second epoch
    straight = [b.dense_features for b in TrainBatches(reader).take(steps)]
    first = TrainBatches(reader)
    head = [b.dense_features for b in first.take(len(reader) - 2)]
    state = first.state_dict()
    assert state == {"epoch": 0, "batch_in_epoch": len(reader) - 2}
    resumed = TrainBatches(reader)
    resumed.load_state_dict(state)
    tail = [b.dense_features for b in resumed.take(steps - len(head))]
    assert resumed.state_dict() == {"epoch": 1, "batch_in_epoch": 5}
    assert all(torch.equal(a, b) for a, b in zip(head + tail, straight))
