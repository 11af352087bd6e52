"""DCNv2 (Wang et al. 2021, https://arxiv.org/abs/2008.13535): a cross network beside or
before a deep network, over ``x0 = [dense_arch(dense); e_1; ...; e_F]``.

Each cross layer computes ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l`` with ``W_l`` full rank
(``CrossNet``), low rank ``U_l V_l`` (``LowRankCrossNet``) or a gated mixture of low-rank
experts (``LowRankMixtureCrossNet``), all from ``torchrec.modules.crossnet``.

* **stacked**: ``logit = OverArch(cross(x0))``.
* **parallel**: ``logit = Linear([cross(x0); deep(x0)])`` with ``deep`` the over-arch MLP
  without its last layer.

The embeddings keep their own widths ``e_i``, so ``x0`` has ``d + sum(e_i)`` entries in the
order dense-arch output, then each sparse feature in ``SparseArch.feature_names`` order;
cross-layer feature importance reads ``W`` in blocks by this layout.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, OverArch
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet, LowRankMixtureCrossNet
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config.schema import CrossConfig, ModelConfig
from torchrec_app.models.registry import register_model
from torchrec_app.models.sparse import SparseArch


def build_crossnet(config: CrossConfig, in_features: int) -> nn.Module:
    """The cross network named by ``config.kind`` over ``in_features`` inputs."""
    rank = min(config.low_rank, in_features)
    if config.kind == "full":
        return CrossNet(in_features, config.num_layers)
    if config.kind == "low_rank":
        return LowRankCrossNet(in_features, config.num_layers, low_rank=rank)
    return LowRankMixtureCrossNet(in_features, config.num_layers, num_experts=config.num_experts, low_rank=rank)


class DCNv2(nn.Module):
    """DCNv2 over per-feature-width embeddings.

    Args:
        sparse_arch: embeddings (widths may differ per feature).
        num_dense: dense input features.
        dense_arch: MLP widths over the dense features (last = ``d``).
        over_arch: MLP widths to the logit (last = 1).
        cross: the cross network's config.
        structure: ``stacked`` or ``parallel``.

    Example::

        >>> from torchrec.modules.embedding_modules import EmbeddingBagCollection
        >>> from torchrec_app.config.schema import SparseConfig
        >>> from torchrec_app.models.sparse import build_tables
        >>> tables = build_tables(SparseConfig(embedding_dim=4, dims={"b": 2}), ["a", "b"], {"a": 5, "b": 5})
        >>> model = DCNv2(SparseArch(EmbeddingBagCollection(tables=tables)), 3, [8, 4], [8, 1],
        ...               CrossConfig(kind="mixture", num_layers=2, low_rank=2), "parallel")
        >>> model.input_dim  # d + e_a + e_b
        10
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["a", "b"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 0, 1, 1]))
        >>> model(torch.rand(2, 3), kjt).shape
        torch.Size([2])
    """

    def __init__(
        self,
        sparse_arch: SparseArch,
        num_dense: int,
        dense_arch: list[int],
        over_arch: list[int],
        cross: CrossConfig,
        structure: str,
    ) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.dense_arch = DenseArch(num_dense, dense_arch)
        self.input_dim = dense_arch[-1] + sparse_arch.output_dim
        self.crossnet = build_crossnet(cross, self.input_dim)
        self.structure = structure
        if structure == "stacked":
            self.over_arch = OverArch(self.input_dim, over_arch)
        else:
            deep_sizes = over_arch[:-1] or [self.input_dim]
            self.deep_arch = MLP(self.input_dim, deep_sizes, bias=True, activation="relu")
            self.final = nn.Linear(self.input_dim + deep_sizes[-1], 1)

    def cross_input_blocks(self) -> list[tuple[str, int]]:
        """The blocks of ``x0`` in order, ``(name, width)``: the dense-arch output, then each feature
        (what ``torchrec-app explain`` reads the cross weight by).

        >>> from torchrec.modules.embedding_modules import EmbeddingBagCollection
        >>> from torchrec_app.config.schema import SparseConfig
        >>> from torchrec_app.models.sparse import build_tables
        >>> tables = build_tables(SparseConfig(embedding_dim=4, dims={"b": 2}), ["a", "b"], {"a": 5, "b": 5})
        >>> DCNv2(SparseArch(EmbeddingBagCollection(tables=tables)), 3, [8, 6], [8, 1], CrossConfig(), "stacked").cross_input_blocks()
        [('dense', 6), ('a', 4), ('b', 2)]
        """
        return [("dense", self.input_dim - self.sparse_arch.output_dim),
                *zip(self.sparse_arch.feature_names, self.sparse_arch.feature_dims)]

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``B x num_dense`` and a KJT of stride ``B`` -> logits ``B``."""
        x0 = torch.cat([self.dense_arch(dense_features), self.sparse_arch(sparse_features)], dim=1)
        if self.structure == "stacked":
            return self.over_arch(self.crossnet(x0)).squeeze(-1)
        return self.final(torch.cat([self.crossnet(x0), self.deep_arch(x0)], dim=1)).squeeze(-1)


@register_model("dcnv2")
def build_dcnv2(config: ModelConfig, sparse_arch: SparseArch, num_dense: int) -> nn.Module:
    return DCNv2(sparse_arch, num_dense, config.dense_arch, config.over_arch, config.cross, config.structure)
