"""The dense, data-parallel part of the sequential recommenders: sequence encoders over item embeddings.

Each encoder maps the embedded items of a batch of right-padded sequences to one hidden
state per position, ``B x L x D -> B x L x D`` (``lengths``: ``B`` real items per row;
positions ``>= length`` are padding, and rows of length 0 are padding rows whose output is
never read). The item table is not here: it is an ``EmbeddingCollection`` sharded by the
planner (:mod:`torchrec_app.models.sequential.model`).

* :class:`SASRec` — Kang & McAuley 2018, https://arxiv.org/abs/1808.09781: causal
  self-attention; ``x = sqrt(D) e + p`` (learned positions), pre-LN transformer blocks with
  a ReLU feed-forward, a final LayerNorm. Position ``t`` sees items ``0..t``.
* :class:`BERT4Rec` — Sun et al. 2019, https://arxiv.org/abs/1904.06690: bidirectional
  self-attention over ``LN(e + p)`` (post-LN blocks, GELU, feed-forward ``4D``), trained by
  cloze: masked positions get a learned ``[mask]`` vector instead of their item
  (:func:`cloze_mask`); the output transform ``LN(GELU(W h + b))`` precedes the dot product
  with the item table (the paper's output bias per item is left out, so scoring needs
  nothing but the table).
* :class:`GRU4Rec` — Hidasi et al. 2016, https://arxiv.org/abs/1511.06939: a GRU over the
  (dropped-out) item embeddings, then a linear map ``H -> D``; causal by construction.

Causal encoders read a user's next item off the last real position; BERT4Rec off a
``[mask]`` appended after the history (``causal = False``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchrec_app.config.sequences import SequenceModelConfig


def padding_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """``B x L`` True at padding positions (``>= length``), except position 0, so that a padding
    row's attention has one key and stays finite (its output is never read).

    >>> padding_mask(torch.tensor([2, 0]), 3).tolist()
    [[False, False, True], [False, True, True]]
    """
    positions = torch.arange(length, device=lengths.device)[None, :]
    return (positions >= lengths[:, None]) & (positions > 0)


class SASRec(nn.Module):
    """Causal self-attention encoder. Input ``B x L x D`` item embeddings, output ``B x L x D``.

    >>> enc = SASRec(SequenceModelConfig(max_len=5, embedding_dim=8, num_heads=2))
    >>> enc(torch.randn(3, 5, 8), torch.tensor([5, 2, 0])).shape
    torch.Size([3, 5, 8])
    """

    causal = True

    def __init__(self, config: SequenceModelConfig) -> None:
        super().__init__()
        d = config.embedding_dim
        self.scale = math.sqrt(d)
        self.positions = nn.Embedding(config.max_len, d)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(d, config.num_heads, config.ffn_dim or d, config.dropout, activation="relu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.num_blocks, norm=nn.LayerNorm(d), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """``causal=False``: attend both ways (S3Rec-style pretraining of these weights)."""
        length = x.shape[1]
        pad = padding_mask(lengths, length)
        x = self.dropout(x * self.scale + self.positions.weight[:length][None])
        x = x.masked_fill(pad[:, :, None], 0.0)
        # True = may not attend (the same type as the padding mask)
        mask = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), diagonal=1) if causal else None
        return self.blocks(x, mask=mask, src_key_padding_mask=pad)


class BERT4Rec(nn.Module):
    """Bidirectional self-attention encoder with a ``[mask]`` vector. Input/output ``B x L x D``.

    ``masked`` (``B x L`` bool) marks positions whose item is replaced by ``[mask]``.
    ``output(h)`` is the transform applied before scoring against the item table.

    >>> enc = BERT4Rec(SequenceModelConfig(max_len=5, embedding_dim=8, num_heads=2))
    >>> masked = torch.zeros(3, 5, dtype=torch.bool); masked[:, 1] = True
    >>> enc.output(enc(torch.randn(3, 5, 8), torch.tensor([5, 2, 0]), masked)).shape
    torch.Size([3, 5, 8])
    """

    causal = False

    def __init__(self, config: SequenceModelConfig) -> None:
        super().__init__()
        d = config.embedding_dim
        self.mask_embedding = nn.Parameter(torch.randn(d) * 0.02)
        self.positions = nn.Embedding(config.max_len, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(d, config.num_heads, config.ffn_dim or 4 * d, config.dropout, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.blocks = nn.TransformerEncoder(layer, config.num_blocks, enable_nested_tensor=False)
        self.transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        pad = padding_mask(lengths, length)
        x = torch.where(masked[:, :, None], self.mask_embedding.to(x.dtype)[None, None, :], x)
        x = self.dropout(self.norm(x + self.positions.weight[:length][None]))
        return self.blocks(x, src_key_padding_mask=pad)

    def output(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.transform(hidden)


class GRU4Rec(nn.Module):
    """GRU encoder (causal). Input ``B x L x D``, output ``B x L x D``.

    >>> enc = GRU4Rec(SequenceModelConfig(max_len=5, embedding_dim=8, hidden_dim=6))
    >>> enc(torch.randn(3, 5, 8), torch.tensor([5, 2, 0])).shape
    torch.Size([3, 5, 8])
    """

    causal = True

    def __init__(self, config: SequenceModelConfig) -> None:
        super().__init__()
        d, hidden = config.embedding_dim, config.hidden_dim or config.embedding_dim
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(d, hidden, num_layers=config.num_blocks, batch_first=True,
                          dropout=config.dropout if config.num_blocks > 1 else 0.0)
        self.project = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.gru(self.dropout(x))
        return self.project(hidden)


ENCODERS: dict[str, type[nn.Module]] = {"sasrec": SASRec, "bert4rec": BERT4Rec, "gru4rec": GRU4Rec}


# ------------------------------------------------------------------ cloze masks

_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix of int64 values in ``[0, 2^32)`` (multipliers < 2^31: no int64 overflow)."""
    x = x & _MASK32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _MASK32
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & _MASK32
    return x ^ (x >> 16)


def uniform_hash(seed: int, step: torch.Tensor, users: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Uniform ``[0, 1)`` numbers that depend only on (seed, step, user, position), broadcast together.

    Used instead of a random generator so that masks are identical on every rank layout and
    after a resume (the step is a buffer saved with the model).

    >>> u = uniform_hash(0, torch.tensor(3), torch.arange(100)[:, None], torch.arange(50)[None, :])
    >>> u.shape, bool((u >= 0).all() and (u < 1).all()), round(float(u.mean()), 1)
    (torch.Size([100, 50]), True, 0.5)
    """
    x = _hash32(torch.as_tensor(seed, dtype=torch.int64) + 0x9E3779B9)
    x = _hash32(x ^ step.to(torch.int64))
    x = _hash32(x ^ (users.to(torch.int64) & _MASK32))
    x = _hash32(x ^ positions.to(torch.int64))
    return x.to(torch.float64) / 2.0**32


def cloze_mask(lengths: torch.Tensor, length: int, probability: float, seed: int, step: torch.Tensor,
               users: torch.Tensor) -> torch.Tensor:
    """``B x L`` positions to mask for cloze training: each real position with ``probability``,
    and the last real position of a row that drew none (every sequence trains on >= 1 item).

    >>> m = cloze_mask(torch.tensor([4, 1, 0]), 5, 0.01, 0, torch.tensor(0), torch.arange(3))
    >>> m.tolist()  # (almost) nothing drawn at 1%: the last real item is masked; padding never is
    [[False, False, False, True, False], [True, False, False, False, False], [False, False, False, False, False]]
    """
    positions = torch.arange(length, device=lengths.device)[None, :]
    real = positions < lengths[:, None]
    drawn = (uniform_hash(seed, step, users[:, None], positions) < probability) & real
    last = (positions == (lengths[:, None] - 1)) & real
    return drawn | (last & ~drawn.any(dim=1, keepdim=True))
