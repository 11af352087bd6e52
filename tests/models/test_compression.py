"""Hashing and quotient-remainder tables (torchrec_app.models.compression.partitions)."""

from __future__ import annotations

import math

import pytest
import torch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config.compression import parse_compression
from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import SparseConfig
from torchrec_app.models.compression.partitions import partition_indices, partition_sizes, plan_features
from torchrec_app.models.sparse import SparseArch, build_feature_transform, build_tables, parameters_by_table

SPECS = ["qr:2", "qr:4", "qr:7", "qr:60", "mr:2", "mr:3", "mr:4"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("rows", [1000, 1001, 4096, 9973])
def test_every_id_gets_unique_partition_indices(spec, rows):
    sizes = partition_sizes(rows, parse_compression(spec))
    digits = partition_indices(torch.arange(rows), sizes)
    for digit, size in zip(digits, sizes):
        assert 0 <= int(digit.min()) and int(digit.max()) < size, "an index falls outside its table"
    pairs = torch.stack(digits, dim=1)
    assert torch.unique(pairs, dim=0).shape[0] == rows, "two ids share all their partition indices"


def test_hash_shares_rows():
    sizes = partition_sizes(1000, parse_compression("hash:4"))
    assert sizes == [250]
    assert torch.unique(torch.arange(1000) % sizes[0]).numel() == 250


@pytest.mark.parametrize("spec,expected_rows", [
    ("full", 10_000),
    ("hash:4", 2_500),
    ("qr:4:mult", 2_500 + 4),  # ceil(n/c) + ceil(n / ceil(n/c))
    ("qr:60:add", 167 + 60),  # ceil(10000/60) = 167, ceil(10000/167) = 60
    ("mr:2:mult", 100 + 100),  # 2 * n^(1/2)
    ("mr:4:mult", 10 * 4),  # 4 * n^(1/4)
])
def test_parameter_count_formula(spec, expected_rows):
    config = SparseConfig(embedding_dim=8, compress={"a": spec})
    report = parameters_by_table(config, ["a"], {"a": 10_000})
    ebc = EmbeddingBagCollection(tables=build_tables(config, ["a"], {"a": 10_000}))
    actual = sum(p.numel() for p in ebc.parameters())
    assert report["tables"]["t_a"]["after"]["parameters"] == actual == expected_rows * 8
    assert report["tables"]["t_a"]["before"] == {"rows": 10_000, "parameters": 80_000, "bytes": 320_000}
    assert report["total"]["ratio"] == round(80_000 / actual, 2)


def test_concat_splits_the_width_and_keeps_output_width():
    config = SparseConfig(embedding_dim=16, compress={"a": "mr:3:concat"})
    report = parameters_by_table(config, ["a", "b"], {"a": 1000, "b": 5})
    assert report["tables"]["t_a"]["after"]["parameters"] == 10 * 8 + 10 * 4 + 10 * 4
    arch = _arch(config, {"a": 1000, "b": 5})
    assert arch.feature_names == ["a", "b"] and arch.feature_dims == [16, 16]


def test_threshold_only_compresses_large_tables():
    config = SparseConfig(compress_default="qr:4", compress_min_rows=100, compress={"c": "hash:2"})
    names = [t.name for t in build_tables(config, ["a", "b", "c"], {"a": 100, "b": 101, "c": 10})]
    assert names == ["t_a", "t_b__p0", "t_b__p1", "t_c"]


@pytest.mark.parametrize("spec", ["qr:0", "qr:1", "qr:x", "qr:-3", "hash:1", "qr:4:times", "mr:1", "qr"])
def test_invalid_compression_names_the_field(spec):
    with pytest.raises(ValueError, match=r'sparse\.compress\["C3"\]'):
        SparseConfig(compress={"C3": spec})


def test_collisions_must_be_below_table_rows():
    with pytest.raises(ConfigError, match=r'sparse\.compress\["a"\].*collisions 50 must be < .* 20 rows.*t_a'):
        build_tables(SparseConfig(compress={"a": "qr:50"}), ["a"], {"a": 20})
    with pytest.raises(ConfigError, match="sparse.compress names features that do not exist"):
        build_tables(SparseConfig(compress={"zz": "qr:2"}), ["a"], {"a": 20})


def _arch(config: SparseConfig, num_embeddings: dict[str, int]) -> SparseArch:
    features = list(num_embeddings)
    tables = build_tables(config, features, num_embeddings)
    return SparseArch(EmbeddingBagCollection(tables=tables), build_feature_transform(config, features, num_embeddings))


def _random_kjt(num_embeddings: dict[str, int], batch: int, max_bag: int, seed: int = 0) -> KeyedJaggedTensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_bag + 1, (len(num_embeddings), batch), generator=g)
    values = torch.cat([torch.randint(0, n, (int(lengths[i].sum()),), generator=g) for i, n in enumerate(num_embeddings.values())])
    return KeyedJaggedTensor.from_lengths_sync(keys=list(num_embeddings), values=values, lengths=lengths.flatten())


def _per_id_reference(arch: SparseArch, kjt: KeyedJaggedTensor, config: SparseConfig) -> torch.Tensor:
    """The definition: compose each id's partition rows, then pool the bag (sum or mean)."""
    weights = {name: bag.weight for name, bag in arch.embedding_bag_collection.embedding_bags.items()}
    num_embeddings = {p.feature: p.rows for p in arch.feature_transform.plans}
    columns = []
    for plan in plan_features(config, list(num_embeddings), num_embeddings):
        bag = kjt[plan.feature]
        rows = []
        for ids in torch.split(bag.values(), bag.lengths().tolist()):
            if plan.spec.method == "full":
                vectors = weights[f"t_{plan.feature}"][ids]
            else:
                digits = partition_indices(ids, plan.sizes)
                parts = [weights[name][d] for name, d in zip(plan.table_names(), digits)]
                op = plan.spec.operation
                vectors = torch.cat(parts, 1) if op == "concat" else math.prod(parts) if op == "mult" else sum(parts)
            pooled = vectors.sum(0) if ids.numel() else torch.zeros(plan.dim)
            rows.append(pooled / max(ids.numel(), 1) if config.pooling == "mean" else pooled)
        columns.append(torch.stack(rows))
    return torch.cat(columns, dim=1)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("spec", ["qr:4:mult", "qr:4:add", "qr:4:concat", "mr:3:mult", "mr:3:add"])
def test_multi_hot_bags_compose_per_id_before_pooling(spec, pooling):
    num_embeddings = {"a": 200, "b": 30, "c": 500}
    config = SparseConfig(embedding_dim=8, pooling=pooling, compress={"a": spec, "c": spec}, compress_max_bag=4)
    torch.manual_seed(0)
    arch = _arch(config, num_embeddings)
    with torch.no_grad():  # random weights everywhere (the identity init would hide a wrong composition)
        for bag in arch.embedding_bag_collection.embedding_bags.values():
            bag.weight.normal_()
    kjt = _random_kjt(num_embeddings, batch=16, max_bag=4)
    assert int(kjt.lengths().max()) > 1, "the batch must hold multi-hot bags"
    torch.testing.assert_close(arch(kjt), _per_id_reference(arch, kjt, config), rtol=1e-5, atol=1e-5)


def test_mult_refuses_bags_larger_than_max_bag():
    num_embeddings = {"a": 200}
    arch = _arch(SparseConfig(embedding_dim=4, compress={"a": "qr:4:mult"}), num_embeddings)
    with pytest.raises(ValueError, match="feature a has a bag of .* sparse.compress_max_bag=1"):
        arch(_random_kjt(num_embeddings, batch=16, max_bag=3))


def test_init_starts_like_the_full_table():
    """mult: quotient rows start at 1, so the composed vector is the remainder row, drawn like a full table's."""
    rows = 10_000
    arch = _arch(SparseConfig(embedding_dim=8, compress={"a": "qr:4:mult"}), {"a": rows})
    bags = arch.embedding_bag_collection.embedding_bags
    assert torch.all(bags["t_a__p1"].weight == 1.0)
    bound = math.sqrt(1 / rows)
    assert bags["t_a__p0"].weight.abs().max() <= bound and bags["t_a__p0"].weight.std() > bound / 3
    add = _arch(SparseConfig(embedding_dim=8, compress={"a": "qr:4:add"}), {"a": rows})
    assert torch.all(add.embedding_bag_collection.embedding_bags["t_a__p1"].weight == 0.0)


def test_sparse_arch_keeps_feature_order_and_is_fx_traceable():
    num_embeddings = {"a": 200, "b": 30, "c": 500}
    config = SparseConfig(embedding_dim=8, dims={"b": 4}, compress={"a": "qr:4:mult", "c": "hash:4"}, compress_max_bag=2)
    arch = _arch(config, num_embeddings)
    assert arch.feature_names == ["a", "b", "c"] and arch.feature_dims == [8, 4, 8]
    kjt = _random_kjt(num_embeddings, batch=8, max_bag=2)
    traced = torch.fx.symbolic_trace(arch)
    torch.testing.assert_close(traced(kjt), arch(kjt))
