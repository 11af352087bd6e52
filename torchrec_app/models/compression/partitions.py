"""Memory-efficient tables: the hashing trick and compositional (quotient-remainder) embeddings.

A full table stores one row per id, ``n x D``. Two ways to store fewer rows
(Shi et al., *Compositional Embeddings Using Complementary Partitions for
Memory-Efficient Recommendation Systems*, KDD 2020, https://arxiv.org/abs/1909.02107):

* **hash** ``C``: id ``x`` reads row ``x mod m`` of one table, ``m = ceil(n / C)``. About ``C``
  ids share each vector, so unrelated ids become indistinguishable.
* **qr** ``C``: two tables, the remainder ``W_r`` (``m = ceil(n / C)`` rows) and the quotient
  ``W_q`` (``ceil(n / m)`` rows, about ``C``)::

      e(x) = W_r[x mod m]  (op)  W_q[x div m],   op in {mult (⊙), add (+), concat}

  ``x -> (x mod m, x div m)`` is one-to-one on ``[0, n)``, so no two ids share both rows
  and (for concat always, for mult/add generically) every id keeps its own vector, with
  ``(n/C + C) x D`` parameters instead of ``n x D``.
* **mr** ``K`` (the paper's generalised QR with ``K`` complementary partitions): the
  ``K`` mixed-radix digits of ``x`` with radices ``m_j ~ n^(1/K)``,
  ``p_j(x) = (x div (m_0 ... m_{j-1})) mod m_j``, each index a table; ``O(K n^(1/K) D)``
  parameters, still one-to-one because ``m_0 ... m_{K-1} >= n``.

**Built the TorchRec way.** The id transform (:class:`CompositionalTransform`) runs on the
batch ``KeyedJaggedTensor`` before the lookup: feature ``f`` becomes features
``f__p0 ... f__p{K-1}`` (digit ``j`` of each id) that read ordinary ``EmbeddingBagConfig``
tables ``t_f__p0 ...`` (hash keeps ``f`` and ``t_f`` with fewer rows), so the planner shards
them like any other table (TW, RW, CW, ...) and ``torchrec-app plan`` shows them. After
the pooled lookup :meth:`CompositionalTransform.compose` puts ``f`` back, width ``D``, in
its place (concat splits ``D`` over the partitions).

**Multi-hot bags.** Pooling is linear, so for a bag ``S`` with sum pooling::

    sum_{x in S} (W_r[r(x)] + W_q[q(x)]) = pooled_r + pooled_q                 (add: exact)
    sum_{x in S} [W_r[r(x)], W_q[q(x)]]  = [pooled_r, pooled_q]                (concat: exact)
    sum_{x in S} W_r[r(x)] ⊙ W_q[q(x)]  != pooled_r ⊙ pooled_q                (mult: not, if |S| > 1)

(mean pooling divides both sides by ``|S|``). For mult, the transform therefore gives
every bag *position* ``i < sparse.compress_max_bag`` its own feature ``f__p{j}__b{i}``,
holding at most one id per sample, all reading the same table ``t_f__p{j}`` (several
features sharing one table is ordinary TorchRec). A pooled one-id bag is that id's row,
so ``compose`` multiplies per id, per position, and sums the positions (empty positions
pool to 0 and add nothing): exactly ``sum_{x in S} W_r[r(x)] ⊙ W_q[q(x)]``. With one id
per sample (Criteo) that is a single position and no extra cost. (A sequence
``EmbeddingCollection`` would give the same per-id vectors, but needs its own sharder,
optimizer and planner wiring next to the bag collection; this keeps one collection.)

**Initialisation** (``weight_init_min/max``, honoured by sharded and unsharded kernels):
the composed vector starts with the full table's distribution ``U(-1/sqrt(n), 1/sqrt(n))``
(TorchRec's default for an ``n``-row table). The remainder digit ``p0`` (or the hash table)
gets that range; the other partitions start at the operation's identity, 1 for mult and
0 for add, so at step 0 QR equals hashing by the remainder and the quotient tables learn
to pull colliding ids apart (their gradient ``g ⊙ W_r[r]`` differs per id). concat gives
every part the full range. The reference implementation (``dlrm/tricks/qr_embedding_bag.py``)
draws both factors from ``U(sqrt(1/n), 1)``: all positive, so all ids start strongly
correlated (expected cosine ~0.75) and far larger than a full table's init; we avoid that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType, data_type_to_dtype

from torchrec_app.config.compression import CompressionSpec
from torchrec_app.config.schema import SparseConfig


def table_name(feature: str) -> str:
    """Name of the (full or hashed) table that embeds ``feature``."""
    return f"t_{feature}"


def partition_feature(feature: str, j: int) -> str:
    """Feature carrying digit ``j`` of ``feature``'s ids: ``C3 -> C3__p0``."""
    return f"{feature}__p{j}"


def integer_root(n: int, k: int) -> int:
    """Smallest ``m`` with ``m ** k >= n``.

    >>> integer_root(1000, 3), integer_root(1001, 3), integer_root(1, 2)
    (10, 11, 1)
    """
    m = max(1, round(n ** (1.0 / k)))
    while m**k < n:
        m += 1
    while m > 1 and (m - 1) ** k >= n:
        m -= 1
    return m


def partition_sizes(rows: int, spec: CompressionSpec) -> list[int]:
    """Rows of each table for a feature with ``rows`` ids: ``[n]``, ``[ceil(n/C)]``, or the radices.

    For qr the remainder comes first: ``[m, ceil(n/m)]`` with ``m = ceil(n/C)``. For mr the
    radices are ``~n^(1/K)`` and the last is trimmed to ``ceil(n / (m_0 ... m_{K-2}))``.

    >>> from torchrec_app.config.compression import parse_compression as p
    >>> partition_sizes(1000, p("full")), partition_sizes(1000, p("hash:4")), partition_sizes(1000, p("qr:4"))
    ([1000], [250], [250, 4])
    >>> partition_sizes(1000, p("mr:3")), partition_sizes(1100, p("mr:3"))
    ([10, 10, 10], [11, 11, 10])
    """
    if spec.method == "full":
        return [rows]
    if spec.method == "hash":
        return [math.ceil(rows / spec.collisions)]
    if spec.method == "qr":
        m = math.ceil(rows / spec.collisions)
        return [m, math.ceil(rows / m)]
    m = integer_root(rows, spec.partitions)
    radices = [m] * (spec.partitions - 1)
    return radices + [math.ceil(rows / math.prod(radices))]


def partition_dims(dim: int, spec: CompressionSpec) -> list[int]:
    """Width of each partition table: ``D`` each, except concat which splits ``D`` (first parts wider).

    concat splits in multiples of 4 when it can (FBGEMM's sharded kernels need widths
    divisible by 4), otherwise as evenly as possible.

    >>> from torchrec_app.config.compression import parse_compression as p
    >>> partition_dims(8, p("qr:4:mult")), partition_dims(16, p("mr:3:concat")), partition_dims(6, p("mr:3:concat"))
    ([8, 8], [8, 4, 4], [2, 2, 2])
    """
    k = spec.partitions
    if spec.operation != "concat" or k == 1:
        return [dim] * k
    unit = 4 if dim % 4 == 0 and dim >= 4 * k else 1
    units = dim // unit
    return [unit * (units // k + (j < units % k)) for j in range(k)]


def partition_indices(ids: torch.Tensor, radices: Sequence[int]) -> list[torch.Tensor]:
    """Mixed-radix digits of ``ids``: ``p_j = (x div (m_0 ... m_{j-1})) mod m_j`` (last: no mod).

    One-to-one on ``[0, m_0 ... m_{K-1})``; for two partitions ``[x mod m, x div m]``.

    >>> [t.tolist() for t in partition_indices(torch.tensor([0, 5, 7, 11]), [4, 3])]
    [[0, 1, 3, 3], [0, 1, 1, 2]]
    """
    digits, rest = [], ids
    for j, m in enumerate(radices):
        last = j == len(radices) - 1
        digits.append(rest if last else torch.remainder(rest, m))
        rest = torch.div(rest, m, rounding_mode="floor")
    return digits


@dataclass(frozen=True, slots=True)
class FeaturePlan:
    """How one feature is stored: its spec, the rows of each partition and their widths."""

    feature: str
    rows: int
    dim: int
    spec: CompressionSpec
    sizes: tuple[int, ...]
    dims: tuple[int, ...]
    positions: int
    """mult with K > 1: bag positions looked up one id at a time; otherwise 1."""

    @property
    def per_position(self) -> bool:
        return self.spec.partitions > 1 and self.spec.operation == "mult"

    def table_names(self) -> list[str]:
        if self.spec.partitions == 1:
            return [table_name(self.feature)]
        return [table_name(partition_feature(self.feature, j)) for j in range(self.spec.partitions)]

    def input_features(self, j: int) -> list[str]:
        """Features of the transformed KJT that read partition ``j``'s table."""
        if self.spec.partitions == 1:
            return [self.feature]
        base = partition_feature(self.feature, j)
        if self.per_position and self.positions > 1:
            return [f"{base}__b{i}" for i in range(self.positions)]
        return [base]

    def init_range(self, j: int) -> tuple[float, float]:
        """``(min, max)`` of partition ``j``'s uniform init (see the module docstring)."""
        bound = math.sqrt(1.0 / self.rows)
        if j == 0 or self.spec.operation == "concat":
            return -bound, bound
        identity = 1.0 if self.spec.operation == "mult" else 0.0
        return identity, identity


def plan_features(
    config: SparseConfig, features: Sequence[str], num_embeddings: Mapping[str, int]
) -> list[FeaturePlan]:
    """One :class:`FeaturePlan` per feature, in feature order, checked against the table sizes."""
    plans = []
    for feature in features:
        rows, dim = int(num_embeddings[feature]), config.dims.get(feature, config.embedding_dim)
        spec = config.compression_of(feature, rows)
        where = f'sparse.compress["{feature}"]' if feature in config.compress else "sparse.compress_default"
        if spec.method in ("hash", "qr") and spec.collisions >= rows:
            raise ValueError(
                f"{where}: collisions {spec.collisions} must be < the table's {rows} rows (table {table_name(feature)}); "
                "use fewer collisions or keep it full"
            )
        if spec.operation == "concat" and spec.partitions > dim:
            raise ValueError(f"{where}: concat splits the width {dim} over {spec.partitions} partitions; needs width >= partitions")
        positions = config.compress_max_bag if spec.partitions > 1 and spec.operation == "mult" else 1
        plans.append(FeaturePlan(
            feature=feature, rows=rows, dim=dim, spec=spec, sizes=tuple(partition_sizes(rows, spec)),
            dims=tuple(partition_dims(dim, spec)), positions=positions,
        ))
    return plans


class CompressedTableConfig(EmbeddingBagConfig):
    """An ``EmbeddingBagConfig`` that remembers the full table it replaces (for reports)."""

    def __init__(self, *, source_table: str, source_rows: int, compression: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_table = source_table
        self.source_rows = source_rows
        self.compression = compression


def describe(spec: CompressionSpec) -> str:
    """``full``, ``hash:4``, ``qr:4:mult``, ``mr:3:add``."""
    if spec.method == "full":
        return "full"
    if spec.method == "hash":
        return f"hash:{spec.collisions}"
    count = spec.collisions if spec.method == "qr" else spec.partitions
    return f"{spec.method}:{count}:{spec.operation}"


def tables_for(plan: FeaturePlan, pooling: PoolingType, **table_kwargs: Any) -> list[EmbeddingBagConfig]:
    """The tables of one feature: the full one, or its compressed partitions.

    ``table_kwargs`` (e.g. ``data_type``) go to every ``EmbeddingBagConfig``.
    """
    if plan.spec.method == "full":
        return [EmbeddingBagConfig(
            name=table_name(plan.feature), feature_names=[plan.feature], num_embeddings=plan.rows,
            embedding_dim=plan.dim, pooling=pooling, **table_kwargs,
        )]
    tables: list[EmbeddingBagConfig] = []
    for j, (name, rows, dim) in enumerate(zip(plan.table_names(), plan.sizes, plan.dims)):
        low, high = plan.init_range(j)
        tables.append(CompressedTableConfig(
            source_table=table_name(plan.feature), source_rows=plan.rows, compression=describe(plan.spec),
            name=name, feature_names=plan.input_features(j), num_embeddings=rows, embedding_dim=dim,
            # per-position bags hold one id: sum and mean agree, compose divides for mean itself
            pooling=PoolingType.SUM if plan.per_position else pooling,
            weight_init_min=low, weight_init_max=high, **table_kwargs,
        ))
    return tables


def parameters_from_tables(tables: Sequence[EmbeddingBagConfig]) -> dict[str, dict[str, Any]]:
    """Per original table: parameters and fp32 bytes before (full) and after compression.

    >>> from torchrec_app.config.schema import SparseConfig
    >>> from torchrec_app.models.sparse import build_tables
    >>> cfg = SparseConfig(embedding_dim=4, compress={"a": "qr:10"})
    >>> report = parameters_from_tables(build_tables(cfg, ["a", "b"], {"a": 1000, "b": 7}))
    >>> report["t_a"]["before"], report["t_a"]["after"]["parameters"], report["t_a"]["tables"]
    ({'rows': 1000, 'parameters': 4000, 'bytes': 16000}, 440, ['t_a__p0', 't_a__p1'])
    >>> report["t_b"]["compression"], report["t_b"]["ratio"]
    ('full', 1.0)
    """
    out: dict[str, dict[str, Any]] = {}
    for table in tables:
        source = getattr(table, "source_table", table.name)
        source_rows = getattr(table, "source_rows", table.num_embeddings)
        entry = out.setdefault(source, {
            "compression": getattr(table, "compression", "full"), "tables": [],
            "before": {"rows": source_rows, "parameters": 0, "bytes": 0},
            "after": {"rows": 0, "parameters": 0, "bytes": 0},
        })
        entry["tables"].append(table.name)
        entry["after"]["rows"] += table.num_embeddings
        entry["after"]["parameters"] += table.num_embeddings * table.embedding_dim
        entry["after"]["bytes"] += table.num_embeddings * table.embedding_dim * _element_size(table)
        entry.setdefault("element_size", _element_size(table))
    for entry, dim in ((e, _full_dim(tables, name)) for name, e in out.items()):
        entry["before"]["parameters"] = entry["before"]["rows"] * dim
        entry["before"]["bytes"] = entry["before"]["parameters"] * entry.pop("element_size")
        entry["ratio"] = round(entry["before"]["parameters"] / max(entry["after"]["parameters"], 1), 2)
    return out


def _element_size(table: EmbeddingBagConfig) -> int:
    """Bytes per weight of ``table`` (4 for fp32, 2 for fp16)."""
    return torch.empty(0, dtype=data_type_to_dtype(table.data_type)).element_size()


def _full_dim(tables: Sequence[EmbeddingBagConfig], source: str) -> int:
    """Width ``D`` of the feature a source table embeds (concat parts add up to it)."""
    parts = [t for t in tables if getattr(t, "source_table", t.name) == source]
    if getattr(parts[0], "compression", "full").endswith("concat"):
        return sum(t.embedding_dim for t in parts)
    return parts[0].embedding_dim
