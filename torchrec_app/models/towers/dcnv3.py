"""DCNv3 (Li et al. 2024, "DCNv3: Towards Next Generation Deep Cross Network for CTR
Prediction", https://arxiv.org/abs/2407.13349; reference code: github salmon1802/FCN and
FuxiCTR's ``DCNv3``): two cross networks side by side, no MLP.

Notation: ``B`` rows, ``F`` fields (the dense arch's output counts as one), field ``i`` of
width ``e_i``, ``d = sum(e_i)``, ``h = ceil(d / 2)``. The input is
``x0 = [dense_arch(dense); e_1; ...; e_F]`` (``B x d``), as in DCNv2. Each layer ``l`` of a
branch computes, from its current ``x`` (``B x d``)::

    H    = W_l x                                 # B x h, no bias
    mask = ReLU(LayerNorm(H))                    # self-mask (Li et al. eq. 5)
    c    = [H ; H * mask]                        # B x d (last column dropped if d is odd)
    ECN:  x <- dropout(x  * (c + b_l) + x)       # interaction order doubles per layer
    LCN:  x <- dropout(x0 * (c + b_l) + x)       # interaction order grows by one

Each branch ends in its own ``Linear(d, 1)``; the prediction averages them,
``logit = (logit_ECN + logit_LCN) / 2``, and both branch logits go to the Tri-BCE loss
(:func:`torchrec_app.models.ctr.with_aux_losses`).

**The embedding reshape.** The reference (``MultiHeadFeatureEmbedding``) splits every
field's embedding into halves and lays out ``x0`` as all first halves, then all second
halves: ``[e_1[:e_1/2]; ...; e_F[:e_F/2]; e_1[e_1/2:]; ...; e_F[e_F/2:]]``. Since
``c = [H ; H * mask]``, this pairs the two halves of every field with the *same* cross unit
``H_j``, one plain and one masked. Without it, the first half of the fields would only see
unmasked units and the last half only masked ones. ``field_halves=True`` reproduces it as
one fixed column permutation of ``x0`` (a single ``index_select``; ``W``, ``b`` and the
output layers live in the permuted space, so nothing else changes). With odd widths the
first half takes the extra column (``torch.tensor_split``), so those fields pair off by one.

Followed from the reference: ``W`` without bias, ``b`` per layer of width ``d`` initialised
``U(0, 1)``, LayerNorm over ``H`` only feeding the mask, dropout on ``x`` after the
residual, a ``Linear(d, 1)`` per branch, logits averaged. Not reproduced: multiple heads
(``num_heads``, default 1 there) and the optional BatchNorm (off by default there).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config.schema import DCNv3Config, ModelConfig
from torchrec_app.models.ctr import TowerOutput
from torchrec_app.models.registry import register_model
from torchrec_app.models.sparse import SparseArch


def field_halves_order(widths: list[int]) -> torch.Tensor:
    """Column order of ``x0`` with every field's first half first, then the second halves.

    >>> field_halves_order([4, 2])  # field a = cols 0-3, field b = cols 4-5
    tensor([0, 1, 4, 2, 3, 5])
    """
    starts = torch.tensor([0, *widths]).cumsum(0).tolist()
    first, second = [], []
    for start, width in zip(starts, widths):
        cut = start + (width + 1) // 2
        first.extend(range(start, cut))
        second.extend(range(cut, start + width))
    return torch.tensor(first + second)


class MaskedCrossNet(nn.Module):
    """One DCNv3 branch: ``num_layers`` self-masked cross layers and a logit.

    Args:
        in_features: ``d``, the width of ``x0``.
        num_layers: cross layers.
        exponential: ECN (``x * (c + b) + x``) if true, else LCN (``x0 * (c + b) + x``).
        dropout: dropout rate after each layer.
        layer_norm: mask is ``ReLU(LayerNorm(H))`` if true, else ``ReLU(H)``.

    Example::

        >>> net = MaskedCrossNet(6, num_layers=2, exponential=True, dropout=0.0)
        >>> net(torch.rand(5, 6)).shape
        torch.Size([5])
    """

    def __init__(self, in_features: int, num_layers: int, exponential: bool, dropout: float, layer_norm: bool = True) -> None:
        super().__init__()
        half = (in_features + 1) // 2
        self.in_features = in_features
        self.exponential = exponential
        self.odd = in_features % 2 == 1
        self.weights = nn.ModuleList(nn.Linear(in_features, half, bias=False) for _ in range(num_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.rand(in_features)) for _ in range(num_layers))
        self.norms = nn.ModuleList((nn.LayerNorm(half) if layer_norm else nn.Identity()) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.logit = nn.Linear(in_features, 1)
        for linear in [*self.weights, self.logit]:  # FuxiCTR's reset_parameters
            nn.init.xavier_normal_(linear.weight)
        nn.init.zeros_(self.logit.bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """``B x d`` -> logits ``B``."""
        x = x0
        for weight, bias, norm in zip(self.weights, self.biases, self.norms):
            h = weight(x)
            c = torch.cat([h, h * torch.relu(norm(h))], dim=1)
            if self.odd:
                c = c[:, : self.in_features]
            x = torch.addcmul(x, x if self.exponential else x0, c + bias)
            x = self.dropout(x)
        return self.logit(x).squeeze(-1)


class DCNv3(nn.Module):
    """DCNv3: ECN and LCN over ``x0``, logits averaged; returns the branch logits too.

    Args:
        sparse_arch: embeddings (widths may differ per feature).
        num_dense: dense input features.
        dense_arch: MLP widths over the dense features (last = the dense field's width).
        config: layers, dropout, layer norm and the field-halves reshape.

    Example::

        >>> from torchrec.modules.embedding_modules import EmbeddingBagCollection
        >>> from torchrec_app.config.schema import SparseConfig
        >>> from torchrec_app.models.sparse import build_tables
        >>> tables = build_tables(SparseConfig(embedding_dim=4, dims={"b": 2}), ["a", "b"], {"a": 5, "b": 5})
        >>> model = DCNv3(SparseArch(EmbeddingBagCollection(tables=tables)), 3, [8, 4],
        ...               DCNv3Config(num_deep_layers=2, num_shallow_layers=1))
        >>> model.input_dim  # d + e_a + e_b
        10
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["a", "b"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 0, 1, 1]))
        >>> out = model(torch.rand(2, 3), kjt)
        >>> out.logits.shape, sorted(out.aux_logits)
        (torch.Size([2]), ['ecn', 'lcn'])
    """

    has_aux_logits = True

    def __init__(self, sparse_arch: SparseArch, num_dense: int, dense_arch: list[int], config: DCNv3Config) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.dense_arch = DenseArch(num_dense, dense_arch)
        widths = [dense_arch[-1], *sparse_arch.feature_dims]
        self.input_dim = sum(widths)
        self.field_halves = config.field_halves
        self.register_buffer("order", field_halves_order(widths), persistent=False)
        self.ecn = MaskedCrossNet(self.input_dim, config.num_deep_layers, True, config.deep_dropout, config.layer_norm)
        self.lcn = MaskedCrossNet(self.input_dim, config.num_shallow_layers, False, config.shallow_dropout, config.layer_norm)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> TowerOutput:
        """``B x num_dense`` and a KJT of stride ``B`` -> ``TowerOutput(logits B, {ecn, lcn: B})``."""
        x0 = torch.cat([self.dense_arch(dense_features), self.sparse_arch(sparse_features)], dim=1)
        if self.field_halves:
            x0 = x0.index_select(1, self.order)
        deep, shallow = self.ecn(x0), self.lcn(x0)
        return TowerOutput((deep + shallow) * 0.5, {"ecn": deep, "lcn": shallow})


@register_model("dcnv3")
def build_dcnv3(config: ModelConfig, sparse_arch: SparseArch, num_dense: int) -> nn.Module:
    return DCNv3(sparse_arch, num_dense, config.dense_arch, config.dcnv3)
