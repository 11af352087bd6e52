"""DLRM's dot interaction, fused: only the upper triangle, written straight into the over arch's input.

TorchRec's :class:`torchrec.models.dlrm.InteractionArch` stacks ``Z = [d; e_1; ...; e_F]``
(``B x (F+1) x D``, a copy), forms the full Gram matrix ``Z Z^T`` (``B x (F+1) x (F+1)``),
gathers its strict upper triangle and concatenates ``[d, triu]`` (another copy); autograd
then runs two ``bmm`` for the Gram matrix's backward, a scatter for the gather and slices
for both ``cat``. :class:`PairwiseDotInteraction` gives the same numbers, in the same
order, with less work:

* no ``Z``: the dense row's dots ``<d, e_f>`` are one batched matrix-vector product and
  the sparse block ``E E^T`` (``B x F x F``) one ``bmm``, so ``Z`` is never built;
* the output ``[d | <d, e_f> | <e_i, e_j>, i < j]`` (``B x (D + F + F(F-1)/2)``) is allocated
  once and each part written into its columns (``index_select`` of the triangle, no
  full-width gather then ``cat``);
* a hand-written backward uses the symmetry of the Gram matrix: the triangle's gradient
  is scattered to both ``(i, j)`` and ``(j, i)`` with one ``index_select`` (a zero column
  for the diagonal), so ``dE = S E`` is a single ``bmm`` instead of ``G E + G^T E``.

On one core (B 2048, F 26, D 64, ``torch.set_num_threads(1)``) forward + backward takes
about 6 ms instead of 23 ms for ``InteractionArch`` (``docs/BENCHMARKS.md``).
``tests/models/test_interaction.py`` checks forward and gradients against ``InteractionArch``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["PairwiseDotInteraction", "interaction_width"]


def interaction_width(dim: int, num_sparse: int, interact_dense: bool = True) -> int:
    """Columns of the interaction's output: ``D`` dense + the dots of every pair of rows.

    >>> interaction_width(64, 26)  # 64 + 26 * 27 / 2, what InteractionArch gives
    415
    >>> interaction_width(64, 26, interact_dense=False)  # 64 + 26 * 25 / 2
    389
    """
    return dim + num_sparse * (num_sparse - 1) // 2 + (num_sparse if interact_dense else 0)


class _PairwiseDot(torch.autograd.Function):
    """``[d | <d, e_f> | triu(E E^T)]``; see the module docstring for the backward."""

    @staticmethod
    def forward(ctx, dense: torch.Tensor, sparse: torch.Tensor, pair_index: torch.Tensor, mirror_index: torch.Tensor,
                interact_dense: bool) -> torch.Tensor:  # fmt: skip
        batch, num_sparse, dim = sparse.shape
        num_dense_dots = num_sparse if interact_dense else 0
        out = dense.new_empty(batch, dim + num_dense_dots + pair_index.numel())
        out[:, :dim] = dense
        if interact_dense:
            out[:, dim : dim + num_sparse] = torch.bmm(sparse, dense.unsqueeze(2)).squeeze(2)
        gram = torch.bmm(sparse, sparse.transpose(1, 2)).view(batch, num_sparse * num_sparse)
        out[:, dim + num_dense_dots :] = torch.index_select(gram, 1, pair_index)
        ctx.save_for_backward(dense, sparse, mirror_index)
        ctx.interact_dense = interact_dense
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        dense, sparse, mirror_index = ctx.saved_tensors
        dense, sparse = dense.to(grad_out.dtype), sparse.to(grad_out.dtype)  # bf16 autocast: the forward's bmm ran in bf16
        batch, num_sparse, dim = sparse.shape
        num_dense_dots = num_sparse if ctx.interact_dense else 0
        grad_pairs = nn.functional.pad(grad_out[:, dim + num_dense_dots :], (0, 1))  # last column 0: the diagonal
        symmetric = torch.index_select(grad_pairs, 1, mirror_index).view(batch, num_sparse, num_sparse)
        grad_sparse = torch.bmm(symmetric, sparse)  # d<e_i, e_j>/dE, both (i, j) and (j, i)
        grad_dense = grad_out[:, :dim]
        if ctx.interact_dense:
            grad_dense_dots = grad_out[:, dim : dim + num_sparse]
            grad_sparse.addcmul_(grad_dense_dots.unsqueeze(2), dense.unsqueeze(1))
            grad_dense = torch.baddbmm(grad_dense.unsqueeze(1), grad_dense_dots.unsqueeze(1), sparse).squeeze(1)
        return grad_dense.contiguous(), grad_sparse, None, None, None


@torch.fx.wrap
def _pairwise_dot(dense: torch.Tensor, sparse: torch.Tensor, pair_index: torch.Tensor, mirror_index: torch.Tensor,
                  interact_dense: bool) -> torch.Tensor:  # fmt: skip
    """A leaf for torch.fx (the train pipeline traces the model; it must not trace into ``apply``)."""
    return _PairwiseDot.apply(dense, sparse, pair_index, mirror_index, interact_dense)


class PairwiseDotInteraction(nn.Module):
    """DLRM's dot interaction: ``[d, triu(Z Z^T)]`` with ``Z = [d; e_1; ...; e_F]``, as TorchRec's ``InteractionArch``.

    The output's columns, in ``InteractionArch``'s order: the dense vector ``d`` (``D``),
    then the strict upper triangle of ``Z Z^T`` row by row: ``<d, e_1..F>`` (``F``), then
    ``<e_i, e_j>`` for ``i < j`` (``F(F-1)/2``). With ``interact_dense=False`` the dense
    vector is passed through but takes no part in the dots (no ``<d, e_f>`` columns).

    Args:
        num_sparse_features: ``F``, the sparse rows (one pooled embedding per feature).
        interact_dense: whether ``d`` is a row of ``Z`` (DLRM's default) or only passed through.

    Example::

        >>> from torchrec.models.dlrm import InteractionArch
        >>> dense, sparse = torch.rand(2, 4), torch.rand(2, 3, 4)
        >>> fused = PairwiseDotInteraction(num_sparse_features=3)
        >>> fused(dense, sparse).shape
        torch.Size([2, 10])
        >>> torch.allclose(fused(dense, sparse), InteractionArch(num_sparse_features=3)(dense, sparse))
        True
    """

    def __init__(self, num_sparse_features: int, interact_dense: bool = True) -> None:
        super().__init__()
        self.num_sparse_features = num_sparse_features
        self.interact_dense = interact_dense
        rows, cols = torch.triu_indices(num_sparse_features, num_sparse_features, offset=1)
        pair_index = rows * num_sparse_features + cols  # (i, j), i < j, in row-major order
        mirror_index = torch.full((num_sparse_features, num_sparse_features), pair_index.numel(), dtype=torch.long)
        mirror_index[rows, cols] = torch.arange(pair_index.numel())
        mirror_index[cols, rows] = torch.arange(pair_index.numel())  # (j, i) reads the same pair; diagonal: the zero column
        self.register_buffer("pair_index", pair_index, persistent=False)
        self.register_buffer("mirror_index", mirror_index.flatten(), persistent=False)

    def output_dim(self, dim: int) -> int:
        """Width of the output for dense and embedding width ``dim`` (the over arch's input)."""
        return interaction_width(dim, self.num_sparse_features, self.interact_dense)

    def forward(self, dense_features: torch.Tensor, sparse_features: torch.Tensor) -> torch.Tensor:
        """``d`` ``B x D`` and ``E`` ``B x F x D`` -> ``B x (D + [F] + F(F-1)/2)``."""
        return _pairwise_dot(dense_features, sparse_features, self.pair_index, self.mirror_index, self.interact_dense)
