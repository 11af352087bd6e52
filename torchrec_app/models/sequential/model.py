"""The trainable unit of next-item recommendation: a sharded item table + a data-parallel encoder.

    SequenceBatch.features (KJT) --EmbeddingCollection (sharded by the planner)--> per-key JaggedTensors
      item:    B x L x D  item embeddings e (right-padded)       \\
      genre_k, year (side information, optional): mean genre + year  +--> x = e [+ side]
      catalog / negative: candidate embeddings for the loss      /
    x --encoder (SASRec | BERT4Rec | GRU4Rec, DDP)--> hidden B x L x D --> loss over the positions to predict

Tables (``EmbeddingConfig``): ``t_item`` (``N + 1`` rows, row 0 padding) read by the keys
``item``, ``catalog``, ``negative``; ``t_genre`` read by ``genre_1..genre_G``; ``t_year``
by ``year``. All are ``D`` wide. They are built on ``meta`` and placed by the planner
(row-wise for a large catalog); the encoder is replicated.

What each position predicts (training rows, :mod:`torchrec_app.data.sequences.batches`):

* SASRec, GRU4Rec (causal): a row of ``n <= max_len + 1`` items; positions ``0..n-2`` read
  items ``0..t`` and predict item ``t + 1``.
* BERT4Rec (cloze): a row of ``n <= max_len`` items; masked positions
  (:func:`~torchrec_app.models.sequential.encoders.cloze_mask`, probability
  ``mask_prob``, at least one per row) predict their own item from both sides.

Scoring (evaluation): the user vector is the hidden state at the last history position
(causal) or at a ``[mask]`` appended after the history (BERT4Rec), passed through the
encoder's output transform; an item's score is ``u . e_item``, against the item table alone
(side information only enriches inputs). :mod:`torchrec_app.models.sequential.scoring`
ranks every item that way without any rank holding the whole table.

``forward`` is what ``TrainPipelineSparseDist`` traces: a single call of the embedding
collection on ``batch.features`` and one call of the dense :class:`NextItemTower` (a leaf
module for the tracer), so the input all-to-all is pipelined.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor

from torchrec_app.config.sequences import SequenceModelConfig
from torchrec_app.data.sequences.batches import (
    CATALOG,
    ITEM,
    NEGATIVE,
    YEAR,
    ItemSide,
    SequenceBatch,
    SequenceBatcher,
    genre_key,
)
from torchrec_app.models.sequential.encoders import ENCODERS, cloze_mask
from torchrec_app.models.sequential.losses import full_softmax_loss, in_batch_softmax_loss, sampled_softmax_loss
from torchrec_app.models.task import ModelOutput

ITEM_TABLE, GENRE_TABLE, YEAR_TABLE = "t_item", "t_genre", "t_year"


def padded(jagged: JaggedTensor, length: int) -> torch.Tensor:
    """``B x length x D`` from a JaggedTensor of ``D``-wide values (right-padded with zeros)."""
    values = jagged.values()
    return torch.ops.fbgemm.jagged_to_padded_dense(values, [jagged.offsets()], [length], 0.0)


def build_item_tables(num_items: int, dim: int, keys: list[str], side_sizes: tuple[int, int] | None) -> list[EmbeddingConfig]:
    """The tables of the item collection for the batch ``keys`` (``side_sizes``: genre and year table rows)."""
    item_keys = [k for k in keys if k in (ITEM, CATALOG, NEGATIVE)]
    genres = [k for k in keys if k.startswith("genre_")]  # genre_1..genre_G and, pretraining, genre_catalog
    init = 1.0 / math.sqrt(dim)
    tables = [EmbeddingConfig(name=ITEM_TABLE, num_embeddings=num_items + 1, embedding_dim=dim, feature_names=item_keys,
                              weight_init_min=-init, weight_init_max=init)]
    if side_sizes is not None:
        if genres:
            tables.append(EmbeddingConfig(name=GENRE_TABLE, num_embeddings=side_sizes[0], embedding_dim=dim, feature_names=genres,
                                          weight_init_min=-init, weight_init_max=init))
        tables.append(EmbeddingConfig(name=YEAR_TABLE, num_embeddings=side_sizes[1], embedding_dim=dim, feature_names=[YEAR],
                                      weight_init_min=-init, weight_init_max=init))
    return tables


class NextItemTower(nn.Module):
    """Everything dense: input assembly, the encoder, the loss and the user vectors (see the module docstring)."""

    def __init__(self, name: str, config: SequenceModelConfig, num_items: int, num_genre_slots: int, side_info: bool) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.num_items = num_items
        self.genre_keys = [genre_key(k + 1) for k in range(num_genre_slots)] if side_info else []
        self.side_info = side_info
        self.encoder = ENCODERS[name](config)
        self.causal = bool(self.encoder.causal)
        self.width = config.max_len + 1 if self.causal else config.max_len  # batch.items width
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.int64))

    # -- inputs ------------------------------------------------------------------------
    def inputs(self, embeddings: dict[str, JaggedTensor], batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(e, x)``: item embeddings and encoder inputs (``e`` + side information), both ``B x W x D``."""
        e = padded(embeddings[ITEM], self.width)
        if not self.side_info:
            return e, e
        side = padded(embeddings[YEAR], self.width)
        if self.genre_keys:
            genre_sum = torch.zeros_like(e)
            count = torch.zeros(e.shape[:2], device=e.device, dtype=e.dtype)
            for key in self.genre_keys:
                present = (batch.features[key].values() > 0).to(e.dtype)
                genre_sum = genre_sum + padded(JaggedTensor(embeddings[key].values() * present[:, None], lengths=embeddings[key].lengths()),
                                               self.width)
                count = count + padded(JaggedTensor(present[:, None], lengths=embeddings[key].lengths()), self.width)[:, :, 0]
            side = side + genre_sum / count.clamp(min=1.0)[:, :, None]
        return e, e + side

    def _encode(self, x: torch.Tensor, lengths: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        if self.causal:
            return self.encoder(x, lengths)
        return self.encoder.output(self.encoder(x, lengths, masked))

    # -- training ----------------------------------------------------------------------
    def forward(self, embeddings: dict[str, JaggedTensor], batch: SequenceBatch) -> tuple[torch.Tensor, ModelOutput]:
        e, x = self.inputs(embeddings, batch)
        lengths = batch.lengths
        if self.causal:
            inputs = x[:, :-1]
            hidden = self._encode(inputs, (lengths - 1).clamp(min=0))
            positions = torch.arange(inputs.shape[1], device=x.device)[None, :]
            select = positions < (lengths[:, None] - 1)
            targets = batch.items[:, 1:][select]
            target_embeddings = e[:, 1:][select]
        else:
            if self.training:
                self.mask_step += 1
            masked = cloze_mask(lengths, self.width, self.config.mask_prob, self.config.mask_seed, self.mask_step, batch.users)
            hidden = self._encode(x, lengths, masked)
            select = masked
            targets = batch.items[select]
            target_embeddings = e[select]
        h = hidden[select]
        loss = self._loss(h, targets, target_embeddings, embeddings, batch)
        return loss, ModelOutput(loss=loss.detach(), weights=batch.weights)

    def _loss(self, h: torch.Tensor, targets: torch.Tensor, target_embeddings: torch.Tensor,
              embeddings: dict[str, JaggedTensor], batch: SequenceBatch) -> torch.Tensor:
        kind = self.config.loss
        if kind == "full":
            return full_softmax_loss(h, targets, embeddings[CATALOG].values()[: self.num_items])
        if kind == "sampled":
            negative_ids = batch.features[NEGATIVE].values()
            return sampled_softmax_loss(h, target_embeddings, targets, embeddings[NEGATIVE].values(), negative_ids)
        return in_batch_softmax_loss(h, target_embeddings, targets)

    # -- scoring -----------------------------------------------------------------------
    def user_vectors(self, embeddings: dict[str, JaggedTensor], batch: SequenceBatch) -> torch.Tensor:
        """``B x D``: each row's vector ``u`` such that item ``j`` scores ``u . e_j`` as its next item."""
        _, x = self.inputs(embeddings, batch)
        lengths = batch.lengths
        rows = torch.arange(x.shape[0], device=x.device)
        if self.causal:
            hidden = self._encode(x[:, : self.config.max_len], lengths)
            return hidden[rows, (lengths - 1).clamp(min=0)]
        at = lengths.clamp(max=self.width - 1)  # the [mask] slot after the history
        masked = torch.arange(self.width, device=x.device)[None, :] == at[:, None]
        hidden = self._encode(x, lengths + 1, masked)
        return hidden[rows, at]


class SequentialRecommender(nn.Module):
    """Item ``EmbeddingCollection`` + :class:`NextItemTower`; ``forward(batch) -> (loss, ModelOutput)``.

    >>> cfg = SequenceModelConfig(max_len=4, embedding_dim=8, num_heads=2, loss="in_batch")
    >>> model = build_sequential_model("sasrec", cfg, num_items=9, device="cpu")
    >>> import pyarrow as pa
    >>> rows = pa.table({"user": pa.array([0, 1], pa.int32()), "items": pa.array([[1, 2, 3], [4, 5]], pa.list_(pa.int32())),
    ...                  "target": pa.array([0, 0], pa.int32())})
    >>> loss, out = model(batcher_for("sasrec", cfg, num_items=9)(rows, 3))
    >>> loss.shape, out.weights.tolist()
    (torch.Size([]), [1.0, 1.0, 0.0])
    """

    def __init__(self, embeddings: EmbeddingCollection, tower: NextItemTower) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.tower = tower

    def forward(self, batch: SequenceBatch) -> tuple[torch.Tensor, ModelOutput]:
        return self.tower(self.embeddings(batch.features), batch)

    def user_vectors(self, batch: SequenceBatch) -> torch.Tensor:
        """``B x D`` scoring vectors of the rows of an evaluation batch (see :meth:`NextItemTower.user_vectors`)."""
        return self.tower.user_vectors(self.embeddings(batch.features), batch)


def batch_lengths(name: str, config: SequenceModelConfig) -> tuple[int, int]:
    """``(train_len, eval_len)``: items a training row / history an evaluation row keeps for encoder ``name``.

    >>> batch_lengths("sasrec", SequenceModelConfig(max_len=50)), batch_lengths("bert4rec", SequenceModelConfig(max_len=50))
    ((51, 50), (50, 49))
    """
    if ENCODERS[name].causal:
        return config.max_len + 1, config.max_len
    return config.max_len, config.max_len - 1


def batcher_for(name: str, config: SequenceModelConfig, num_items: int, side: ItemSide | None = None,
                seed: int = 0, pretrain: bool = False, num_genres: int = 0) -> SequenceBatcher:
    """The ``make_batch`` whose KJT keys match :func:`build_sequential_model`'s tables (with ``pretrain``:
    the S3Rec pretraining model's: cloze lengths, sampled negatives, side information and the genre catalog)."""
    if pretrain:
        return SequenceBatcher(num_items=num_items, train_len=config.max_len, eval_len=config.max_len - 1, loss="sampled",
                               num_negatives=config.num_negatives, side=side, seed=seed, genre_catalog=num_genres)
    train_len, eval_len = batch_lengths(name, config)
    return SequenceBatcher(num_items=num_items, train_len=train_len, eval_len=eval_len, loss=config.loss,
                           num_negatives=config.num_negatives, side=side if config.side_info else None, seed=seed)


def build_sequential_model(name: str, config: SequenceModelConfig, num_items: int, genre_slots: int = 0,
                           side_sizes: tuple[int, int] | None = None, device: torch.device | str = "meta") -> SequentialRecommender:
    """SASRec / BERT4Rec / GRU4Rec for a catalog of ``num_items``; tables on ``device`` (``meta`` to shard them).

    With ``config.side_info``: ``genre_slots`` (most genres of one item) and ``side_sizes``
    (rows of the genre and year tables) from the dataset's metadata.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown sequential model {name!r}; known: {', '.join(ENCODERS)}")
    if config.side_info and side_sizes is None:
        raise ValueError("sequence.side_info=true needs the dataset's side information (items.parquet with genres and years)")
    slots = genre_slots if config.side_info else 0
    side = ItemSide(genre_ids=np.zeros((1, slots), np.int64), year_ids=np.zeros(1, np.int64)) if config.side_info else None
    keys = batcher_for(name, config, num_items, side).keys
    tables = build_item_tables(num_items, config.embedding_dim, keys, side_sizes if config.side_info else None)
    embeddings = EmbeddingCollection(tables=tables, device=torch.device(device))
    return SequentialRecommender(embeddings, NextItemTower(name, config, num_items, slots, config.side_info))
