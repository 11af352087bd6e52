"""The feed task: how the one training loop builds, feeds and scores the home-feed ranker.

* ``model.name=feed``; data kind ``feed`` (``torchrec-app preprocess --kind feed``; batches are
  :class:`~torchrec_app.data.feed.batch.FeedBatch` from the kind's registered batch maker);
* model: :func:`~torchrec_app.models.feed.model.build_feed_model` from the ``model`` (``model.feed``,
  ``model.cross``, ``model.dense_arch``) and ``sparse`` sections and the dataset's tables;
* batches: the dataset kind's :func:`~torchrec_app.data.feed.batches.make_feed_batch`, histories
  cut at the reader to ``model.feed.max_history`` (fewer ids through the input all-to-all), and
  without history keys when ``model.feed.encoder=none``;
* evaluator: :class:`~torchrec_app.metrics.multitask.MultiTaskEvaluator`, per objective
  ``<objective>/auc``, ``/logloss``, ``/calibration``; monitored on ``auc``, the mean over the
  trained objectives (higher is better). The auxiliary ``any`` head is scored but not averaged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torchrec_app.config.schema import AppConfig
from torchrec_app.data.feed.batch import FeedBatch
from torchrec_app.data.feed.batches import feed_batch_maker, make_feed_batch
from torchrec_app.data.metadata import DatasetMetadata
from torchrec_app.metrics.multitask import MultiTaskEvaluator
from torchrec_app.models.feed.correction import downsampling_correction
from torchrec_app.models.feed.model import FeedModel, build_feed_model, feed_inputs, has_any_head, item_dim_of, trained_objectives
from torchrec_app.models.sparse import parameters_by_table
from torchrec_app.models.task import Task

#: ``model.name`` values of the task
FEED_MODELS = ("feed",)


def build_model(config: AppConfig, metadata: DatasetMetadata, device) -> FeedModel:
    """The feed model for this dataset's tables."""
    return build_feed_model(config.model, config.sparse, feed_inputs(metadata, config.data), device)


def batch_maker(config: AppConfig, metadata: DatasetMetadata, data_dir: str):
    """``(columns, make_batch)``: the feed reader's, histories cut to what the model reads."""
    columns, _ = feed_batch_maker(metadata, config.data)
    stored = int(metadata.extra.get("feed", {}).get("max_history", 0))
    feed = config.model.feed
    keep = min(feed.max_history, stored) if stored else feed.max_history
    with_history = feed.encoder != "none"

    def make_batch(table, size: int) -> FeedBatch:
        batch = make_feed_batch(table, size, keep)
        if not with_history:  # the candidate only: FeedBatch.sequences starts with it
            batch.sequences = batch.sequences.split([1, len(batch.sequences.keys()) - 1])[0]
        return batch

    return columns, make_batch


def make_evaluator(config: AppConfig, metadata: DatasetMetadata) -> MultiTaskEvaluator:
    """Per-objective metrics; on negatively downsampled data, of the corrected probabilities
    (:func:`~torchrec_app.models.feed.correction.downsampling_correction`)."""
    objectives = trained_objectives(config.model.feed)
    rate = feed_inputs(metadata, config.data).negative_keep_rate
    transform = downsampling_correction(objectives, rate) if rate < 1.0 else None
    return MultiTaskEvaluator(objectives, transform)


def describe(config: AppConfig, metadata: DatasetMetadata) -> dict[str, Any]:
    """Facts for ``summary.json``: objectives, heads, encoder, multi-task structure, table parameters."""
    inputs = feed_inputs(metadata, config.data)
    feed = config.model.feed
    item_dim = item_dim_of(config.model, config.sparse)
    pooled_sparse = replace(config.sparse, dims={f: d for f, d in config.sparse.dims.items() if f in inputs.pooled_features})
    pooled = parameters_by_table(pooled_sparse, inputs.pooled_features, inputs.pooled_rows)["total"]["after"]
    return {
        "objectives": trained_objectives(feed),
        "any_head": has_any_head(feed, inputs.negative_keep_rate),
        "encoder": feed.encoder, "multitask": feed.multitask, "weighting": feed.weighting,
        "table_parameters": pooled + inputs.num_items * item_dim,
        "item_table_parameters": inputs.num_items * item_dim,
    }  # fmt: skip


FEED_TASK = Task(
    name="feed",
    data_kind="feed",
    build_model=build_model,
    make_evaluator=make_evaluator,
    monitor="auc",
    higher_is_better=True,
    describe=describe,
    batch_maker=batch_maker,
)
