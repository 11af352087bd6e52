"""The next-item task: how the training loop builds, feeds and scores SASRec, BERT4Rec, GRU4Rec and S3Rec.

* data kind ``sequences`` (``torchrec-app preprocess --kind sequences``);
* model: :func:`~torchrec_app.models.sequential.model.build_sequential_model` from the
  ``sequence`` section and the dataset's catalog (``metadata.extra``), or the S3Rec
  pretraining model when ``sequence.pretrain`` is set;
* batches: the model's own :class:`~torchrec_app.data.sequences.batches.SequenceBatcher`
  (sequence lengths, the loss's candidate keys and side information depend on the model);
* evaluator: :class:`~torchrec_app.models.sequential.scoring.NextItemEvaluator` (full
  ranking, the ``ranking`` section), monitored on ``ndcg@10`` (higher is better);
* initialize: ``sequence.pretrained_from`` (tensors written by ``torchrec-app export`` from a
  pretraining run) fills the item, genre and year tables and the encoder.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import nn

from torchrec_app.config.schema import AppConfig
from torchrec_app.data.metadata import DatasetMetadata
from torchrec_app.data.sequences.batches import COLUMNS, ItemSide
from torchrec_app.models.sequential.encoders import ENCODERS
from torchrec_app.models.sequential.model import batcher_for, build_sequential_model
from torchrec_app.models.sequential.pretrain import build_pretraining_model, load_pretrained
from torchrec_app.models.sequential.scoring import NextItemEvaluator
from torchrec_app.models.task import Task

#: ``model.name`` values of the task; ``s3rec`` pretrains (its backbone: ``sequence.backbone``).
SEQUENTIAL_MODELS = (*ENCODERS, "s3rec")


def _side_sizes(metadata: DatasetMetadata) -> tuple[int, int]:
    return metadata.num_embeddings.get("genre", 1), metadata.num_embeddings.get("year", 1)


def build_model(config: AppConfig, metadata: DatasetMetadata, device) -> nn.Module:
    """The trainable unit for ``model.name`` on this dataset's catalog."""
    extra = metadata.extra
    if config.model.name == "s3rec":
        return build_pretraining_model(config.sequence, int(extra["num_items"]), int(extra.get("max_genres", 0)),
                                       _side_sizes(metadata), device)  # fmt: skip
    return build_sequential_model(config.model.name, config.sequence, int(extra["num_items"]), int(extra.get("max_genres", 0)),
                                  _side_sizes(metadata), device)  # fmt: skip


def batch_maker(config: AppConfig, metadata: DatasetMetadata, data_dir: str):
    """``(columns, make_batch)`` matching the model's tables."""
    name = config.sequence.backbone if config.model.name == "s3rec" else config.model.name
    sequence = config.sequence
    rows = int(metadata.extra.get("max_len", sequence.max_len))
    if rows > sequence.max_len and (not dist.is_initialized() or dist.get_rank() == 0):
        print(f"warning: {data_dir}'s training rows hold up to {rows + 1} items but sequence.max_len={sequence.max_len}: "
              f"the model reads only each row's last ones, the earlier items never train; preprocess with "
              f"sequence_preprocess.max_len={sequence.max_len} (e.g. --recipe {config.recipe})", flush=True)
    side = ItemSide.load(data_dir, metadata.extra) if (sequence.side_info or config.model.name == "s3rec") else None
    return list(COLUMNS), batcher_for(name, sequence, int(metadata.extra["num_items"]), side, seed=config.train.seed,
                                      pretrain=config.model.name == "s3rec", num_genres=_side_sizes(metadata)[0] - 1)


def make_evaluator(config: AppConfig, metadata: DatasetMetadata) -> NextItemEvaluator:
    return NextItemEvaluator(config.ranking)


def initialize(model: nn.Module, config: AppConfig, metadata: DatasetMetadata) -> None:
    """Load ``sequence.pretrained_from`` (if set) into the sharded model, and say what was loaded."""
    if config.sequence.pretrained_from:
        loaded = load_pretrained(model, config.sequence.pretrained_from)
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"initialised {len(loaded)} tensors from {config.sequence.pretrained_from}: "
                  f"{', '.join(sorted({n.split('.')[2] if n.startswith('embeddings.') else n.split('.')[1] for n in loaded}))}",
                  flush=True)


NEXT_ITEM_TASK = Task(
    name="next_item",
    data_kind="sequences",
    build_model=build_model,
    make_evaluator=make_evaluator,
    monitor="ndcg@10",
    higher_is_better=True,
    batch_maker=batch_maker,
    initialize=initialize,
)
