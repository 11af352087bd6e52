"""History encoders of the feed model: one user-history sequence (jagged) -> one vector per row.

Every encoder reads the output of the item ``EmbeddingCollection`` for one action's history
as a :class:`~torchrec.sparse.jagged_tensor.JaggedTensor` — ``values`` ``N x D`` (all rows'
items back to back, **newest first** within a row), ``lengths`` ``B`` — plus the candidate
item's embedding ``B x D``, and returns ``B x H``. Rows are independent: a row's output depends
on its own history and candidate only, never on the other rows' lengths or on padding; an
empty history (length 0, and every padding row) gives a defined output (zeros, or for the
transformer a function of the candidate alone).

* :class:`MeanEncoder` — mean of the history's item embeddings, summed straight from the
  jagged values (``index_add`` by row): no padding is materialised.
* :class:`RecurrentEncoder` — LSTM (the baseline) or GRU over the history **oldest to newest**,
  read at each row's last real step. The padded ``B x L x D`` input (``L``: the batch's longest
  history) is packed (``torch.nn.utils.rnn.pack_padded_sequence``), so padding steps are never computed.
* :class:`TargetAttentionEncoder` — DIN (Zhou et al. 2018, https://arxiv.org/abs/1706.06978):
  an MLP scores each history item ``h`` against the candidate ``c`` from ``[h, c, h - c, h * c]``;
  the output is the score-weighted sum of ``h``. Scores are computed on the jagged values
  (``N`` rows, no padding) and normalised by a per-row softmax (segment max / sum by
  ``scatter_reduce`` / ``index_add``; the paper keeps raw weights, which grow with the history's
  length and destabilise training at length 50).
* :class:`TransformerHistoryEncoder` — a small pre-LN transformer over ``[c; h_1 .. h_L]`` (learned
  recency positions, a key-padding mask), read at the candidate's position: candidate-aware
  self-attention. Attention needs a rectangle, so this one pads, to the batch's longest history.

Padding to the batch's longest history (RNN, transformer) reads that length on the host: one
device sync per action and step on GPU (``pack_padded_sequence`` needs CPU lengths anyway).

:data:`HISTORY_ENCODERS` maps ``model.feed.encoder`` to the class; ``none`` (no history at all,
the baseline that shows what history is worth) has no encoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import JaggedTensor

from torchrec_app.config.feed import FeedModelConfig


def row_ids(lengths: torch.Tensor) -> torch.Tensor:
    """``N``: the row of each jagged value.

    >>> row_ids(torch.tensor([2, 0, 1])).tolist()
    [0, 0, 2]
    """
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)


def positions_in_row(lengths: torch.Tensor) -> torch.Tensor:
    """``N``: each value's position within its row (0 = first = newest).

    >>> positions_in_row(torch.tensor([2, 0, 3])).tolist()
    [0, 1, 0, 1, 2]
    """
    offsets = torch.cumsum(lengths, 0) - lengths
    return torch.arange(int(lengths.sum()), device=lengths.device) - torch.repeat_interleave(offsets, lengths)


def truncate(history: JaggedTensor, max_length: int) -> JaggedTensor:
    """The first (newest) ``max_length`` items of every row.

    >>> jt = truncate(JaggedTensor(values=torch.arange(5.0)[:, None], lengths=torch.tensor([3, 0, 2])), 2)
    >>> jt.lengths().tolist(), jt.values()[:, 0].tolist()
    ([2, 0, 2], [0.0, 1.0, 3.0, 4.0])
    """
    lengths = history.lengths()
    keep = positions_in_row(lengths) < max_length
    return JaggedTensor(values=history.values()[keep], lengths=lengths.clamp(max=max_length))


def padded_oldest_first(history: JaggedTensor, max_length: int) -> torch.Tensor:
    """``B x max_length x D``: each row's items oldest first from position 0 (the newest at
    ``length - 1``), zeros after. ``history`` holds at most ``max_length`` items per row.

    >>> jt = JaggedTensor(values=torch.tensor([[1.0], [2.0], [3.0]]), lengths=torch.tensor([2, 1]))
    >>> padded_oldest_first(jt, 3)[..., 0].tolist()
    [[2.0, 1.0, 0.0], [3.0, 0.0, 0.0]]
    """
    values, lengths = history.values(), history.lengths()
    rows = row_ids(lengths)
    steps = lengths[rows] - 1 - positions_in_row(lengths)
    out = values.new_zeros(lengths.numel(), max_length, values.shape[1])
    out[rows, steps] = values
    return out


def _projection(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)


class MeanEncoder(nn.Module):
    """Mean of the history's embeddings (zeros for an empty history), projected to ``out_dim``.

    Example::

        >>> enc = MeanEncoder(FeedModelConfig(item_dim=2), out_dim=2)
        >>> history = JaggedTensor(values=torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), lengths=torch.tensor([2, 0, 1]))
        >>> enc(torch.zeros(3, 2), history).tolist()
        [[2.0, 3.0], [0.0, 0.0], [5.0, 6.0]]
    """

    def __init__(self, config: FeedModelConfig, out_dim: int) -> None:
        super().__init__()
        self.projection = _projection(config.item_dim, out_dim)

    def forward(self, candidate: torch.Tensor, history: JaggedTensor) -> torch.Tensor:
        """``candidate`` ``B x D`` (unused), ``history`` jagged ``N x D`` -> ``B x out_dim``."""
        values, lengths = history.values(), history.lengths()
        sums = values.new_zeros(lengths.numel(), values.shape[1]).index_add(0, row_ids(lengths), values)
        return self.projection(sums / lengths.clamp(min=1).to(values.dtype)[:, None])


class RecurrentEncoder(nn.Module):
    """LSTM or GRU over the history oldest to newest; the last layer's hidden state at each
    row's last real step (zeros for an empty history). Hidden width = ``out_dim``.

    Example::

        >>> enc = RecurrentEncoder(FeedModelConfig(item_dim=4), out_dim=3, cell="lstm")
        >>> history = JaggedTensor(values=torch.randn(5, 4), lengths=torch.tensor([3, 0, 2]))
        >>> out = enc(torch.zeros(3, 4), history)
        >>> out.shape, out[1].abs().sum().item()
        (torch.Size([3, 3]), 0.0)
    """

    def __init__(self, config: FeedModelConfig, out_dim: int, cell: str) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(config.item_dim, out_dim, num_layers=config.num_layers, batch_first=True,
                       dropout=config.dropout if config.num_layers > 1 else 0.0)  # fmt: skip

    def forward(self, candidate: torch.Tensor, history: JaggedTensor) -> torch.Tensor:
        """``candidate`` ``B x D`` (unused), ``history`` jagged ``N x D`` -> ``B x out_dim``."""
        lengths = history.lengths()
        longest = int(lengths.max()) if lengths.numel() else 0  # pad to this batch's longest history, not max_history
        steps = padded_oldest_first(history, max(longest, 1))
        # pack_padded_sequence needs lengths >= 1 on the CPU; empty rows read one zero step, then are zeroed
        packed = pack_padded_sequence(steps, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n); GRU: h_n
        return hidden[-1] * (lengths > 0).to(hidden.dtype)[:, None]


class TargetAttentionEncoder(nn.Module):
    """DIN-style target attention: ``sum_j softmax_j(a([h_j, c, h_j - c, h_j * c])) h_j`` (zeros for
    an empty history), projected to ``out_dim``; computed on the jagged values, no padding.

    Example::

        >>> enc = TargetAttentionEncoder(FeedModelConfig(item_dim=4, attention_dims=[8]), out_dim=4)
        >>> history = JaggedTensor(values=torch.randn(3, 4), lengths=torch.tensor([0, 1, 2]))
        >>> out = enc(torch.randn(3, 4), history)
        >>> out.shape, out[0].abs().sum().item()
        (torch.Size([3, 4]), 0.0)
    """

    def __init__(self, config: FeedModelConfig, out_dim: int) -> None:
        super().__init__()
        d = config.item_dim
        self.attention = nn.Sequential(MLP(4 * d, config.attention_dims, activation="relu"), nn.Linear(config.attention_dims[-1], 1))
        self.projection = _projection(d, out_dim)

    def forward(self, candidate: torch.Tensor, history: JaggedTensor) -> torch.Tensor:
        """``candidate`` ``B x D``, ``history`` jagged ``N x D`` -> ``B x out_dim``."""
        values, lengths = history.values(), history.lengths()
        rows = row_ids(lengths)
        target = candidate[rows]  # N x D
        scores = self.attention(torch.cat([values, target, values - target, values * target], dim=1)).squeeze(-1)  # N
        batch = lengths.numel()
        row_max = scores.new_full((batch,), -1e30).scatter_reduce(0, rows, scores, "amax", include_self=True)
        weights = torch.exp(scores - row_max[rows].detach())
        total = scores.new_zeros(batch).index_add(0, rows, weights)
        pooled = values.new_zeros(batch, values.shape[1]).index_add(0, rows, weights[:, None] * values)
        return self.projection(pooled / total.clamp(min=1e-12)[:, None])


class TransformerHistoryEncoder(nn.Module):
    """A small transformer over ``[c; h_1 .. h_L]`` read at the candidate's position ``0``.

    Inputs get learned position embeddings (0 = the candidate, ``1 + p`` = the ``p``-th newest
    item); padding keys are masked, so a row with an empty history attends to its candidate only.

    Example::

        >>> enc = TransformerHistoryEncoder(FeedModelConfig(item_dim=4, num_heads=2, max_history=3), out_dim=4)
        >>> history = JaggedTensor(values=torch.randn(4, 4), lengths=torch.tensor([3, 0, 1]))
        >>> enc(torch.randn(3, 4), history).shape
        torch.Size([3, 4])
    """

    def __init__(self, config: FeedModelConfig, out_dim: int) -> None:
        super().__init__()
        d = config.item_dim
        self.max_history = config.max_history
        self.positions = nn.Embedding(config.max_history + 1, d)
        layer = nn.TransformerEncoderLayer(d, config.num_heads, 2 * d, config.dropout, activation="relu", batch_first=True,
                                           norm_first=True)  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.projection = _projection(d, out_dim)

    def forward(self, candidate: torch.Tensor, history: JaggedTensor) -> torch.Tensor:
        """``candidate`` ``B x D``, ``history`` jagged ``N x D`` (newest first) -> ``B x out_dim``."""
        lengths = history.lengths().clamp(max=self.max_history)
        longest = int(lengths.max()) if lengths.numel() else 0  # pad to this batch's longest history, not max_history
        items = torch.ops.fbgemm.jagged_to_padded_dense(history.values(), [history.offsets()], [longest], 0.0)
        x = torch.cat([candidate[:, None, :], items], dim=1) + self.positions.weight[None, : longest + 1]
        positions = torch.arange(longest + 1, device=lengths.device)[None, :]
        padding = positions > lengths[:, None]  # True: not a key (position 0, the candidate, always is)
        return self.projection(self.blocks(x, src_key_padding_mask=padding)[:, 0])


def build_history_encoder(config: FeedModelConfig, out_dim: int) -> nn.Module:
    """The encoder ``config.encoder`` (not ``none``) with output width ``out_dim``."""
    if config.encoder in ("lstm", "gru"):
        return RecurrentEncoder(config, out_dim, config.encoder)
    return HISTORY_ENCODERS[config.encoder](config, out_dim)


#: ``model.feed.encoder`` -> encoder class (``none``: no history encoder)
HISTORY_ENCODERS: dict[str, type[nn.Module]] = {
    "mean": MeanEncoder,
    "lstm": RecurrentEncoder,
    "gru": RecurrentEncoder,
    "din": TargetAttentionEncoder,
    "transformer": TransformerHistoryEncoder,
}
