"""generate --kind feed: the raw format, reproducibility, the planted effects and truth.json."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.data.feed.conftest import generate
from torchrec_app.data.feed.batch import ACTIONS, OBJECTIVES
from torchrec_app.data.feed.formats import read_feed_file
from torchrec_app.data.feed.schema import RAW_SCHEMA, history_key, label_column


def test_raw_files_follow_the_schema_and_the_seed(feed_raw, tmp_path):
    tables = {s: pq.read_table(feed_raw / f"{s}.parquet") for s in ("train", "valid", "test")}
    assert all(t.schema.equals(RAW_SCHEMA) for t in tables.values())
    assert sum(t.num_rows for t in tables.values()) == 6000
    assert 0.7 < tables["train"].num_rows / 6000 < 0.9  # 8:1:1 by session
    train = tables["train"].to_pydict()
    assert max(len(h) for a in ACTIONS for h in train[history_key(a)]) <= 50
    assert set(np.unique(train[label_column("click")])) == {0, 1}
    # sessions never straddle splits: valid and test are new sessions of (mostly) the same users
    sessions = {s: set(t.column("session").to_pylist()) for s, t in tables.items()}
    assert not sessions["train"] & sessions["valid"] and not sessions["train"] & sessions["test"]
    assert len(set(tables["valid"].column("user").to_pylist()) & set(train["user"])) > 0.5 * len(
        set(tables["valid"].column("user").to_pylist())
    )
    again = generate(tmp_path / "again", 6000)
    assert pq.read_table(again / "valid.parquet").equals(tables["valid"])
    other = generate(tmp_path / "other", 6000, seed=1)
    assert not pq.read_table(other / "valid.parquet").equals(tables["valid"])


def test_base_rates_and_oracle_in_truth(feed_raw):
    truth = json.loads((feed_raw / "truth.json").read_text())
    assert truth["kind"] == "feed" and truth["objectives"] == list(OBJECTIVES)
    train = pq.read_table(feed_raw / "train.parquet")
    targets = truth["config"]["base_rates"]
    for objective in OBJECTIVES:
        labels = train.column(label_column(objective)).to_numpy()
        sigma = np.sqrt(targets[objective] * (1 - targets[objective]) / len(labels))
        assert abs(labels.mean() - targets[objective]) < 5 * sigma + 1e-3, objective
        oracle = truth["oracle"]["train"][objective]
        assert oracle["rate"] == labels.mean() and 0.5 < oracle["auc"] < 1.0 and oracle["logloss"] > 0
        if labels.sum() >= 50:  # a handful of report positives makes any AUC noisy
            assert oracle["auc"] > 0.65, objective
    valid = truth["oracle"]["valid"]  # the multi-task evaluator's names, for the run summary's oracle gap
    scored = [valid[f"{o}/auc"] for o in OBJECTIVES if valid[f"{o}/auc"] is not None]  # None: no positive in the split
    assert valid["auc"] == pytest.approx(np.mean(scored)) and valid["min_auc"] == min(scored)
    assert valid["click/auc"] == valid["click"]["auc"] and valid["logloss"] > 0 and 0.5 < valid["click/calibration"] < 2
    # the history carries signal: holding its terms at their mean loses AUC where it matters
    for objective in ("click", "watch", "chat", "hide"):
        oracle = truth["oracle"]["train"][objective]
        assert oracle["auc"] - oracle["auc_without_history_terms"] > 0.05, objective


def test_history_effects_are_in_the_rows(feed_raw):
    """Recent clicks in the candidate's category raise click; past hides in it raise hide and lower click."""
    rows = read_feed_file(str(feed_raw / "train.parquet")).table.to_pydict()
    category = dict(zip(rows["item"], rows["category"]))  # the category of every item shown as a candidate
    same_recent = np.array([sum(category.get(i) == c for i in h[:5]) for c, h in zip(rows["category"], rows["hist_click"])])
    hidden = np.array([any(category.get(i) == c for i in h[:10]) for c, h in zip(rows["category"], rows["hist_hide"])])
    click, hide = np.array(rows["label_click"]), np.array(rows["label_hide"])
    assert click[same_recent >= 2].mean() > 2 * click[same_recent == 0].mean()
    assert hide[hidden].mean() > 3 * hide[~hidden].mean()
    assert click[hidden].mean() < 0.5 * click[~hidden].mean()
