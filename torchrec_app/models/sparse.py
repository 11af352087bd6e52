"""Sparse side: one embedding table per sparse feature, each at its own width.

torchrec's ``SparseArch`` reshapes pooled embeddings to ``B x F x D`` and so requires
one width for all tables. DCNv2-style models only need the pooled embeddings side by
side, so :class:`SparseArch` here returns them concatenated at their own widths
(``B x sum(e_i)``), in feature order, and DLRM reshapes when the widths agree.

Per-feature id transforms (hashing, quotient-remainder) run on the
``KeyedJaggedTensor`` *before* the lookup, in ``feature_transform``; the tables they
feed are ordinary ``EmbeddingBagConfig`` tables, so the planner shards them like any
other. With no transform the KJT goes straight from the batch to the
``EmbeddingBagCollection``, which is what lets ``TrainPipelineSparseDist`` pipeline it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import SparseConfig
from torchrec_app.models.compression.partitions import parameters_from_tables, plan_features, table_name, tables_for
from torchrec_app.models.compression.transform import CompositionalTransform

__all__ = ["SparseArch", "build_feature_transform", "build_tables", "parameters_by_table", "pooled_in_feature_order", "table_name"]


def build_tables(
    config: SparseConfig, features: Sequence[str], num_embeddings: Mapping[str, int]
) -> list[EmbeddingBagConfig]:
    """One ``EmbeddingBagConfig`` per feature (rows from ``num_embeddings``, width from config),
    or, for a feature in ``sparse.compress``, its hashed table or its partition tables.

    >>> tables = build_tables(SparseConfig(embedding_dim=8, dims={"b": 4}), ["a", "b"], {"a": 10, "b": 20})
    >>> [(t.name, t.num_embeddings, t.embedding_dim) for t in tables]
    [('t_a', 10, 8), ('t_b', 20, 4)]
    >>> tables = build_tables(SparseConfig(embedding_dim=8, compress={"a": "qr:4", "b": "hash:4"}), ["a", "b"], {"a": 10, "b": 20})
    >>> [(t.name, t.feature_names, t.num_embeddings, t.embedding_dim) for t in tables]
    [('t_a__p0', ['a__p0'], 3, 8), ('t_a__p1', ['a__p1'], 4, 8), ('t_b', ['b'], 5, 8)]
    """
    unknown = sorted(set(config.dims) - set(features))
    if unknown:
        raise ConfigError(f"sparse.dims names features that do not exist: {unknown}; features are {list(features)}")
    missing = [f for f in features if f not in num_embeddings]
    if missing:
        raise ConfigError(f"no table size for features {missing}")
    unknown = sorted(set(config.compress) - set(features))
    if unknown:
        raise ConfigError(f"sparse.compress names features that do not exist: {unknown}; features are {list(features)}")
    pooling = PoolingType.SUM if config.pooling == "sum" else PoolingType.MEAN
    data_type = DataType[config.data_type.upper()]
    try:
        plans = plan_features(config, features, num_embeddings)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return [table for plan in plans for table in tables_for(plan, pooling=pooling, data_type=data_type)]


def build_feature_transform(
    config: SparseConfig, features: Sequence[str], num_embeddings: Mapping[str, int]
) -> CompositionalTransform | None:
    """The id transform for compressed features, or ``None`` when every table is full.

    >>> build_feature_transform(SparseConfig(), ["a"], {"a": 10}) is None
    True
    """
    plans = plan_features(config, features, num_embeddings)
    if all(p.spec.method == "full" for p in plans):
        return None
    return CompositionalTransform(plans, config.pooling)


def parameters_by_table(
    config: SparseConfig, features: Sequence[str], num_embeddings: Mapping[str, int]
) -> dict[str, Any]:
    """``{"tables": per-table before/after, "total": {"before", "after", "ratio"}}`` for a run summary."""
    tables = parameters_from_tables(build_tables(config, features, num_embeddings))
    before = sum(t["before"]["parameters"] for t in tables.values())
    after = sum(t["after"]["parameters"] for t in tables.values())
    total = {"before": before, "after": after,
             "before_bytes": sum(t["before"]["bytes"] for t in tables.values()),
             "after_bytes": sum(t["after"]["bytes"] for t in tables.values()), "ratio": round(before / max(after, 1), 2)}
    return {"tables": tables, "total": total}


@torch.fx.wrap
def pooled_in_feature_order(pooled: KeyedTensor, feature_names: list[str]) -> torch.Tensor:
    """``pooled.values()`` (``B x sum(e_i)``) with its columns in ``feature_names`` order, in at most one copy.

    A sharded collection returns its ``KeyedTensor`` in shard order. Splitting it by key and
    concatenating (``to_dict`` then ``cat``) costs 26 slices and a copy forward, a copy in
    backward for the split; FBGEMM's ``permute_pooled_embs`` does each direction in one
    kernel, and when the order already matches (one process, or a plan that keeps it) there
    is no copy at all. A leaf for torch.fx, as the train pipeline traces ``forward``.

    >>> kt = KeyedTensor(keys=["b", "a"], length_per_key=[1, 2], values=torch.tensor([[0.0, 1.0, 2.0]]))
    >>> pooled_in_feature_order(kt, ["a", "b"])
    tensor([[1., 2., 0.]])
    >>> pooled_in_feature_order(kt, ["b", "a"]) is kt.values()
    True
    """
    keys = pooled.keys()
    if keys == feature_names:
        return pooled.values()
    widths = dict(zip(keys, pooled.length_per_key()))
    position = {key: i for i, key in enumerate(keys)}
    permute = torch.tensor([position[name] for name in feature_names])
    offsets = torch.tensor([0, *pooled.length_per_key()]).cumsum(0)
    inverse_offsets = torch.tensor([0, *(widths[name] for name in feature_names)]).cumsum(0)
    return torch.ops.fbgemm.permute_pooled_embs_auto_grad(pooled.values(), offsets, permute, inverse_offsets, torch.argsort(permute))


class SparseArch(nn.Module):
    """Pooled embeddings of every sparse feature, concatenated at their own widths.

    Args:
        embedding_bag_collection: the tables (built on ``meta`` for sharding).
        feature_transform: optional :class:`~torchrec_app.models.compression.partitions.CompositionalTransform`
            mapping the batch KJT to the KJT the tables read (hashed or quotient-remainder ids)
            and composing the pooled partitions back into one ``B x D`` per feature; identity when ``None``.

    Example::

        >>> tables = build_tables(SparseConfig(embedding_dim=4, dims={"b": 2}), ["a", "b"], {"a": 5, "b": 5})
        >>> arch = SparseArch(EmbeddingBagCollection(tables=tables))
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["a", "b"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 0, 1, 1]))
        >>> arch(kjt).shape, arch.feature_dims
        (torch.Size([2, 6]), [4, 2])
    """

    def __init__(self, embedding_bag_collection: EmbeddingBagCollection, feature_transform: nn.Module | None = None) -> None:
        super().__init__()
        self.embedding_bag_collection = embedding_bag_collection
        self.feature_transform = feature_transform
        self.feature_names: list[str] = []
        self.feature_dims: list[int] = []
        if feature_transform is not None:
            self.feature_names, self.feature_dims = list(feature_transform.feature_names), list(feature_transform.feature_dims)
        else:
            for table in embedding_bag_collection.embedding_bag_configs():
                for feature in table.feature_names:
                    self.feature_names.append(feature)
                    self.feature_dims.append(table.embedding_dim)

    @property
    def output_dim(self) -> int:
        """Width of the concatenated output, ``sum(e_i)``."""
        return sum(self.feature_dims)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """Return ``B x sum(e_i)`` pooled embeddings in ``feature_names`` order.

        A sharded collection returns its ``KeyedTensor`` in shard order, not config
        order, so the columns are put back in feature order by
        :func:`pooled_in_feature_order` (a torch.fx leaf: the train pipeline traces
        this forward, which must not branch).
        """
        if self.feature_transform is not None:  # fixed at construction: static under torch.fx
            pooled = self.embedding_bag_collection(self.feature_transform(features)).to_dict()
            return torch.cat(self.feature_transform.compose(pooled, features), dim=1)
        return pooled_in_feature_order(self.embedding_bag_collection(features), self.feature_names)
