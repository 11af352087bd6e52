"""The general-recommendation task: EASE and Multi-VAE on a user-item dataset (``docs/GENERAL.md``).

* data kind ``user_items`` (``torchrec-app preprocess --kind user_items``), either protocol;
* ``multivae`` trains in the one loop: its item table (the encoder's first layer) is an
  ``EmbeddingBagCollection`` placed by the planner, the rest DDP; batches from
  :class:`~torchrec_app.data.user_items.UserItemsBatcher` with the input dropout;
* ``ease`` is closed-form: the task's ``fit`` solves it (:func:`~.ease.fit_ease`) and the
  training command scores it with the same evaluator and writes the same run directory
  (:mod:`torchrec_app.training.closed_form`), on one process;
* evaluator: :class:`~.scoring.UserItemsEvaluator` (full ranking, input items masked),
  monitored on ``ndcg@10``.
"""

from __future__ import annotations

from torch import nn

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import AppConfig
from torchrec_app.data.metadata import DatasetMetadata
from torchrec_app.data.user_items import COLUMNS, KIND, UserItemsBatcher
from torchrec_app.models.general.ease import ease_memory_bytes, fit_ease
from torchrec_app.models.general.multivae import MultiVae
from torchrec_app.models.general.scoring import UserItemsEvaluator
from torchrec_app.models.task import Task


def _num_items(metadata: DatasetMetadata) -> int:
    return int(metadata.num_embeddings["item"]) - 1


def build_multivae(config: AppConfig, metadata: DatasetMetadata, device) -> nn.Module:
    """Multi-VAE for the dataset's catalog (item table on ``device``)."""
    return MultiVae(_num_items(metadata), config.multivae, device=device)


def multivae_batches(config: AppConfig, metadata: DatasetMetadata, data_dir: str):
    """``(columns, make_batch)``: user rows with Multi-VAE's input dropout on training rows."""
    return list(COLUMNS), UserItemsBatcher(config.multivae.input_dropout, config.multivae.dropout_seed)


def ease_batches(config: AppConfig, metadata: DatasetMetadata, data_dir: str):
    return list(COLUMNS), UserItemsBatcher()


def make_evaluator(config: AppConfig, metadata: DatasetMetadata) -> UserItemsEvaluator:
    return UserItemsEvaluator(config.ranking)


def ease_has_no_tables(config: AppConfig, metadata: DatasetMetadata, device) -> nn.Module:
    """EASE has no embedding tables to plan or shard (``plan``, the loop): say so, with the memory it needs."""
    items = _num_items(metadata)
    raise ConfigError(f"model.name=ease is solved in closed form on one process: no tables to plan or shard; on {items:,} items "
                      f"it needs {ease_memory_bytes(items) / 1e9:.2f} GB (20 x items^2 bytes); train it with `torchrec-app train --recipe ease`")


def describe_ease(config: AppConfig, metadata: DatasetMetadata) -> dict:
    n = _num_items(metadata) + 1
    return {"ease_l2": config.ease.l2, "ease_matrix_shape": [n, n], "protocol": metadata.extra.get("protocol")}


def describe_multivae(config: AppConfig, metadata: DatasetMetadata) -> dict:
    c = config.multivae
    return {"multivae_anneal_cap": c.anneal_cap, "multivae_total_anneal_steps": c.total_anneal_steps,
            "protocol": metadata.extra.get("protocol")}  # fmt: skip


MULTIVAE_TASK = Task(name="general", data_kind=KIND, build_model=build_multivae, make_evaluator=make_evaluator,
                     monitor="ndcg@10", higher_is_better=True, describe=describe_multivae, batch_maker=multivae_batches)  # fmt: skip
EASE_TASK = Task(name="general_closed_form", data_kind=KIND, build_model=ease_has_no_tables, make_evaluator=make_evaluator,
                 monitor="ndcg@10", higher_is_better=True, describe=describe_ease, batch_maker=ease_batches, fit=fit_ease)  # fmt: skip
