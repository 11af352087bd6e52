"""The home-feed ranker's trainable unit: sharded tables + history encoders + DCNv2 + multi-task heads.

    FeedBatch.pooled (KJT) --EmbeddingBagCollection (SparseArch)--> e_user, e_category, e_keywords, e_ctx_* (pooled)
    FeedBatch.sequences (KJT) --EmbeddingCollection, table t_item--> per-key JaggedTensors (unpooled)
        item (the candidate, 1 id)       -> c                                         B x D
        hist_<action> (newest first)     -> encoder_<action>(c, history)             B x H  (one encoder per action)
    FeedBatch.dense_features --DenseArch--> d                                         B x d
    x0 = [d; e_user; ...; c; hist_click; ...; hist_report]                           B x N
    z  = CrossNet(x0)  (DCNv2, the shared bottom)                                   B x N
    logits = heads(z)  (shared-bottom towers | MMoE | PLE)                          B x K (+1: the "any" head)
    loss = weighting({objective: weighted BCE})                                     scalar

Tables: the pooled features' tables come from the ``sparse`` section exactly as for Criteo
(``t_<feature>``, widths ``sparse.dims``, compression ``sparse.compress``); the item table
``t_item`` (``num_items`` rows, width ``model.feed.item_dim`` or ``sparse.dims["item"]``) is read
by the candidate key and every history key (one table, several features), so the planner places
one table (row-wise when it is large). With ``model.feed.encoder=none`` it reads the candidate
only, and the task's batch maker sends no history ids (the baseline pays for no history lookup). Both collections are built on ``meta`` and sharded by
:func:`~torchrec_app.distributed.build.build_sharded_model` like every other model.

``x0``'s blocks (:meth:`FeedTower.cross_input_blocks`) include the candidate and each history
encoder's output, so ``torchrec-app explain`` / ``suggest-dims`` rank them with the pooled features.

``forward`` is what ``TrainPipelineSparseDist`` traces: the two collections read the batch's two
KJTs directly (so both input all-to-alls are pipelined) and everything dense is one call of
:class:`FeedTower`, a leaf module for the tracer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch
from torchrec.modules.embedding_configs import DataType, EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.feed import FeedModelConfig
from torchrec_app.config.schema import CrossConfig, ModelConfig, SparseConfig
from torchrec_app.data.feed.batch import ACTIONS, CANDIDATE, ITEM_TABLE, OBJECTIVES, FeedBatch, history_key
from torchrec_app.models.feed.encoders import build_history_encoder, truncate
from torchrec_app.models.feed.heads import MULTITASK_HEADS
from torchrec_app.models.feed.losses import build_weighting, objective_losses
from torchrec_app.models.sparse import SparseArch, build_feature_transform, build_tables
from torchrec_app.models.task import ModelOutput
from torchrec_app.models.towers.dcnv2 import build_crossnet

#: the auxiliary head's name: "any objective positive" (undoes negative downsampling, see docs/MODELS.md)
ANY = "any"


@dataclass(frozen=True)
class FeedInputs:
    """What the feed model needs to know about its dataset (from ``metadata.json``, :func:`feed_inputs`)."""

    num_dense: int
    """Dense context features (``FeedBatch.dense_features`` columns)."""
    pooled_features: list[str]
    """Keys of ``FeedBatch.pooled``, in order."""
    pooled_rows: dict[str, int]
    """Rows of each pooled feature's table."""
    num_items: int
    """Rows of the item table ``t_item`` (ids of the candidate and of every history)."""
    actions: tuple[str, ...] = ACTIONS
    """History actions (``hist_<action>`` keys of ``FeedBatch.sequences``)."""
    negative_keep_rate: float = 1.0
    """Fraction of all-negative rows the data kept (``extra.sampling.negative_keep_rate``; 1: not downsampled)."""


def feed_inputs(metadata, reader) -> FeedInputs:
    """The :class:`FeedInputs` of a ``kind: feed`` dataset (``metadata``: its ``DatasetMetadata``;
    ``reader``: the ``data`` section, checked: its ``max_ind_range`` applies to Criteo ids only).

    The pooled features and actions are ``extra.feed.pooled_features`` / ``extra.feed.actions``
    (``preprocess --kind feed`` writes them; otherwise ``sparse_features`` without ``item``, and every
    action); ``num_embeddings["item"]`` (or ``extra.num_items``) is the item table's rows.
    """
    if reader.max_ind_range > 0:
        raise ConfigError(f"data.max_ind_range={reader.max_ind_range} caps Criteo ids; feed ids are vocabulary indices that the "
                          "reader does not cap: unset it (rare ids: feed_preprocess.min_frequency)")  # fmt: skip
    sizes = metadata.num_embeddings
    extra = dict(metadata.extra)
    num_items = metadata.num_embeddings.get(CANDIDATE, extra.get("num_items"))
    if num_items is None:
        raise ConfigError("the feed dataset's metadata.json has neither num_embeddings.item nor extra.num_items (the item "
                          "table's rows); rerun `torchrec-app preprocess --kind feed`")  # fmt: skip
    layout = extra.get("feed", {})
    pooled = list(layout.get("pooled_features", [f for f in metadata.sparse_features if f != CANDIDATE]))
    actions = tuple(layout.get("actions", ACTIONS))
    rate = float(extra.get("sampling", {}).get("negative_keep_rate", 1.0))
    return FeedInputs(num_dense=len(metadata.dense_features), pooled_features=pooled, pooled_rows={f: sizes[f] for f in pooled},
                      num_items=int(num_items), actions=actions, negative_keep_rate=rate)  # fmt: skip


def trained_objectives(config: FeedModelConfig) -> list[str]:
    """The objectives ``config`` trains and scores, in ``OBJECTIVES`` order.

    >>> trained_objectives(FeedModelConfig()), trained_objectives(FeedModelConfig(objectives=["hide", "click"]))
    (['click', 'watch', 'chat', 'hide', 'report'], ['click', 'hide'])
    """
    unknown = sorted(set(config.objectives) - set(OBJECTIVES))
    if unknown:
        raise ConfigError(f"model.feed.objectives names {unknown}; the feed objectives are {list(OBJECTIVES)}")
    return [o for o in OBJECTIVES if not config.objectives or o in config.objectives]


def has_any_head(config: FeedModelConfig, negative_keep_rate: float) -> bool:
    """Whether the model gets the auxiliary "any positive" head (``model.feed.any_head``)."""
    return config.any_head == "on" or (config.any_head == "auto" and negative_keep_rate < 1.0)


class FeedTower(nn.Module):
    """Everything dense: dense arch, history encoders, the DCNv2 cross network, heads, losses.

    Args:
        config: ``model.feed``.
        cross: ``model.cross`` (the shared bottom's cross network).
        dense_arch: MLP widths over the dense features (last = ``d``).
        num_dense: dense input features.
        pooled_blocks: ``(feature, width)`` of the pooled embeddings, in ``SparseArch`` order.
        item_dim: width ``D`` of the item table.
        actions: history actions encoded (none when ``config.encoder == "none"``).
        any_head: add the auxiliary "any positive" head.

    Example::

        >>> tower = FeedTower(FeedModelConfig(encoder="mean", item_dim=4, objectives=["click", "chat"]),
        ...                   CrossConfig(num_layers=1, low_rank=4), [8], 3, [("user", 4)], 4, ("click",), any_head=True)
        >>> tower.cross_input_blocks()
        [('dense', 8), ('user', 4), ('item', 4), ('hist_click', 4)]
        >>> tower.heads_names
        ['click', 'chat', 'any']
    """

    def __init__(self, config: FeedModelConfig, cross: CrossConfig, dense_arch: list[int], num_dense: int,
                 pooled_blocks: list[tuple[str, int]], item_dim: int, actions: tuple[str, ...], any_head: bool) -> None:  # fmt: skip
        super().__init__()
        self.config = config
        self.objectives = trained_objectives(config)
        self.label_columns = [OBJECTIVES.index(o) for o in self.objectives]
        self.heads_names = self.objectives + ([ANY] if any_head else [])
        self.any_head = any_head
        self.dense_arch = DenseArch(num_dense, dense_arch)
        self.pooled_blocks = list(pooled_blocks)
        self.item_dim = item_dim
        self.actions = tuple(actions) if config.encoder != "none" else ()
        history_dim = config.history_dim or item_dim
        encoder_config = replace(config, item_dim=item_dim)
        self.encoders = nn.ModuleDict({a: build_history_encoder(encoder_config, history_dim) for a in self.actions})
        self.blocks = [("dense", dense_arch[-1]), *self.pooled_blocks, (CANDIDATE, item_dim),
                       *[(history_key(a), history_dim) for a in self.actions]]  # fmt: skip
        self.input_dim = sum(width for _, width in self.blocks)
        self.crossnet = build_crossnet(cross, self.input_dim)
        self.heads = MULTITASK_HEADS[config.multitask](config, self.input_dim, len(self.heads_names))
        self.weighting = build_weighting(config, self.heads_names)

    def cross_input_blocks(self) -> list[tuple[str, int]]:
        """The blocks of ``x0`` in order, ``(name, width)`` (what ``torchrec-app explain`` reads the cross weight by)."""
        return list(self.blocks)

    def representation(self, dense: torch.Tensor, pooled: torch.Tensor, sequences: dict[str, JaggedTensor]) -> torch.Tensor:
        """``x0``, ``B x N``: ``[dense_arch(dense); pooled; c; encoder_a(c, history_a) ...]``."""
        item = sequences[CANDIDATE]
        candidate = torch.ops.fbgemm.jagged_to_padded_dense(item.values(), [item.offsets()], [1], 0.0)[:, 0]  # B x D
        histories = [self.encoders[a](candidate, truncate(sequences[history_key(a)], self.config.max_history)) for a in self.actions]
        return torch.cat([self.dense_arch(dense), pooled, candidate, *histories], dim=1)

    def logits(self, dense: torch.Tensor, pooled: torch.Tensor, sequences: dict[str, JaggedTensor]) -> torch.Tensor:
        """``B x K``: one logit per head in ``heads_names`` order (probabilities on the training data's distribution)."""
        return self.heads(self.crossnet(self.representation(dense, pooled, sequences)))

    def forward(self, dense: torch.Tensor, pooled: torch.Tensor, sequences: dict[str, JaggedTensor], labels: torch.Tensor,
                weights: torch.Tensor, importance: torch.Tensor) -> tuple[torch.Tensor, ModelOutput]:  # fmt: skip
        shared = self.crossnet(self.representation(dense, pooled, sequences))
        logits = self.heads(shared)
        targets = labels[:, self.label_columns]
        if self.any_head:  # fixed at construction: static under torch.fx
            targets = torch.cat([targets, labels.amax(dim=1, keepdim=True)], dim=1)
        losses = objective_losses(logits, targets, weights * importance, self.heads_names)
        loss = self.weighting(losses, shared=shared)
        output = ModelOutput(
            loss=loss.detach(), weights=weights,
            predictions={name: logits[:, k].detach() for k, name in enumerate(self.heads_names)},
            labels={name: targets[:, k] for k, name in enumerate(self.heads_names)},
            losses={name: value.detach() for name, value in losses.items()},
        )  # fmt: skip
        return loss, output


class FeedModel(nn.Module):
    """Pooled tables (``SparseArch``) + the item ``EmbeddingCollection`` + :class:`FeedTower`;
    ``forward(batch) -> (loss, ModelOutput)`` with one prediction per head (logits ``B``)."""

    def __init__(self, sparse_arch: SparseArch, item_embeddings: EmbeddingCollection, tower: FeedTower) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.item_embeddings = item_embeddings
        self.tower = tower

    def forward(self, batch: FeedBatch) -> tuple[torch.Tensor, ModelOutput]:
        pooled = self.sparse_arch(batch.pooled)
        sequences = self.item_embeddings(batch.sequences)
        return self.tower(batch.dense_features, pooled, sequences, batch.labels, batch.weights, batch.importance)

    def logits(self, batch: FeedBatch) -> torch.Tensor:
        """``B x K`` logits, heads in ``tower.heads_names`` order (scoring without labels)."""
        return self.tower.logits(batch.dense_features, self.sparse_arch(batch.pooled), self.item_embeddings(batch.sequences))


def item_dim_of(model: ModelConfig, sparse: SparseConfig) -> int:
    """Width of ``t_item``: ``sparse.dims["item"]`` if set (what suggest-dims proposes), else ``model.feed.item_dim``."""
    return int(sparse.dims.get(CANDIDATE, model.feed.item_dim))


def build_item_table(num_items: int, dim: int, actions: tuple[str, ...], data_type: DataType = DataType.FP32) -> EmbeddingConfig:
    """``t_item``: read by the candidate key and every history key."""
    init = 1.0 / math.sqrt(dim)
    return EmbeddingConfig(name=ITEM_TABLE, num_embeddings=num_items, embedding_dim=dim, data_type=data_type,
                           feature_names=[CANDIDATE, *(history_key(a) for a in actions)],
                           weight_init_min=-init, weight_init_max=init)  # fmt: skip


def build_feed_model(model: ModelConfig, sparse: SparseConfig, inputs: FeedInputs, device: torch.device | str = "meta") -> FeedModel:
    """The feed model for a dataset described by ``inputs``; tables on ``device`` (``meta`` to shard them).

    Example::

        >>> inputs = FeedInputs(num_dense=2, pooled_features=["user", "keywords"], pooled_rows={"user": 10, "keywords": 50}, num_items=30)
        >>> config = ModelConfig(name="feed", dense_arch=[8], cross=CrossConfig(num_layers=1, low_rank=4),
        ...                      feed=FeedModelConfig(encoder="gru", item_dim=4, tower_dims=[4]))
        >>> m = build_feed_model(config, SparseConfig(embedding_dim=4, dims={"keywords": 8}), inputs, "cpu")
        >>> [(t.name, t.num_embeddings, t.embedding_dim) for t in m.item_embeddings.embedding_configs()]
        [('t_item', 30, 4)]
        >>> m.tower.input_dim  # dense 8 + user 4 + keywords 8 + item 4 + 5 histories x 4
        44
    """
    item_dim = item_dim_of(model, sparse)
    history_keys = {history_key(a) for a in inputs.actions}
    unknown = sorted(set(sparse.dims) - set(inputs.pooled_features) - {CANDIDATE})
    if unknown:
        raise ConfigError(f"sparse.dims names {unknown}, which are not tables of the feed model; its tables are "
                          f"{inputs.pooled_features + [CANDIDATE]}" + (" (history blocks are sized by model.feed.history_dim)"
                                                                         if set(unknown) & history_keys else ""))  # fmt: skip
    pooled_sparse = replace(sparse, dims={f: d for f, d in sparse.dims.items() if f != CANDIDATE})
    tables = build_tables(pooled_sparse, inputs.pooled_features, inputs.pooled_rows)
    transform = build_feature_transform(pooled_sparse, inputs.pooled_features, inputs.pooled_rows)
    sparse_arch = SparseArch(EmbeddingBagCollection(tables=tables, device=torch.device(device)), transform)
    read_actions = inputs.actions if model.feed.encoder != "none" else ()  # no history: the table reads the candidate only
    item_table = build_item_table(inputs.num_items, item_dim, read_actions, DataType[sparse.data_type.upper()])
    item_embeddings = EmbeddingCollection(tables=[item_table], device=torch.device(device))
    pooled_blocks = list(zip(sparse_arch.feature_names, sparse_arch.feature_dims))
    tower = FeedTower(model.feed, model.cross, model.dense_arch, inputs.num_dense, pooled_blocks, item_dim, inputs.actions,
                      has_any_head(model.feed, inputs.negative_keep_rate))  # fmt: skip
    return FeedModel(sparse_arch, item_embeddings, tower)
