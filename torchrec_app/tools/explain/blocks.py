"""Feature-cross importance read from a DCNv2 cross layer's weight, block by block.

A cross layer computes ``x_{l+1} = x0 * (W x_l + b) + x_l`` over
``x0 = [dense_arch(dense); e_1; ...; e_F]`` (widths ``d, e_1, ..., e_F``; see
:mod:`torchrec_app.models.towers.dcnv2`). In the first layer ``x_l = x0``, so output coordinate
``p`` of feature ``i`` is ``x0_p * (sum_q W[p, q] x0_q + b_p)``: row ``i`` of ``W``
produces feature ``i``'s output, column ``j`` reads feature ``j``'s input. Split by the
layout, the ``N x N`` matrix ``W`` (``N = d + sum e_i``) becomes blocks::

    W[i, j]  (e_i x e_j)  = how feature j's input modulates feature i's output

Two scores per block (``B x B`` matrices, ``B = F + 1`` blocks, the first "dense"):

* ``plain[i, j] = ||W[i, j]||_F``, the Frobenius norm (what the DCNv2 paper plots);
* ``normalized[i, j] = ||W[i, j]||_F / sqrt(e_i e_j)``, the RMS entry of the block. With
  unequal widths the plain norm grows with ``sqrt(e_i e_j)`` for width alone; the RMS
  measures importance per dimension.

A cross ``{i, j}`` (``i != j``) pools both orientations, ``W[i, j]`` and ``W[j, i]``::

    plain_ij = sqrt(||W_ij||^2 + ||W_ji||^2),   normalized_ij = plain_ij / sqrt(2 e_i e_j)

A feature pools its row band and column band (every block ``(i, j)`` and ``(j, i)``, the
self block ``(i, i)`` once, ``2B - 1`` blocks)::

    plain_i      = sqrt(sum_j ||W_ij||^2 + sum_{j != i} ||W_ji||^2)     (Frobenius norm of the bands)
    normalized_i = sqrt(mean over those 2B - 1 blocks of RMS_block^2)   (quadratic mean of block RMS)

so each partner counts once whatever its width, and a ``W`` of all ones gives every
feature ``normalized_i = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DENSE = "dense"


@dataclass(frozen=True, slots=True)
class InputLayout:
    """The blocks of ``x0``: names and widths in order, the dense-arch output first.

    >>> layout = InputLayout.of(dense_width=4, features=["C1", "C2"], widths=[8, 2])
    >>> layout.names, layout.widths, layout.offsets, layout.total
    (('dense', 'C1', 'C2'), (4, 8, 2), (0, 4, 12), 14)
    """

    names: tuple[str, ...]
    widths: tuple[int, ...]

    @classmethod
    def of(cls, dense_width: int, features: list[str], widths: list[int]) -> "InputLayout":
        """Layout ``[dense (dense_width); features[0] (widths[0]); ...]``."""
        if len(features) != len(widths):
            raise ValueError(f"{len(features)} feature names but {len(widths)} widths")
        if min([dense_width, *widths]) <= 0:
            raise ValueError(f"block widths must be > 0: dense {dense_width}, features {dict(zip(features, widths))}")
        return cls((DENSE, *features), (dense_width, *widths))

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start coordinate of each block in ``x0``."""
        starts, at = [], 0
        for width in self.widths:
            starts.append(at)
            at += width
        return tuple(starts)

    @property
    def total(self) -> int:
        """``N = d + sum e_i``."""
        return sum(self.widths)

    def slice(self, name: str) -> slice:
        """Coordinates of block ``name`` in ``x0``."""
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i] + self.widths[i])


def split_blocks(weight: torch.Tensor, layout: InputLayout) -> list[list[torch.Tensor]]:
    """``W`` (``N x N``) -> ``blocks[i][j] = W[i, j]`` of shape ``e_i x e_j``.

    >>> layout = InputLayout.of(1, ["a", "b"], [2, 3])
    >>> blocks = split_blocks(torch.arange(36.0).reshape(6, 6), layout)
    >>> blocks[1][2].shape, blocks[1][2].tolist()  # rows of a (output), columns of b (input)
    (torch.Size([2, 3]), [[9.0, 10.0, 11.0], [15.0, 16.0, 17.0]])
    """
    n = layout.total
    if tuple(weight.shape) != (n, n):
        raise ValueError(
            f"cross weight is {tuple(weight.shape)} but the input layout {dict(zip(layout.names, layout.widths))} "
            f"has N = {n}; the checkpoint and the widths do not belong to the same model"
        )
    rows = torch.split(weight, list(layout.widths), dim=0)
    return [list(torch.split(row, list(layout.widths), dim=1)) for row in rows]


@dataclass(frozen=True, slots=True)
class BlockScores:
    """Per-block scores, ``B x B`` (row ``i``: output feature, column ``j``: input feature)."""

    layout: InputLayout
    plain: torch.Tensor
    """``||W_ij||_F``."""
    normalized: torch.Tensor
    """``||W_ij||_F / sqrt(e_i e_j)``."""


def block_scores(weight: torch.Tensor, layout: InputLayout) -> BlockScores:
    """Both scores of every block of ``W``.

    A ``W`` of all ones: every block's RMS is 1, its Frobenius norm ``sqrt(e_i e_j)``.

    >>> layout = InputLayout.of(1, ["narrow", "wide"], [1, 4])
    >>> scores = block_scores(torch.ones(6, 6), layout)
    >>> scores.normalized.tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    >>> scores.plain.tolist()
    [[1.0, 1.0, 2.0], [1.0, 1.0, 2.0], [2.0, 2.0, 4.0]]
    """
    blocks = split_blocks(weight.detach().double(), layout)
    plain = torch.tensor([[float(torch.linalg.norm(b)) for b in row] for row in blocks], dtype=torch.float64)
    widths = torch.tensor(layout.widths, dtype=torch.float64)
    return BlockScores(layout, plain, plain / torch.sqrt(torch.outer(widths, widths)))


@dataclass(frozen=True, slots=True)
class Ranked:
    """One row of a ranking: a feature (``names`` of one) or a cross (two), both scores."""

    names: tuple[str, ...]
    plain: float
    normalized: float


def rank_crosses(scores: BlockScores) -> list[Ranked]:
    """Every cross ``{i, j}``, ``i != j``, both orientations pooled, by normalized score (best first).

    >>> w = torch.zeros(4, 4); w[1, 3] = 6.0  # output of a (coordinate 1) reads b (coordinates 2-3)
    >>> top = rank_crosses(block_scores(w, InputLayout.of(1, ["a", "b"], [1, 2])))[0]
    >>> top.names, top.plain, round(top.normalized, 3)  # 6 / sqrt(2 * 1 * 2)
    (('a', 'b'), 6.0, 3.0)
    """
    names, widths = scores.layout.names, scores.layout.widths
    squares = scores.plain**2
    ranked = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            both = float(squares[i, j] + squares[j, i])
            ranked.append(Ranked((names[i], names[j]), both**0.5, (both / (2 * widths[i] * widths[j])) ** 0.5))
    return sorted(ranked, key=lambda r: (-r.normalized, -r.plain))


def rank_features(scores: BlockScores) -> list[Ranked]:
    """Every block (``dense`` included) by normalized importance of its row and column bands.

    >>> w = torch.ones(5, 5)
    >>> [(r.names[0], r.normalized, round(r.plain, 3)) for r in rank_features(block_scores(w, InputLayout.of(1, ["a", "b"], [1, 3])))]
    [('b', 1.0, 4.583), ('dense', 1.0, 3.0), ('a', 1.0, 3.0)]
    """
    plain_sq, rms_sq = scores.plain**2, scores.normalized**2
    ranked = []
    for i, name in enumerate(scores.layout.names):
        plain = float(plain_sq[i].sum() + plain_sq[:, i].sum() - plain_sq[i, i]) ** 0.5
        count = 2 * len(scores.layout.names) - 1
        normalized = (float(rms_sq[i].sum() + rms_sq[:, i].sum() - rms_sq[i, i]) / count) ** 0.5
        ranked.append(Ranked((name,), plain, normalized))
    return sorted(ranked, key=lambda r: (-r.normalized, -r.plain))
