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

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import AppConfig
from torchrec_app.data.feed.batch import ACTIONS, CANDIDATE, FeedBatch
from torchrec_app.data.feed.batches import feed_batch_maker, make_feed_batch
from torchrec_app.data.feed.schema import DENSE_FEATURES, KIND, POOLED_FEATURES
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


def planning_metadata(config: AppConfig) -> DatasetMetadata:
    """A feed dataset description from the recipe alone (``torchrec-app plan`` without ``--data``):
    ``sparse.num_embeddings`` lists the tables' rows in the order of the pooled features
    (``user, category, keywords, ctx_device, ctx_surface, ctx_region``), then ``item``.

    >>> from torchrec_app.config import build_recipe
    >>> meta = planning_metadata(build_recipe("feed_marketplace"))
    >>> meta.num_embeddings["keywords"], meta.num_embeddings["item"]
    (1200000, 1000000)
    """
    names = [*POOLED_FEATURES, CANDIDATE]
    sizes = config.sparse.num_embeddings
    if len(sizes) != len(names):
        raise ConfigError(f"recipe {config.recipe}: without --data, plan reads the feed tables' rows from sparse.num_embeddings, "
                          f"{len(names)} numbers for {', '.join(names)} (got {len(sizes)}); or pass --data DIR")  # fmt: skip
    layout = {"pooled_features": list(POOLED_FEATURES), "actions": list(ACTIONS), "max_history": config.model.feed.max_history}
    return DatasetMetadata(kind=KIND, dense_features=list(DENSE_FEATURES), sparse_features=names, multi_hot=True,
                           num_embeddings=dict(zip(names, sizes)), extra={"feed": layout})  # fmt: skip


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
    planning_metadata=planning_metadata,
)
