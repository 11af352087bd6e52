"""The id transform of compressed features on the batch ``KeyedJaggedTensor``, and the
composition of their pooled partitions back into one vector per feature.

The math, the partition tables and their initialisation are in
:mod:`torchrec_app.models.compression.partitions`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.models.compression.partitions import FeaturePlan, partition_feature, partition_indices


@torch.fx.wrap
def _transform_kjt(
    features: KeyedJaggedTensor, plans: list[tuple[str, list[int], int, int]], max_bag: int
) -> KeyedJaggedTensor:
    """The transformed KJT; ``plans``: (feature, radices, partitions, positions) per feature
    (partitions 0: full; positions -1: mult with one position, bags checked to hold <= 1 id).

    Opaque to torch.fx (the train pipeline traces the model around it).
    """
    by_name = features.to_dict()
    keys: list[str] = []
    values: list[torch.Tensor] = []
    lengths: list[torch.Tensor] = []
    for feature, radices, partitions, positions in plans:
        bag = by_name[feature]
        ids, bag_lengths = bag.values(), bag.lengths()
        if partitions == 0:  # full
            keys.append(feature)
            values.append(ids)
            lengths.append(bag_lengths)
            continue
        digits = [torch.remainder(ids, radices[0])] if partitions == 1 else partition_indices(ids, radices)
        if positions < 0 and ids.numel() and int(bag_lengths.max()) > -positions:  # mult, one position
            raise ValueError(
                f"feature {feature} has a bag of {int(bag_lengths.max())} ids but sparse.compress_max_bag={max_bag}: "
                "mult composes per id and needs the largest bag; raise it or use add/concat (exact for any bag)"
            )
        if positions <= 1:
            for j, digit in enumerate(digits):
                keys.append(feature if partitions == 1 else partition_feature(feature, j))
                values.append(digit)
                lengths.append(bag_lengths)
            continue
        if ids.numel() and int(bag_lengths.max()) > positions:
            raise ValueError(
                f"feature {feature} has a bag of {int(bag_lengths.max())} ids but sparse.compress_max_bag={max_bag}: "
                "mult composes per id and needs the largest bag; raise it or use add/concat (exact for any bag)"
            )
        offsets = _offsets(bag_lengths)
        sample = torch.repeat_interleave(torch.arange(bag_lengths.numel()), bag_lengths)
        position = torch.arange(ids.numel()) - offsets[sample]
        for j, digit in enumerate(digits):
            for i in range(positions):
                keys.append(f"{partition_feature(feature, j)}__b{i}")
                values.append(digit[position == i])
                lengths.append((bag_lengths > i).to(bag_lengths.dtype))
    return KeyedJaggedTensor(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths), stride=features.stride())


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sum: where each bag starts."""
    return torch.cumsum(lengths, 0) - lengths


class CompositionalTransform(nn.Module):
    """Batch KJT -> the KJT the partition tables read; pooled partitions -> one vector per feature.

    Args:
        plans: one :class:`FeaturePlan` per feature (:func:`plan_features`), in output order.
        pooling: ``sum`` or ``mean`` (for mult's per-position sum).

    Example::

        >>> from torchrec_app.config.schema import SparseConfig
        >>> from torchrec_app.models.compression.partitions import plan_features
        >>> cfg = SparseConfig(embedding_dim=4, compress={"a": "qr:2"})
        >>> transform = CompositionalTransform(plan_features(cfg, ["a", "b"], {"a": 6, "b": 3}))
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["a", "b"], values=torch.tensor([5, 4, 2, 1]), lengths=torch.tensor([1, 1, 1, 1]))
        >>> out = transform(kjt)
        >>> out.keys(), out["a__p0"].values().tolist(), out["a__p1"].values().tolist()
        (['a__p0', 'a__p1', 'b'], [2, 1], [1, 1])
    """

    def __init__(self, plans: Sequence[FeaturePlan], pooling: str = "sum") -> None:
        super().__init__()
        self.plans = list(plans)
        self.mean = pooling == "mean"
        self.feature_names = [p.feature for p in self.plans]
        self.feature_dims = [p.dim for p in self.plans]
        self.max_bag = max([p.positions for p in self.plans] + [1])
        self._kjt_plans = [
            (p.feature, list(p.sizes), 0 if p.spec.method == "full" else p.spec.partitions,
             -1 if p.per_position and p.positions == 1 else p.positions)  # -1: one position, checked
            for p in self.plans
        ]

    def forward(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Replace each compressed feature's ids by its partition indices (per bag position for mult)."""
        return _transform_kjt(features, self._kjt_plans, self.max_bag)

    def compose(self, pooled: dict[str, torch.Tensor], features: KeyedJaggedTensor) -> list[torch.Tensor]:
        """``B x D`` per original feature, in order, from the pooled partitions ``B x D_j``.

        ``features`` is the batch KJT (its bag lengths divide mult's per-position sum for mean).
        """
        out = []
        for plan in self.plans:
            if plan.spec.partitions == 1:
                out.append(pooled[plan.feature])
                continue
            op = plan.spec.operation
            parts = [[pooled[name] for name in plan.input_features(j)] for j in range(plan.spec.partitions)]
            if op == "concat":
                out.append(torch.cat([p[0] for p in parts], dim=1))
            elif op == "add":
                out.append(torch.stack([p[0] for p in parts]).sum(0))
            else:  # mult: per position (one id each), then pooled over positions
                composed = torch.stack([torch.stack(column).prod(0) for column in zip(*parts)]).sum(0)
                if self.mean and plan.positions > 1:
                    composed = composed / _bag_lengths(features, plan.feature).clamp(min=1).unsqueeze(1)
                out.append(composed)
        return out


@torch.fx.wrap
def _bag_lengths(features: KeyedJaggedTensor, feature: str) -> torch.Tensor:
    """Ids per sample of ``feature``, as floats ``B``."""
    return features[feature].lengths().to(torch.float32)
