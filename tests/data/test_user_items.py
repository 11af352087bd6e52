"""The user-item layout: both protocols leak-free, the sequential one identical to the next-item splits."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.general_data import make_general_datasets
from torchrec_app.cli import main as cli_main
from torchrec_app.config.general import UserItemsConfig
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.user_items import derive_user_items, read_split


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return make_general_datasets(tmp_path_factory.mktemp("user_items"))


def _by_user(data_dir, split):
    users, items, targets = read_split(str(data_dir), split)
    return {u: (set(i.tolist()), set(t.tolist()), i) for u, i, t in zip(users.tolist(), items, targets)}


def test_general_protocol_holds_out_random_past_items_without_leaks(datasets):
    interactions = pq.read_table(datasets["sequences"] / "interactions.parquet")
    every: dict[int, list[int]] = {}
    for user, item in zip(interactions.column("user").to_pylist(), interactions.column("item").to_pylist()):
        every.setdefault(user, []).append(item)  # time order per user
    train, valid, test = (_by_user(datasets["general"], s) for s in ("train", "valid", "test"))
    assert set(valid) == set(test) and len(test) == len(every)
    positions = []
    for user, items in every.items():
        train_items, valid_targets, test_targets = train[user][0], valid[user][1], test[user][1]
        assert not (train_items & valid_targets) and not (train_items & test_targets) and not (valid_targets & test_targets)
        assert train_items | valid_targets | test_targets == set(items)
        assert len(test_targets) == len(valid_targets) == max(1, round(0.1 * len(items)))
        assert valid[user][0] == train_items  # valid input: the train items only
        assert test[user][0] == train_items | valid_targets and not (test[user][0] & test_targets)
        assert test[user][2].tolist() == [i for i in items if i not in test_targets]  # time order kept
        positions += [items.index(t) / len(items) for t in test_targets]
    assert 0.3 < np.mean(positions) < 0.7  # random past items, not the last ones


def test_sequential_protocol_has_the_next_item_splits_users_targets_and_histories(datasets):
    train = _by_user(datasets["sequential"], "train")
    for split in ("valid", "test"):
        rows = pq.read_table(datasets["sequences"] / f"{split}.parquet")
        derived = _by_user(datasets["sequential"], split)
        assert sorted(derived) == sorted(rows.column("user").to_pylist())
        for user, history, target in zip(*(rows.column(c).to_pylist() for c in ("user", "items", "target"))):
            assert derived[user][1] == {target} and derived[user][2].tolist() == history
            assert target not in train[user][0]  # no training row holds a held-out item
    meta = load_metadata(str(datasets["sequential"]))
    assert meta.kind == "user_items" and meta.extra["protocol"] == "sequential" and meta.split_rows["test"] == 160


def test_the_general_draw_is_reproducible_and_a_non_sequences_dir_is_refused(datasets, tmp_path, capsys):
    again = derive_user_items(str(datasets["sequences"]), str(tmp_path / "again"), UserItemsConfig())
    assert again.split_rows == load_metadata(str(datasets["general"])).split_rows
    assert pq.read_table(tmp_path / "again" / "test.parquet").equals(pq.read_table(datasets["general"] / "test.parquet"))
    assert cli_main(["preprocess", "--kind", "user_items", "--input", str(datasets["general"]), "--out", str(tmp_path / "x")]) == 1
    assert "a 'user_items' dataset; --kind user_items derives from a sequences dataset" in capsys.readouterr().err
