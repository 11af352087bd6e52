"""The contract between the feed data path and the feed model: :class:`FeedBatch`.

A feed impression is one (user, candidate item) shown in a session, with the user's
history as per-action sequences of past item ids and one label per objective. The data
side (:mod:`torchrec_app.data.feed`) makes these batches; the model side
(:mod:`torchrec_app.models.feed`) consumes them. Both import the names below, never spell
them.

Two KJTs, because they go to two TorchRec collections:

* ``pooled`` -> ``EmbeddingBagCollection``: one key per pooled categorical feature
  (``user``, ``category``, ``keywords`` (multi-hot), and the context categoricals
  ``ctx_*``), stride ``B``.
* ``sequences`` -> ``EmbeddingCollection`` (unpooled): the candidate item ``item``
  (length 1 per real row) and one history key per action in :data:`ACTIONS`
  (``hist_click`` ...), each up to ``max_history`` ids, **newest first**. All of these
  keys share the one item table (``t_item``), which the planner places like any other.

Fixed shapes: every batch has exactly ``B`` rows; padding rows have ``weights == 0``,
empty bags / sequences and zero labels, like the Criteo :class:`~torchrec_app.data.batch.Batch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

#: the objectives, in the order of ``FeedBatch.labels``' columns
OBJECTIVES: tuple[str, ...] = ("click", "watch", "chat", "hide", "report")
#: the history actions, each a sequence feature ``hist_<action>`` over the item table
ACTIONS: tuple[str, ...] = ("click", "watch", "chat", "hide", "report")
#: the candidate item's key in ``FeedBatch.sequences`` (shares the item table with the history)
CANDIDATE = "item"
#: the item table every sequence key reads
ITEM_TABLE = "t_item"


def history_key(action: str) -> str:
    """KJT key of one action's history sequence.

    >>> history_key("click")
    'hist_click'
    """
    return f"hist_{action}"


@dataclass
class FeedBatch(Pipelineable):
    """One rank's batch of ``B`` feed impressions.

    Attributes:
        dense_features: ``B x num_dense`` float32 context features, already transformed.
        pooled: KJT (stride ``B``) of the pooled categorical features (EBC input).
        sequences: KJT (stride ``B``) with ``item`` and ``hist_<action>`` keys (EC input).
        labels: ``B x len(OBJECTIVES)`` float32 in {0, 1}, columns in ``OBJECTIVES`` order.
        weights: ``B`` float32; 1 for a real row, 0 for padding.
        importance: ``B`` float32 loss multiplier of each row (1 unless a sampling lever
            reweights rows, e.g. a core-set selector; 0 on padding).
    """

    dense_features: torch.Tensor
    pooled: KeyedJaggedTensor
    sequences: KeyedJaggedTensor
    labels: torch.Tensor
    weights: torch.Tensor
    importance: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "FeedBatch":
        return FeedBatch(
            dense_features=self.dense_features.to(device=device, non_blocking=non_blocking),
            pooled=self.pooled.to(device=device, non_blocking=non_blocking),
            sequences=self.sequences.to(device=device, non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            weights=self.weights.to(device=device, non_blocking=non_blocking),
            importance=self.importance.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        for tensor in (self.dense_features, self.pooled, self.sequences, self.labels, self.weights, self.importance):
            tensor.record_stream(stream)

    def pin_memory(self) -> "FeedBatch":
        return FeedBatch(
            dense_features=self.dense_features.pin_memory(),
            pooled=self.pooled.pin_memory(),
            sequences=self.sequences.pin_memory(),
            labels=self.labels.pin_memory(),
            weights=self.weights.pin_memory(),
            importance=self.importance.pin_memory(),
        )

    @property
    def num_real_rows(self) -> int:
        """Rows that are data, not padding."""
        return int(self.weights.count_nonzero())
