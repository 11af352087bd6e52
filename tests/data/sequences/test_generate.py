"""Planted sequences: reproducible, MovieLens-shaped, and an oracle that beats popularity by a wide margin."""

from __future__ import annotations

import json

from torchrec_app.config.sequences import SequenceGeneratorConfig, SequencePreprocessConfig
from torchrec_app.data.sequences.generate import generate_sequence_dataset
from torchrec_app.data.sequences.preprocess import preprocess_sequences

SMALL = SequenceGeneratorConfig(users=200, items=120, genres=5, min_len=6, mean_len=12, max_len=40, seed=3)


def test_same_seed_same_files_and_a_meaningful_oracle(tmp_path):
    truth = generate_sequence_dataset(str(tmp_path / "a"), SMALL)
    generate_sequence_dataset(str(tmp_path / "b"), SMALL)
    for name in ("ratings.dat", "movies.dat", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert json.loads((tmp_path / "a" / "truth.json").read_text())["oracle"] == truth["oracle"]
    for split in ("valid", "test"):
        oracle, popularity = truth["oracle"][split], truth["popularity"][split]
        assert oracle["users"] == SMALL.users
        assert oracle["ndcg@10"] > 2 * popularity["ndcg@10"] and oracle["recall@20"] > 0.5


def test_generated_files_preprocess_to_the_oracles_catalog(tmp_path):
    truth = generate_sequence_dataset(str(tmp_path / "raw"), SMALL)
    meta = preprocess_sequences(str(tmp_path / "out"), [str(tmp_path / "raw" / "ratings.dat")],
                                SequencePreprocessConfig(min_item_interactions=1, max_len=20))
    assert meta.extra["num_items"] == truth["items_present"]
    assert meta.extra["interactions"] == truth["interactions"]
    assert meta.split_rows["test"] == meta.split_rows["valid"] == SMALL.users
    assert meta.extra["genres"] and meta.extra["max_genres"] >= 1  # movies.dat read beside ratings.dat
    assert (tmp_path / "out" / "truth.json").exists()
