"""MaskNet (Wang et al. 2021, "MaskNet: Introducing Feature-Wise Multiplication to CTR
Ranking Models by Instance-Guided Mask", https://arxiv.org/abs/2102.07619; layout as in
FuxiCTR's ``MaskNet`` / ``MaskBlock``).

Notation: ``B`` rows, ``F`` fields (the dense arch's output counts as one), field ``i`` of
width ``e_i``, ``d = sum(e_i)``. ``V_emb = x0 = [dense_arch(dense); e_1; ...; e_F]``
(``B x d``, the flat concatenation, so fields may differ in width) and
``V_hid = [LN_0(dense_arch(dense)); LN_1(e_1); ...; LN_F(e_F)]``, each field
layer-normalised on its own
(:class:`FieldLayerNorm`, one batched op for all fields).

A MaskBlock maps an input ``V_in`` (``B x k``) to ``B x o``::

    V_mask = W_2 ReLU(W_1 V_emb + b_1) + b_2      # instance-guided mask, B x k;
                                                  # W_1 has int(r * k) rows (r: reduction ratio)
    V_out  = dropout(ReLU(LN(W_3 (V_mask * V_in))))  # W_3 is k -> o, no bias

* **serial**: ``V_in`` of block 1 is ``V_hid``, of block ``j`` the output of block
  ``j - 1``; widths ``block_dims``; ``logit = Linear(V_out of the last block)``.
* **parallel**: ``num_blocks`` blocks all read ``V_in = V_hid`` (each its own mask),
  widths ``block_dim``; ``logit = OverArch([V_out_1; ...; V_out_K])``.

Every block's mask reads the raw embeddings ``V_emb``, not the normalised ones, as in
FuxiCTR.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, OverArch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config.schema import MaskNetConfig, ModelConfig
from torchrec_app.models.registry import register_model
from torchrec_app.models.sparse import SparseArch


class FieldLayerNorm(nn.Module):
    """LayerNorm of each field's columns of a ``B x d`` tensor, with its own gain and bias.

    Fields may have different widths, so the per-field mean and variance are computed
    for all fields at once with a ``d x F`` averaging matrix (two small matmuls) rather
    than a loop over fields.

    Example::

        >>> norm = FieldLayerNorm([4, 2])
        >>> x = torch.randn(3, 6)
        >>> expected = torch.cat([nn.functional.layer_norm(x[:, :4], (4,)),
        ...                       nn.functional.layer_norm(x[:, 4:], (2,))], dim=1)
        >>> torch.allclose(norm(x), expected, atol=1e-5)
        True
    """

    def __init__(self, widths: list[int], eps: float = 1e-5) -> None:
        super().__init__()
        field = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths))
        one_hot = nn.functional.one_hot(field, len(widths)).float()  # d x F
        self.register_buffer("average", one_hot / one_hot.sum(0), persistent=False)
        self.register_buffer("spread", one_hot.T.contiguous(), persistent=False)
        self.weight = nn.Parameter(torch.ones(len(field)))
        self.bias = nn.Parameter(torch.zeros(len(field)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x d`` -> ``B x d``."""
        centred = x - (x @ self.average) @ self.spread
        variance = ((centred * centred) @ self.average) @ self.spread
        return torch.addcmul(self.bias, centred * torch.rsqrt(variance + self.eps), self.weight)


class MaskBlock(nn.Module):
    """``V_out = dropout(ReLU(LN(W_3 (mask(V_emb) * V_in))))``, ``mask`` a 2-layer MLP.

    Args:
        mask_features: width of ``V_emb`` (the mask's input).
        in_features: ``k``, width of ``V_in`` (and of the mask).
        out_features: ``o``.
        reduction_ratio: the mask MLP's hidden width is ``int(ratio * k)``.
        dropout: rate after the activation.

    Example::

        >>> block = MaskBlock(mask_features=6, in_features=4, out_features=3, reduction_ratio=2.0)
        >>> block(torch.rand(5, 6), torch.rand(5, 4)).shape
        torch.Size([5, 3])
    """

    def __init__(self, mask_features: int, in_features: int, out_features: int, reduction_ratio: float = 1.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, int(in_features * reduction_ratio))
        self.mask = nn.Sequential(nn.Linear(mask_features, hidden), nn.ReLU(), nn.Linear(hidden, in_features))
        self.hidden = nn.Sequential(
            nn.Linear(in_features, out_features, bias=False), nn.LayerNorm(out_features), nn.ReLU(), nn.Dropout(dropout)
        )

    def forward(self, v_emb: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        """``B x mask_features``, ``B x k`` -> ``B x o``."""
        return self.hidden(self.mask(v_emb) * v_in)


class MaskNet(nn.Module):
    """Serial or parallel MaskNet over per-feature-width embeddings.

    Args:
        sparse_arch: embeddings (widths may differ per feature).
        num_dense: dense input features.
        dense_arch: MLP widths over the dense features (last = the dense field's width).
        over_arch: MLP widths to the logit (last = 1); used by the parallel form.
        config: structure, block widths, reduction ratio.

    Example::

        >>> from torchrec.modules.embedding_modules import EmbeddingBagCollection
        >>> from torchrec_app.config.schema import SparseConfig
        >>> from torchrec_app.models.sparse import build_tables
        >>> tables = build_tables(SparseConfig(embedding_dim=4, dims={"b": 2}), ["a", "b"], {"a": 5, "b": 5})
        >>> sparse = SparseArch(EmbeddingBagCollection(tables=tables))
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["a", "b"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 0, 1, 1]))
        >>> serial = MaskNet(sparse, 3, [8, 4], [8, 1], MaskNetConfig(block_dims=[6, 5]))
        >>> parallel = MaskNet(sparse, 3, [8, 4], [8, 1], MaskNetConfig(structure="parallel", num_blocks=2, block_dim=3))
        >>> serial(torch.rand(2, 3), kjt).shape, parallel(torch.rand(2, 3), kjt).shape
        (torch.Size([2]), torch.Size([2]))
    """

    def __init__(self, sparse_arch: SparseArch, num_dense: int, dense_arch: list[int], over_arch: list[int],
                 config: MaskNetConfig) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.dense_arch = DenseArch(num_dense, dense_arch)
        widths = [dense_arch[-1], *sparse_arch.feature_dims]
        self.input_dim = d = sum(widths)
        self.field_norm = FieldLayerNorm(widths) if config.embedding_layer_norm else nn.Identity()
        self.parallel = config.structure == "parallel"
        if self.parallel:
            self.blocks = nn.ModuleList(
                MaskBlock(d, d, config.block_dim, config.reduction_ratio, config.dropout) for _ in range(config.num_blocks)
            )
            self.head = OverArch(config.num_blocks * config.block_dim, over_arch)
        else:
            ins = [d, *config.block_dims[:-1]]
            self.blocks = nn.ModuleList(
                MaskBlock(d, k, o, config.reduction_ratio, config.dropout) for k, o in zip(ins, config.block_dims)
            )
            self.head = nn.Linear(config.block_dims[-1], 1)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``B x num_dense`` and a KJT of stride ``B`` -> logits ``B``."""
        v_emb = torch.cat([self.dense_arch(dense_features), self.sparse_arch(sparse_features)], dim=1)
        v_hid = self.field_norm(v_emb)
        if self.parallel:
            return self.head(torch.cat([block(v_emb, v_hid) for block in self.blocks], dim=1)).squeeze(-1)
        for block in self.blocks:
            v_hid = block(v_emb, v_hid)
        return self.head(v_hid).squeeze(-1)


@register_model("masknet")
def build_masknet(config: ModelConfig, sparse_arch: SparseArch, num_dense: int) -> nn.Module:
    return MaskNet(sparse_arch, num_dense, config.dense_arch, config.over_arch, config.masknet)
