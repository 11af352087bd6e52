"""The command line, end to end: generate --kind sequences, preprocess --kind sequences, train, compare."""

from __future__ import annotations

import json

import pytest

from torchrec_app.cli import main as cli_main

GENERATE = ["generate_sequences.users=240", "generate_sequences.items=120", "generate_sequences.max_len=40"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequences")
    assert cli_main(["generate", "--kind", "sequences", "--out", str(root / "raw"), *GENERATE]) == 0
    assert cli_main(["preprocess", "--kind", "sequences", "--recipe", "sasrec_tiny", "--input", str(root / "raw" / "ratings.dat"),
                     "--out", str(root / "data")]) == 0
    return root


def test_train_evaluates_against_the_oracle_and_saves_per_user_results(dataset, capsys):
    run = dataset / "run"
    assert cli_main(["train", "--recipe", "sasrec_tiny", "--data", str(dataset / "data"), "--out", str(run),
                     "train.epochs=2"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    truth = json.loads((dataset / "raw" / "truth.json").read_text())
    assert summary["task"] == "next_item" and summary["monitor"] == "ndcg@10"
    assert summary["test_users"] == 240 and summary["test_oracle_ndcg@10"] == truth["oracle"]["test"]["ndcg@10"]
    # two tiny epochs already beat recommending the most popular items, and stay below the oracle
    assert truth["popularity"]["test"]["ndcg@10"] < summary["test_ndcg@10"] < summary["test_oracle_ndcg@10"]
    assert (run / "details" / "valid.parquet").exists() and (run / "details" / "test.parquet").exists()
    capsys.readouterr()
    assert cli_main(["compare", "--a", str(run), "--b", str(run), "--metric", "ndcg@10", "--method", "t", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["users"] == 240 and result["diff"] == 0.0


def test_preprocess_names_the_bad_line(tmp_path, capsys):
    bad = tmp_path / "ratings.dat"
    bad.write_text("1::2::5::978300760\n1::3::five::978300761\n")
    assert cli_main(["preprocess", "--kind", "sequences", "--input", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert f"{bad}:2: field rating: 'five' is not a number" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metadata.json").exists()
