"""EASE: the closed-form item-item model (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

With ``X`` the ``U x N`` binary user-item matrix of the training split, EASE is the item-item
weight matrix ``B`` (``N x N``) solving

    min_B ||X - X B||_F^2 + lambda ||B||_F^2    subject to  diag(B) = 0,

whose solution (Lagrange multipliers for the constraint) is

    P = (X^T X + lambda I)^-1,        B = I - P diag(1 / diag(P))    (so B_ij = -P_ij / P_jj, B_jj = 0).

A user's scores are ``x_u B`` (``1 x N``): every item scored by the items the user has.

**Memory.** ``X^T X`` and its inverse are ``N x N`` float64 (``8 N^2`` bytes each; the
solve is done in float64 because ``P`` of a sparse Gram matrix is ill-conditioned at
small lambda and float32 loses the small entries of ``B``), and ``B`` is kept in float32
(``4 N^2``): the solve needs ``20 N^2`` bytes, refused with the figure above
``ease.memory_gb`` (ML-1M's 3.7k items: 0.27 GB; 100k items: 200 GB). One process: EASE
has no parameters to shard or gradients to average, so it runs on rank 0 only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.general import EaseConfig

BYTES_PER_ITEM_PAIR = 8 + 8 + 4
"""float64 Gram matrix + float64 inverse + float32 B, per entry of an ``N x N`` matrix."""


def ease_memory_bytes(num_items: int) -> int:
    """Bytes the EASE solve needs for ``num_items`` items (``20 N^2``).

    >>> ease_memory_bytes(1000), round(ease_memory_bytes(3706) / 1e9, 2)
    (20000000, 0.27)
    """
    return BYTES_PER_ITEM_PAIR * num_items * num_items


def check_ease_memory(num_items: int, config: EaseConfig) -> int:
    """The solve's bytes, or ``ConfigError`` with the figure when it exceeds ``ease.memory_gb``.

    >>> check_ease_memory(100_000, EaseConfig(memory_gb=8.0))
    Traceback (most recent call last):
    ...
    torchrec_app.config.errors.ConfigError: EASE on 100,000 items needs 200.0 GB (items^2 x 8 bytes for the float64 Gram matrix, the same for its inverse, items^2 x 4 for the float32 B) but ease.memory_gb=8.0; raise ease.memory_gb if the machine has it, or reduce the catalog (sequence_preprocess.min_item_interactions)
    """
    need = ease_memory_bytes(num_items)
    if need > config.memory_gb * 1e9:
        raise ConfigError(
            f"EASE on {num_items:,} items needs {need / 1e9:.1f} GB (items^2 x 8 bytes for the float64 Gram matrix, the same "
            f"for its inverse, items^2 x 4 for the float32 B) but ease.memory_gb={config.memory_gb}; raise ease.memory_gb if "
            "the machine has it, or reduce the catalog (sequence_preprocess.min_item_interactions)"
        )
    return need


def item_gram(items: list[np.ndarray], num_columns: int, users_per_chunk: int = 1024) -> torch.Tensor:
    """``X^T X`` (``num_columns x num_columns`` float64) of the binary user-item matrix whose row ``u``
    holds ``items[u]``, accumulated over chunks of users (never the whole ``U x N`` matrix at once).

    >>> item_gram([np.array([1, 2]), np.array([2])], 3).tolist()
    [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 2.0]]
    """
    gram = torch.zeros(num_columns, num_columns, dtype=torch.float64)
    for first in range(0, len(items), users_per_chunk):
        chunk = items[first : first + users_per_chunk]
        x = torch.zeros(len(chunk), num_columns, dtype=torch.float64)
        rows = np.repeat(np.arange(len(chunk)), [len(i) for i in chunk])
        x[torch.from_numpy(rows), torch.from_numpy(np.concatenate(chunk).astype(np.int64))] = 1.0
        gram.addmm_(x.t(), x)
    return gram


def solve_ease(x: torch.Tensor | None, l2: float, gram: torch.Tensor | None = None) -> torch.Tensor:
    """``B`` (``N x N`` float64) of EASE for the ``U x N`` matrix ``x`` (or its Gram matrix ``X^T X``), see the module docstring.

    >>> b = solve_ease(torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), l2=1.0)
    >>> b.diagonal().abs().max().item(), b.dtype
    (0.0, torch.float64)
    """
    if gram is None:
        x = x.to(torch.float64)
        gram = x.t() @ x
    else:
        gram = gram.to(torch.float64).clone()
    gram.diagonal().add_(l2)
    # X^T X + lambda I is symmetric positive definite: Cholesky, then the inverse from the factor
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    del gram
    b = p / (-p.diagonal())[None, :]
    b.diagonal().zero_()
    return b


class EaseModel(nn.Module):
    """Scores of EASE: ``x_u B`` for a batch of users (``B x N`` from their binary item rows).

    Args:
        weights: ``(N + 1) x (N + 1)`` float32 ``B`` over item ids ``0..N`` (id 0, padding, has none).

    Example::

        model = EaseModel(solve_ease(None, l2=200.0, gram=item_gram(train_items, num_items + 1)).float())
        scores = model.score(batch)        # B x (N + 1)
    """

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weights", weights.float())

    def score(self, batch) -> torch.Tensor:
        """``B x (N + 1)`` scores of a :class:`~torchrec_app.data.user_items.UserItemsBatch` (its input items)."""
        n = self.weights.shape[0]
        x = torch.zeros(batch.items.shape[0], n, device=self.weights.device)
        x.scatter_(1, batch.items.clamp(min=0), 1.0)
        x[:, 0] = 0.0
        scores = x @ self.weights
        scores[:, 0] = -torch.inf
        return scores


def fit_ease(config, metadata, data_dir: str) -> EaseModel:
    """The EASE model of a user-item dataset's train split (``ease`` section; memory checked first)."""
    from torchrec_app.data.user_items import read_split

    num_columns = int(metadata.num_embeddings["item"])
    check_ease_memory(num_columns - 1, config.ease)
    _, items, _ = read_split(data_dir, "train")
    b = solve_ease(None, config.ease.l2, gram=item_gram(items, num_columns))
    return EaseModel(b.float())
