"""The data-side levers: negative downsampling, user / session subsampling, the core-set selector.
Train only; valid and test stay full-rate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data.feed.conftest import preprocess, split_table
from torchrec_app.data.feed.sampling import any_positive, coreset_probabilities, importance_weights, labels_of, proxy_losses
from torchrec_app.data.metadata import load_metadata


def _binomial_ok(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1


def test_negative_downsampling_keeps_positives_and_records_the_rate(feed_raw, feed_dataset, tmp_path):
    assert preprocess(feed_raw, tmp_path / "out", "feed_preprocess.negative_keep_rate=0.25") == 0
    meta = load_metadata(str(tmp_path / "out"))
    full, sampled = labels_of(split_table(feed_dataset, "train")), labels_of(split_table(tmp_path / "out", "train"))
    positives, negatives = int(any_positive(full).sum()), int((~any_positive(full)).sum())
    assert int(any_positive(sampled).sum()) == positives  # every row with a positive label is kept
    assert (sampled.sum(axis=0) == full.sum(axis=0)).all()
    kept_negatives = len(sampled) - positives
    assert _binomial_ok(kept_negatives, negatives, 0.25)
    assert meta.extra["sampling"]["negative_keep_rate"] == 0.25 and meta.split_rows["train"] == len(sampled)
    assert meta.extra["positive_rates"]["train"]["click"] == pytest.approx(full[:, 0].sum() / len(sampled))
    for split in ("valid", "test"):  # full-rate
        assert split_table(tmp_path / "out", split).equals(split_table(feed_dataset, split))
    assert (split_table(tmp_path / "out", "train").column("importance").to_numpy() == 1).all()


@pytest.mark.parametrize("lever, column", [("user_keep_rate", "user"), ("session_keep_rate", "session")])
def test_user_and_session_subsampling_keep_whole_groups(feed_raw, feed_dataset, tmp_path, lever, column):
    assert preprocess(feed_raw, tmp_path / "out", f"feed_preprocess.{lever}=0.4") == 0
    full = split_table(feed_dataset, "train").column(column).to_numpy()
    sampled = split_table(tmp_path / "out", "train").column(column).to_numpy()
    kept = np.unique(sampled)
    assert np.isin(full, kept).sum() == len(sampled)  # every row of a kept group, no row of another
    assert _binomial_ok(len(kept), len(np.unique(full)), 0.4)
    assert preprocess(feed_raw, tmp_path / "again", f"feed_preprocess.{lever}=0.4") == 0  # the same groups every run
    assert np.array_equal(split_table(tmp_path / "again", "train").column(column).to_numpy(), sampled)


def test_coreset_from_a_scores_file_is_unbiased_after_reweighting(feed_raw, feed_dataset, tmp_path):
    full = split_table(feed_dataset, "train")
    clicks = full.column("label_click").to_numpy().astype(np.float64)
    losses = 1.0 + 9.0 * clicks  # a previous run found the clicked rows hard: they are kept ~10x as often
    pq.write_table(pa.table({"loss": losses}), tmp_path / "losses.parquet")
    overrides = ["feed_preprocess.coreset_rate=0.3", "feed_preprocess.coreset_score=file",
                 f"feed_preprocess.coreset_scores_file={tmp_path / 'losses.parquet'}"]  # fmt: skip
    assert preprocess(feed_raw, tmp_path / "out", *overrides) == 0
    sampled = split_table(tmp_path / "out", "train")
    importance = sampled.column("importance").to_numpy().astype(np.float64)
    kept_clicks = sampled.column("label_click").to_numpy()
    assert importance.mean() == pytest.approx(1.0, abs=1e-5)
    assert _binomial_ok(sampled.num_rows, full.num_rows, 0.3, sigmas=6)
    assert kept_clicks.mean() > 2 * clicks.mean()  # hard rows over-represented ...
    weighted = float((importance * kept_clicks).sum() / importance.sum())
    assert weighted == pytest.approx(clicks.mean(), rel=0.15)  # ... and the weights undo it
    assert importance[kept_clicks == 1].max() < importance[kept_clicks == 0].min()
    meta = load_metadata(str(tmp_path / "out"))
    assert meta.extra["sampling"]["coreset"]["score"] == "file"
    pq.write_table(pa.table({"loss": losses[:-1]}), tmp_path / "short.parquet")
    assert preprocess(feed_raw, tmp_path / "out", *overrides[:2], f"feed_preprocess.coreset_scores_file={tmp_path / 'short.parquet'}") == 1


def test_coreset_with_the_proxy_model(feed_dataset, feed_raw, tmp_path):
    meta = load_metadata(str(feed_dataset))
    train = split_table(feed_dataset, "train")
    sizes = {t[2:]: n for t, n in meta.extra["feed"]["tables"].items()}
    losses = proxy_losses(train, sizes, seed=0)
    labels = labels_of(train)
    assert losses.shape == (train.num_rows,) and np.isfinite(losses).all()
    assert losses[any_positive(labels)].mean() > 3 * losses[~any_positive(labels)].mean()  # positives are the hard rows
    assert preprocess(feed_raw, tmp_path / "out", "feed_preprocess.coreset_rate=0.5") == 0
    sampled = split_table(tmp_path / "out", "train")
    importance = sampled.column("importance").to_numpy()
    assert importance.mean() == pytest.approx(1.0, abs=1e-5) and importance.std() > 0.05
    assert any_positive(labels_of(sampled)).mean() > any_positive(labels).mean()


def test_coreset_probabilities_keep_the_budget():
    losses = np.random.default_rng(0).exponential(size=1000) ** 3  # heavy-tailed: many capped at 1
    p = coreset_probabilities(losses, rate=0.2, mix=0.1)
    assert p.sum() == pytest.approx(200.0) and p.max() <= 1.0 and p.min() >= 0.2 * 0.1 - 1e-12
    order = np.argsort(losses)
    assert (np.diff(p[order]) >= -1e-12).all()  # harder rows never less likely
    kept = np.ones(1000, dtype=bool)
    assert importance_weights(p, kept).mean() == pytest.approx(1.0)
