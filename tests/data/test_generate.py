import hashlib
import json
import os

import numpy as np

from torchrec_app.config.data import GeneratorConfig
from torchrec_app.data.generate import generate_dataset, split_sizes
from torchrec_app.data.truth import load_truth


def _digest(directory):
    return {name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
            for name in ("train.txt", "valid.txt", "test.txt")}  # fmt: skip


def test_truth_has_oracle_metrics_and_planted_crosses(generated):
    text, _ = generated
    truth = load_truth(text)
    for split in ("train", "valid", "test"):
        oracle = truth["oracle"][split]
        assert oracle["auc"] > 0.6, oracle
        assert 0.15 < oracle["ctr"] < 0.35
        assert oracle["logloss"] < 0.693
    assert ["C1", "C2"] in truth["crosses"] and len(truth["crosses"]) >= 2
    assert truth["dense_crosses"] == [["I5", "C6"]]
    assert truth["rows"] == split_sizes(20_000)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    config = GeneratorConfig(rows=3000, seed=11, chunk_rows=1000)
    generate_dataset(str(tmp_path / "a"), config)
    generate_dataset(str(tmp_path / "b"), config)
    generate_dataset(str(tmp_path / "c"), GeneratorConfig(rows=3000, seed=12))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["train.txt"] != _digest(tmp_path / "c")["train.txt"]
    assert json.load(open(tmp_path / "a" / "truth.json")) == json.load(open(tmp_path / "b" / "truth.json"))


def test_rows_look_like_criteo(generated):
    text, _ = generated
    lines = open(os.path.join(text, "train.txt")).read().splitlines()
    assert len(lines) == 16_000
    fields = [line.split("\t") for line in lines]
    assert all(len(f) == 40 for f in fields)
    assert {f[0] for f in fields} == {"0", "1"}
    i2 = [int(f[2]) for f in fields if f[2]]
    assert min(i2) < 0  # I2 is sometimes negative
    i12_missing = np.mean([f[12] == "" for f in fields])
    assert 0.6 < i12_missing < 0.9
    c1 = [f[14] for f in fields]
    assert all(len(v) == 8 and int(v, 16) >= 0 for v in c1)
    counts = np.sort(np.unique(c1, return_counts=True)[1])[::-1]
    assert counts[0] > 20 * np.median(counts)  # long-tailed
    assert np.mean([f[33] == "" for f in fields]) > 0.3  # C20 often missing


def test_multi_hot_fields_hold_several_ids(tmp_path):
    generate_dataset(str(tmp_path), GeneratorConfig(rows=200, seed=1, multi_hot=True, multi_hot_separator=","))
    fields = [line.split("\t") for line in open(tmp_path / "train.txt").read().splitlines()]
    sizes = GeneratorConfig().multi_hot_sizes
    for row in fields:
        for f, value in enumerate(row[14:]):
            if value:
                assert len(value.split(",")) == sizes[f]
    assert load_truth(str(tmp_path))["multi_hot"] is True
