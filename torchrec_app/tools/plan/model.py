"""The model the trainer would build, on ``meta``, for planning without data or devices.

With ``--data DIR`` the features and table sizes come from the dataset's metadata, as
in training. Without it they come from the recipe: ``sparse.num_embeddings`` gives one
table per sparse feature, named ``C1..Cn`` as in Criteo, capped at
``data.max_ind_range`` rows when that is set (ids are taken modulo it), and
``sparse.num_dense`` dense features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import AppConfig
from torchrec_app.models.ctr import build_model
from torchrec_app.models.sparse import build_tables
from torchrec_app.training.optimizers import apply_sparse_optimizer


@dataclass(frozen=True)
class ModelInputs:
    """Features and table sizes of the model to plan."""

    dense_features: int | list[str]
    sparse_features: list[str]
    num_embeddings: dict[str, int]
    source: str
    """Where they came from (dataset directory or recipe), for the report."""


def recipe_inputs(config: AppConfig) -> ModelInputs:
    """Features ``C1..Cn`` with the recipe's ``sparse.num_embeddings`` (capped at ``data.max_ind_range``).

    >>> from torchrec_app.config import build_recipe
    >>> inputs = recipe_inputs(build_recipe("tiny"))
    >>> inputs.sparse_features, inputs.num_embeddings["C1"], inputs.dense_features
    (['C1', 'C2', 'C3', 'C4'], 100, 4)
    """
    sizes = config.sparse.num_embeddings
    if not sizes:
        raise ConfigError(
            f"recipe {config.recipe} has no sparse.num_embeddings, so there are no tables to plan: "
            "pass --data DIR (a preprocessed dataset) or sparse.num_embeddings=N1,N2,..."
        )
    cap = config.data.max_ind_range
    features = [f"C{i + 1}" for i in range(len(sizes))]
    num_embeddings = {f: min(n, cap) if cap else n for f, n in zip(features, sizes)}
    return ModelInputs(config.sparse.num_dense, features, num_embeddings, f"recipe {config.recipe}")


def dataset_inputs(config: AppConfig, data_dir: str | Path) -> ModelInputs:
    """Features and table sizes of a preprocessed dataset, exactly as training reads them."""
    from torchrec_app.data.metadata import load_metadata
    from torchrec_app.data.reader import table_sizes

    meta = load_metadata(str(data_dir))
    return ModelInputs(
        list(meta.dense_features), list(meta.sparse_features), dict(table_sizes(meta, config.data)), f"dataset {data_dir}"
    )


def build_planning_model(config: AppConfig, inputs: ModelInputs) -> tuple[nn.Module, list[EmbeddingBagConfig]]:
    """The CTR model on ``meta`` with the fused table optimizer registered, as the trainer
    builds it (the optimizer decides how much state the planner counts), and its tables."""
    model = build_model(config, inputs.dense_features, inputs.sparse_features, inputs.num_embeddings, device="meta")
    apply_sparse_optimizer(model.model.sparse_arch.embedding_bag_collection, config.optim)
    return model, build_tables(config.sparse, inputs.sparse_features, inputs.num_embeddings)
