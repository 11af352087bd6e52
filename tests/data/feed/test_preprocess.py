"""preprocess --kind feed: vocabularies (one item table for the candidate and every history),
history cuts, dense transform, metadata, and the atomic swap of the Criteo path."""

from __future__ import annotations

import gzip
import hashlib
import json
import os

import numpy as np
import pyarrow.parquet as pq

from tests.data.feed.conftest import preprocess, split_table
from torchrec_app.cli import main as cli_main
from torchrec_app.data.feed.batch import ITEM_TABLE
from torchrec_app.data.feed.formats import read_feed_file
from torchrec_app.data.feed.schema import DENSE_FEATURES, HISTORY_FEATURES, POOLED_FEATURES, SEQUENCE_FEATURES, VOCABULARY_OF
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.vocab import Vocabulary


def test_metadata_describes_the_feed_layout(feed_dataset, feed_raw):
    meta = load_metadata(str(feed_dataset))
    feed = meta.extra["feed"]
    assert meta.kind == "feed" and meta.multi_hot and meta.dense_features == list(DENSE_FEATURES)
    assert meta.sparse_features == [*POOLED_FEATURES, "item"]
    assert feed["sequence_features"] == list(SEQUENCE_FEATURES) and feed["item_table"] == ITEM_TABLE
    assert {feed["feature_tables"][f] for f in SEQUENCE_FEATURES} == {ITEM_TABLE}
    assert feed["tables"][ITEM_TABLE] == meta.num_embeddings["item"]
    raw_rows = {s: pq.read_metadata(feed_raw / f"{s}.parquet").num_rows for s in ("train", "valid", "test")}
    assert meta.split_rows == raw_rows  # no sampling by default
    assert meta.extra["sampling"]["negative_keep_rate"] == 1.0 and meta.extra["sampling"]["rows"] == raw_rows["train"]
    assert (feed_dataset / "truth.json").read_bytes() == (feed_raw / "truth.json").read_bytes()


def test_ids_go_through_the_train_vocabularies(feed_dataset, feed_raw):
    meta = load_metadata(str(feed_dataset))
    vocab = {name: Vocabulary.load(os.path.join(feed_dataset, meta.vocab_dir, f"{name}.parquet")) for name in set(VOCABULARY_OF.values())}
    for split in ("train", "valid"):
        raw = read_feed_file(str(feed_raw / f"{split}.parquet")).table.slice(0, 200).to_pydict()
        done = split_table(feed_dataset, split).slice(0, 200).to_pydict()
        for column, name in VOCABULARY_OF.items():
            for raw_value, value in zip(raw[column], done[column]):
                expected = vocab[name].lookup(np.array(raw_value if isinstance(raw_value, list) else [raw_value], np.uint64)).tolist()
                assert (value if isinstance(value, list) else [value]) == expected, (split, column)
    train_raw = read_feed_file(str(feed_raw / "train.parquet")).table
    seen = set(train_raw.column("item").to_pylist()) | {i for h in HISTORY_FEATURES for row in train_raw.column(h).to_pylist() for i in row}
    assert meta.num_embeddings["item"] == len(seen) + 1  # one table: candidates and every history, 0 for unseen
    train = split_table(feed_dataset, "train")
    for name in DENSE_FEATURES:
        values = train.column(name).to_numpy()
        assert abs(values.mean()) < 1e-4 and abs(values.std() - 1) < 1e-3


def test_histories_keep_the_newest_events_and_rare_ids_map_to_zero(feed_raw, tmp_path):
    assert preprocess(feed_raw, tmp_path / "out", "feed_preprocess.max_history=3", "feed_preprocess.min_frequency=3") == 0
    meta = load_metadata(str(tmp_path / "out"))
    item_vocab = Vocabulary.load(os.path.join(tmp_path / "out", meta.vocab_dir, "item.parquet"))
    raw = read_feed_file(str(feed_raw / "train.parquet")).table.slice(0, 300).to_pydict()
    done = split_table(tmp_path / "out", "train").slice(0, 300).to_pydict()
    for name in HISTORY_FEATURES:
        for raw_row, row in zip(raw[name], done[name]):
            assert row == item_vocab.lookup(np.array(raw_row[:3], np.uint64)).tolist()
    assert 0 in done["item"] and (item_vocab.counts[item_vocab.index == 0] < 3).all()


def _snapshot(root) -> dict[str, str]:
    out = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_a_failed_rerun_keeps_the_dataset_and_a_good_one_replaces_it(feed_raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert preprocess(feed_raw, out) == 0
    before = _snapshot(out)
    bad = tmp_path / "bad"
    bad.mkdir()
    good_rows = "".join(json.dumps(r) + "\n" for r in read_feed_file(str(feed_raw / "train.parquet")).table.slice(0, 5).to_pylist())
    (bad / "train.jsonl").write_text(good_rows)
    (bad / "valid.jsonl").write_text(good_rows)
    (bad / "test.jsonl").write_text('{"user": 1}\n')  # the last file read is bad: nothing may have been written
    assert preprocess(bad, out, ext="jsonl") == 1
    assert f"{bad / 'test.jsonl'}:1: field" in capsys.readouterr().err
    assert _snapshot(out) == before
    old_build = load_metadata(str(out)).files["train"][0].path.split("/")[0]
    assert preprocess(feed_raw, out, "feed_preprocess.negative_keep_rate=0.5") == 0
    meta = load_metadata(str(out))
    assert meta.extra["sampling"]["negative_keep_rate"] == 0.5 and not (out / old_build).exists()
    assert sorted(p for p in os.listdir(out) if p.startswith("build-")) == [meta.files["train"][0].path.split("/")[0]]


def test_skipped_bad_rows_are_counted_in_the_metadata(feed_raw, tmp_path):
    rows = read_feed_file(str(feed_raw / "train.parquet")).table.slice(0, 40).to_pylist()
    rows[7]["label_watch"] = 3
    lines = [json.dumps(r) for r in rows]
    lines[20] = '{"user": '
    (tmp_path / "train.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    files = ["--train", str(tmp_path / "train.jsonl.gz"), "--out", str(tmp_path / "out")]
    assert cli_main(["preprocess", "--kind", "feed", *files]) == 1
    assert cli_main(["preprocess", "--kind", "feed", *files, "--on-bad-rows", "skip"]) == 0
    meta = load_metadata(str(tmp_path / "out"))
    assert meta.bad_rows_skipped == 2 and meta.split_rows == {"train": 38} and meta.sources[0]["bad_rows"] == 2


def test_several_files_per_split_make_one_part_each_and_the_same_rows(feed_raw, feed_dataset, tmp_path):
    train = pq.read_table(feed_raw / "train.parquet")
    half = train.num_rows // 2
    pq.write_table(train.slice(0, half), tmp_path / "a.parquet")
    pq.write_table(train.slice(half), tmp_path / "b.parquet")
    split_args = ["--valid", str(feed_raw / "valid.parquet"), "--test", str(feed_raw / "test.parquet")]
    files = ["--train", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), *split_args]
    assert cli_main(["preprocess", "--kind", "feed", *files, "--out", str(tmp_path / "out")]) == 0
    meta = load_metadata(str(tmp_path / "out"))
    assert [f.rows for f in meta.files["train"]] == [half, train.num_rows - half]
    for split in ("train", "valid", "test"):  # the same vocabularies, transform and rows as from one file
        assert split_table(tmp_path / "out", split).equals(split_table(feed_dataset, split))
    core = ["feed_preprocess.coreset_rate=0.5", "feed_preprocess.negative_keep_rate=0.5"]
    assert cli_main(["preprocess", "--kind", "feed", *files, "--out", str(tmp_path / "core"), *core]) == 0
    meta = load_metadata(str(tmp_path / "core"))
    sampled = split_table(tmp_path / "core", "train")
    assert len(meta.files["train"]) == 2 and sampled.num_rows == meta.split_rows["train"] == meta.extra["sampling"]["rows"]
    assert abs(float(np.mean(sampled.column("importance").to_numpy())) - 1.0) < 1e-5
