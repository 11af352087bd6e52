"""The model the trainer would build, on ``meta``, for planning without data or devices.

With ``--data DIR`` the dataset's ``metadata.json`` describes the model's inputs, as in
training. Without it the recipe does (:func:`recipe_metadata`): ``sparse.num_embeddings``
gives one table per sparse feature, named ``C1..Cn`` as in Criteo, and
``sparse.num_dense`` dense features. Either way the model is built by its family's task
(:func:`torchrec_app.models.task_for`) and prepared for sharding exactly as training does
(:func:`torchrec_app.distributed.build.prepare_for_sharding`), so the plan shown is the
plan training makes.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchrec.modules.embedding_configs import BaseEmbeddingConfig

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import AppConfig
from torchrec_app.data.metadata import DatasetMetadata, load_metadata
from torchrec_app.distributed.build import prepare_for_sharding
from torchrec_app.models import task_for


def recipe_metadata(config: AppConfig) -> DatasetMetadata:
    """A Criteo-kind dataset description from the recipe: features ``C1..Cn`` with ``sparse.num_embeddings`` rows.

    >>> from torchrec_app.config import build_recipe
    >>> meta = recipe_metadata(build_recipe("tiny"))
    >>> meta.sparse_features, meta.num_embeddings["C1"], len(meta.dense_features)
    (['C1', 'C2', 'C3', 'C4'], 100, 4)
    """
    sizes = config.sparse.num_embeddings
    if not sizes:
        raise ConfigError(
            f"recipe {config.recipe} has no sparse.num_embeddings, so there are no tables to plan: "
            "pass --data DIR (a preprocessed dataset) or sparse.num_embeddings=N1,N2,..."
        )
    features = [f"C{i + 1}" for i in range(len(sizes))]
    return DatasetMetadata(dense_features=[f"I{i + 1}" for i in range(config.sparse.num_dense)], sparse_features=features,
                           num_embeddings=dict(zip(features, sizes)))  # fmt: skip


def planning_inputs(config: AppConfig, data_dir: str | Path | None) -> tuple[DatasetMetadata, str]:
    """The dataset description to plan for, and where it came from (for the report)."""
    if data_dir:
        return load_metadata(str(data_dir)), f"dataset {data_dir}"
    from_recipe = task_for(config.model.name).planning_metadata or recipe_metadata  # e.g. the feed ranker's layout
    return from_recipe(config), f"recipe {config.recipe}"


def build_planning_model(config: AppConfig, metadata: DatasetMetadata) -> tuple[nn.Module, list[BaseEmbeddingConfig]]:
    """The model on ``meta`` with the fused table optimizer registered, as the trainer builds it
    (the optimizer decides how much state the planner counts), and its tables."""
    model = task_for(config.model.name).build_model(config, metadata, "meta")
    return model, prepare_for_sharding(model, config.optim)
