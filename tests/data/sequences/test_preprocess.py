"""Interactions -> sequences: implicit feedback, k-core, ids, leak-free splits, atomic output."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from torchrec_app.config.sequences import SequencePreprocessConfig
from torchrec_app.data.criteo_format import DataFormatError
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.sequences.preprocess import preprocess_sequences


def ratings_dat(path, rows):
    path.write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
    return str(path)


def random_rows(users=40, items=30, per_user=(3, 15), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, users + 1):
        chosen = rng.choice(np.arange(100, 100 + items), size=rng.integers(*per_user), replace=False)
        times = np.sort(rng.integers(0, 10_000, size=len(chosen)))
        rows += [(u, int(i), int(rng.integers(1, 6)), int(t)) for i, t in zip(chosen, times)]
    rng.shuffle(rows)  # file order is not time order
    return rows


def sequences_by_user(rows, raw_users, raw_items):
    """Each user's item ids in time order (ties: file order), computed the obvious way."""
    user_id = {u: k for k, u in enumerate(raw_users)}
    item_id = {i: k + 1 for k, i in enumerate(raw_items)}
    out = {}
    for position, (u, i, _, t) in sorted(enumerate(rows), key=lambda x: (x[1][0], x[1][3], x[0])):
        if u in user_id and i in item_id:
            out.setdefault(user_id[u], []).append(item_id[i])
    return out


def load(out):
    meta = load_metadata(str(out))
    splits = {s: pq.read_table(os.path.join(out, f"{s}.parquet")).to_pylist() for s in ("train", "valid", "test")}
    raw_users = pq.read_table(os.path.join(out, "users.parquet")).column("raw_user").to_pylist()
    raw_items = pq.read_table(os.path.join(out, "items.parquet")).column("raw_item").to_pylist()
    return meta, splits, raw_users, raw_items


def test_leave_one_out_is_leak_free_and_complete(tmp_path):
    rows = random_rows()
    src = ratings_dat(tmp_path / "ratings.dat", rows)
    config = SequencePreprocessConfig(min_user_interactions=1, min_item_interactions=1, max_len=4)
    preprocess_sequences(str(tmp_path / "out"), [src], config)
    meta, splits, raw_users, raw_items = load(tmp_path / "out")
    assert meta.kind == "sequences" and meta.extra["num_items"] == len(raw_items) == 30
    assert raw_items == sorted(raw_items) and raw_users == sorted(raw_users)
    seqs = sequences_by_user(rows, raw_users, raw_items)
    valid = {r["user"]: r for r in splits["valid"]}
    test = {r["user"]: r for r in splits["test"]}
    windows: dict[int, list[list[int]]] = {}
    for r in splits["train"]:
        assert r["target"] == 0 and 2 <= len(r["items"]) <= config.max_len + 1
        windows.setdefault(r["user"], []).append(r["items"])
    for user, seq in seqs.items():
        train = seq[:-2]
        assert valid[user] == {"user": user, "items": train, "target": seq[-2]}
        assert test[user] == {"user": user, "items": seq[:-1], "target": seq[-1]}
        # windows overlap by one item and rebuild exactly the training part: no target leaks into training
        rebuilt = windows[user][0] + [i for w in windows[user][1:] for i in w[1:]] if len(train) >= 2 else []
        assert rebuilt == (train if len(train) >= 2 else [])
    inter = pq.read_table(tmp_path / "out" / "interactions.parquet").to_pylist()
    assert sum(r["split"] == "valid" for r in inter) == len(valid) == meta.split_rows["valid"]


def test_time_cut_keeps_training_before_the_cut(tmp_path):
    rows = random_rows(seed=1)
    src = ratings_dat(tmp_path / "ratings.dat", rows)
    config = SequencePreprocessConfig(min_user_interactions=1, min_item_interactions=1, split="time_cut",
                                      valid_time=6000, test_time=8000, max_len=50)
    preprocess_sequences(str(tmp_path / "out"), [src], config)
    meta, splits, raw_users, raw_items = load(tmp_path / "out")
    time_of = {}
    for u, i, _, t in rows:
        time_of[(raw_users.index(u), raw_items.index(i) + 1)] = t
    for r in splits["train"]:
        assert all(time_of[(r["user"], i)] < 6000 for i in r["items"])
    for name, (low, high) in (("valid", (6000, 8000)), ("test", (8000, 10**9))):
        assert splits[name], name
        for r in splits[name]:
            target_time = time_of[(r["user"], r["target"])]
            assert low <= target_time < high
            assert r["items"] and all(time_of[(r["user"], i)] <= target_time for i in r["items"])
            assert r["target"] not in r["items"]
    assert meta.extra["valid_time"] == 6000 and meta.extra["test_time"] == 8000


def test_implicit_threshold_and_k_core(tmp_path):
    # item 9 is rated low by everyone; user 4 has only 2 good items left -> removed by the 3-core,
    # which takes item 7 below 3 users -> removed, which takes user 3 below 3 -> removed.
    rows = [(u, i, 5, t) for t, (u, i) in enumerate([(1, 5), (1, 6), (1, 8), (2, 5), (2, 6), (2, 8), (3, 5), (3, 7),
                                                     (3, 6), (4, 7), (4, 5), (5, 5), (5, 6), (5, 8), (5, 7)])]
    rows += [(u, 9, 2, 100 + u) for u in range(1, 6)]
    src = ratings_dat(tmp_path / "ratings.dat", rows)
    config = SequencePreprocessConfig(rating_threshold=4, min_user_interactions=3, min_item_interactions=3)
    preprocess_sequences(str(tmp_path / "out"), [src], config)
    meta, splits, raw_users, raw_items = load(tmp_path / "out")
    assert (raw_users, raw_items) == ([1, 2, 5], [5, 6, 8])
    assert meta.extra["interactions_implicit"] == 15


def test_bad_input_leaves_the_previous_dataset(tmp_path):
    good = ratings_dat(tmp_path / "ratings.dat", random_rows())
    config = SequencePreprocessConfig(min_user_interactions=1, min_item_interactions=1)
    out = tmp_path / "out"
    preprocess_sequences(str(out), [good], config)
    before = {p: (out / p).read_bytes() for p in sorted(os.listdir(out))}
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / "ratings.dat"
    bad.write_text("1::2::3::4\n1::2::3\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat:2: "):
        preprocess_sequences(str(out), [str(bad)], config)
    assert {p: (out / p).read_bytes() for p in sorted(os.listdir(out))} == before
    with pytest.raises(ValueError, match="no interactions left after 50/1-core"):
        preprocess_sequences(str(out), [good], SequencePreprocessConfig(min_user_interactions=50, min_item_interactions=1))
    assert {p: (out / p).read_bytes() for p in sorted(os.listdir(out))} == before


def test_side_information_is_written_per_item(tmp_path):
    src = ratings_dat(tmp_path / "ratings.dat", [(1, 10, 5, 1), (1, 20, 5, 2), (1, 30, 5, 3)])
    (tmp_path / "movies.dat").write_text("10::A (1990)::Drama|Comedy\n20::B (1991)::Drama\n30::C::\n", encoding="latin-1")
    meta = preprocess_sequences(str(tmp_path / "out"), [src], SequencePreprocessConfig(min_user_interactions=1, min_item_interactions=1))
    items = pq.read_table(tmp_path / "out" / "items.parquet").to_pylist()
    assert meta.extra["genres"] == ["Comedy", "Drama"] and meta.extra["years"] == [1990, 1991]
    assert [(r["raw_item"], r["genre_ids"], r["year_id"]) for r in items] == [(10, [2, 1], 1), (20, [2], 2), (30, [], 0)]
    assert meta.num_embeddings == {"item": 4, "genre": 3, "year": 3} and meta.extra["max_genres"] == 2
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["kind"] == "sequences"
