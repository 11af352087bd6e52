"""DNN: the no-explicit-interaction baseline, an MLP over ``x0 = [dense_arch(dense); e_1; …; e_F]``.

Feature crosses are left to the MLP to learn implicitly; DCNv2's cross network and DLRM's
dot products model them explicitly. On data with planted crosses (``torchrec-app
generate``) the gap between this and DCNv2 shows what the explicit crosses buy.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, OverArch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config.schema import ModelConfig
from torchrec_app.models.registry import register_model
from torchrec_app.models.sparse import SparseArch


class DNN(nn.Module):
    """``logit = OverArch([dense_arch(dense); e_1; …; e_F])`` (``B x (d + sum(e_i))`` -> ``B``).

    Example::

        >>> from torchrec.modules.embedding_modules import EmbeddingBagCollection
        >>> from torchrec_app.config.schema import SparseConfig
        >>> from torchrec_app.models.sparse import build_tables
        >>> tables = build_tables(SparseConfig(embedding_dim=4, dims={"b": 2}), ["a", "b"], {"a": 5, "b": 5})
        >>> model = DNN(SparseArch(EmbeddingBagCollection(tables=tables)), 3, [8, 4], [8, 1])
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["a", "b"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 0, 1, 1]))
        >>> model(torch.rand(2, 3), kjt).shape
        torch.Size([2])
    """

    def __init__(self, sparse_arch: SparseArch, num_dense: int, dense_arch: list[int], over_arch: list[int]) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.dense_arch = DenseArch(num_dense, dense_arch)
        self.over_arch = OverArch(dense_arch[-1] + sparse_arch.output_dim, over_arch)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``B x num_dense`` and a KJT of stride ``B`` -> logits ``B``."""
        x0 = torch.cat([self.dense_arch(dense_features), self.sparse_arch(sparse_features)], dim=1)
        return self.over_arch(x0).squeeze(-1)


@register_model("dnn")
def build_dnn(config: ModelConfig, sparse_arch: SparseArch, num_dense: int) -> nn.Module:
    return DNN(sparse_arch, num_dense, config.dense_arch, config.over_arch)
