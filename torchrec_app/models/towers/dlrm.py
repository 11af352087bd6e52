"""DLRM with the dot interaction (Naumov et al. 2019, https://arxiv.org/abs/1906.00091).

Composed from torchrec's own ``DenseArch`` and ``OverArch``; the sparse side is ours
(:class:`~torchrec_app.models.sparse.SparseArch`), and so is the dot interaction
(:class:`~torchrec_app.models.interaction.PairwiseDotInteraction`: the same numbers as
torchrec's ``InteractionArch``, computing only the upper triangle and writing straight into
the over arch's input). The dot interaction needs one width ``D`` for every table and for
the dense arch's output.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, OverArch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import ModelConfig
from torchrec_app.models.interaction import PairwiseDotInteraction
from torchrec_app.models.registry import register_model
from torchrec_app.models.sparse import SparseArch


class DLRM(nn.Module):
    """``logit = OverArch([d, triu(Z Z^T)])`` with ``Z = [d; e_1; ...; e_F]`` (``(F+1) x D``).

    Args:
        sparse_arch: embeddings, all of width ``D``.
        num_dense: dense input features.
        dense_arch: MLP widths over the dense features; the last must be ``D``.
        over_arch: MLP widths to the logit; the last must be 1.

    Example::

        >>> from torchrec.modules.embedding_modules import EmbeddingBagCollection
        >>> from torchrec_app.config.schema import SparseConfig
        >>> from torchrec_app.models.sparse import build_tables
        >>> tables = build_tables(SparseConfig(embedding_dim=4), ["a", "b"], {"a": 5, "b": 5})
        >>> model = DLRM(SparseArch(EmbeddingBagCollection(tables=tables)), 3, [8, 4], [8, 1])
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["a", "b"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 0, 1, 1]))
        >>> model(torch.rand(2, 3), kjt).shape
        torch.Size([2])
    """

    def __init__(self, sparse_arch: SparseArch, num_dense: int, dense_arch: list[int], over_arch: list[int]) -> None:
        super().__init__()
        dims = set(sparse_arch.feature_dims)
        if len(dims) != 1:
            raise ConfigError(f"model.name=dlrm needs one embedding width for all tables, got {sorted(dims)}; use dcnv2 for per-feature widths")
        (dim,) = dims
        if dense_arch[-1] != dim:
            raise ConfigError(f"model.dense_arch must end in the embedding dim {dim} for dlrm, got {dense_arch}")
        num_sparse = len(sparse_arch.feature_names)
        self.sparse_arch = sparse_arch
        self.dense_arch = DenseArch(num_dense, dense_arch)
        self.inter_arch = PairwiseDotInteraction(num_sparse_features=num_sparse)
        self.over_arch = OverArch(self.inter_arch.output_dim(dim), over_arch)
        self._dim = dim

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``B x num_dense`` and a KJT of stride ``B`` -> logits ``B``.

        The pooled embeddings ``B x (F * D)`` are viewed as ``B x F x D`` (no copy).
        """
        dense = self.dense_arch(dense_features)
        sparse = self.sparse_arch(sparse_features).view(dense.shape[0], -1, self._dim)
        return self.over_arch(self.inter_arch(dense, sparse)).squeeze(-1)


@register_model("dlrm")
def build_dlrm(config: ModelConfig, sparse_arch: SparseArch, num_dense: int) -> nn.Module:
    return DLRM(sparse_arch, num_dense, config.dense_arch, config.over_arch)
