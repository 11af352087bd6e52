"""The data of a sharding plan: per table where it went, per rank what it costs.

Built from the planner's chosen ``ShardingOption`` s (:class:`~torchrec_app.tools.plan.planner_run.PlannerRun`):
each shard carries its rank, a storage estimate (HBM / DDR bytes: weights, optimizer
state, I/O buffers) and a perf estimate in milliseconds per step (forward / backward
compute and communication, prefetch). Memory on a rank is its shards plus what the
planner reserves on every rank for dense parameters and input batches, as TorchRec's
own stats count it. :func:`report_to_dict` is the ``--json`` form; its ``plan`` entry is
the ``ShardingPlan`` that ``torchrec-app train --plan FILE`` loads.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from torchrec.distributed.planner.types import Perf, ShardingOption, Storage, Topology

from torchrec_app.distributed.planning import GIB, build_topology, plan_to_dict
from torchrec_app.models.compression.partitions import parameters_from_tables
from torchrec_app.tools.plan.planner_run import PlannerRun

REPORT_FORMAT = "torchrec_app.plan_report"
REPORT_VERSION = 1
#: TorchRec's bandwidth unit is bytes per millisecond.
GBPS = GIB / 1000.0


@dataclass(kw_only=True, slots=True)
class TopologySpec:
    """The cluster to plan for (it need not exist: planning runs on a laptop)."""

    world_size: int
    """Number of ranks (GPUs, or CPU processes)."""
    device: str = "cuda"
    """cuda or cpu: decides the sharding types and kernels the planner may use."""
    local_world_size: int = 0
    """Ranks per host (0: all on one host)."""
    hbm_gb: float = 0.0
    """HBM per GPU in GiB (0: TorchRec's default, 32)."""
    ddr_gb: float = 0.0
    """Host memory per rank in GiB (0: TorchRec's default, 128). On cpu, tables live here."""
    intra_host_gbps: float = 0.0
    """Bandwidth between ranks of a host in GiB/s (0: TorchRec's default, 600, NVLink-class)."""
    inter_host_gbps: float = 0.0
    """Bandwidth between hosts in GiB/s per rank (0: TorchRec's default, 12.5)."""
    batch_size: int = 2048
    """Rows per rank per step."""

    def __post_init__(self) -> None:
        if self.device not in ("cuda", "cpu"):
            raise ValueError(f"device must be cuda or cpu, got {self.device!r}")
        if self.world_size < 1 or self.batch_size < 1:
            raise ValueError(f"world_size and batch_size must be >= 1, got {self.world_size} and {self.batch_size}")
        if self.local_world_size < 0 or (self.local_world_size and self.world_size % self.local_world_size):
            raise ValueError(
                f"local_world_size ({self.local_world_size}) must divide world_size ({self.world_size})"
            )
        for name in ("hbm_gb", "ddr_gb", "intra_host_gbps", "inter_host_gbps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def ranks_per_host(self) -> int:
        return self.local_world_size or self.world_size

    def build(self) -> Topology:
        """The TorchRec ``Topology`` (via :func:`~torchrec_app.distributed.planning.build_topology`)."""
        bandwidths = {}
        if self.intra_host_gbps:
            bandwidths["intra_host_bw"] = self.intra_host_gbps * GBPS
        if self.inter_host_gbps:
            bandwidths["inter_host_bw"] = self.inter_host_gbps * GBPS
        return build_topology(self.world_size, self.device, self.ranks_per_host, self.hbm_gb, self.ddr_gb, **bandwidths)


@dataclass(kw_only=True, slots=True)
class ShardReport:
    rank: int
    offsets: list[int]
    sizes: list[int]
    hbm: int
    ddr: int
    perf_ms: float


@dataclass(kw_only=True, slots=True)
class TableReport:
    """One table: its shape, how it is sharded and what its shards cost."""

    name: str
    rows: int
    dim: int
    weight_bytes: int
    """rows x dim x element size."""
    sharding_type: str
    compute_kernel: str
    shards: list[ShardReport]
    hbm: int = 0
    """Estimated HBM over all shards: weights, optimizer state, I/O buffers."""
    ddr: int = 0
    perf_ms: float = 0.0
    """Sum of the shards' estimated cost per step."""

    @property
    def ranks(self) -> list[int]:
        return [s.rank for s in self.shards]


@dataclass(kw_only=True, slots=True)
class RankReport:
    """One rank: memory used against capacity, estimated cost per step, and by which table."""

    rank: int
    host: int
    capacity: dict[str, int]
    """Device memory per tier (hbm, ddr)."""
    used: dict[str, int]
    """Shards + reserved (dense parameters, input batches), per tier."""
    tables_bytes: dict[str, int]
    """Shards only, per tier."""
    perf_ms: dict[str, float]
    """fwd_compute, fwd_comms, bwd_compute, bwd_comms, prefetch_compute, compute, comms, total."""
    by_table: dict[str, dict[str, float]] = field(default_factory=dict)
    """table -> {"hbm", "ddr", "perf_ms"} of its shards on this rank."""


@dataclass(kw_only=True, slots=True)
class Imbalance:
    """Most vs least loaded rank for one metric."""

    metric: str
    max_rank: int
    max: float
    min_rank: int
    min: float

    @property
    def ratio(self) -> float:
        return self.max / self.min if self.min else float("inf") if self.max else 1.0


@dataclass(kw_only=True, slots=True)
class PlanReport:
    recipe: str
    topology: TopologySpec
    tables: list[TableReport]
    ranks: list[RankReport]
    imbalance: list[Imbalance]
    reserved: dict[str, int]
    """Per rank: dense parameters (x6) + input batches (KJT), per tier."""
    margin: float
    """Fraction of HBM the planner keeps free."""
    planner_stats: list[str]
    planning_seconds: float
    num_proposals: int
    num_plans: int
    plan: dict[str, Any]
    """The ShardingPlan as :func:`~torchrec_app.distributed.planning.plan_to_dict`."""
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per original table: compression and parameters/bytes before and after
    (:func:`~torchrec_app.models.compression.partitions.parameters_from_tables`)."""

    @property
    def tiers(self) -> tuple[str, ...]:
        """Memory tiers that matter on this device: HBM and DDR on cuda, DDR on cpu."""
        return ("hbm", "ddr") if self.topology.device == "cuda" else ("ddr",)


def _perf_dict(perf: Perf) -> dict[str, float]:
    return {
        "fwd_compute": perf.fwd_compute,
        "fwd_comms": perf.fwd_comms,
        "bwd_compute": perf.bwd_compute,
        "bwd_comms": perf.bwd_comms,
        "prefetch_compute": perf.prefetch_compute,
        "compute": perf.fwd_compute + perf.bwd_compute + perf.prefetch_compute,
        "comms": perf.fwd_comms + perf.bwd_comms,
        "total": perf.total,
    }


def _table_report(option: ShardingOption) -> TableReport:
    rows, dim = option.tensor.shape
    shards = [
        ShardReport(
            rank=int(s.rank), offsets=list(s.offset), sizes=list(s.size),
            hbm=s.storage.hbm if s.storage else 0, ddr=s.storage.ddr if s.storage else 0,
            perf_ms=s.perf.total if s.perf else 0.0,
        )
        for s in option.shards
    ]
    return TableReport(
        name=option.name, rows=int(rows), dim=int(dim),
        weight_bytes=int(rows) * int(dim) * option.tensor.element_size(),
        sharding_type=option.sharding_type, compute_kernel=option.compute_kernel, shards=shards,
        hbm=sum(s.hbm for s in shards), ddr=sum(s.ddr for s in shards), perf_ms=sum(s.perf_ms for s in shards),
    )


def imbalance(ranks: list[RankReport], metric: str, values: list[float]) -> Imbalance:
    """Most and least loaded rank by ``values`` (one per rank, in ``ranks`` order).

    >>> r = [RankReport(rank=i, host=0, capacity={}, used={}, tables_bytes={}, perf_ms={}) for i in range(3)]
    >>> imb = imbalance(r, "total_ms", [2.0, 4.0, 3.0])
    >>> (imb.max_rank, imb.min_rank, imb.ratio)
    (1, 0, 2.0)
    """
    hi = max(range(len(values)), key=lambda i: values[i])
    lo = min(range(len(values)), key=lambda i: values[i])
    return Imbalance(metric=metric, max_rank=ranks[hi].rank, max=values[hi], min_rank=ranks[lo].rank, min=values[lo])


def build_report(run: PlannerRun, spec: TopologySpec, recipe: str, margin: float) -> PlanReport:
    """Per-table and per-rank view of a successful planner run."""
    assert run.plan is not None, "build_report needs a plan; a failed run goes to plan_fit.explain_no_fit"
    tables = sorted((_table_report(o) for o in run.options), key=lambda t: _natural_key(t.name))
    reserved = {"hbm": run.reserved.hbm, "ddr": run.reserved.ddr}
    ranks = []
    for device in run.topology.devices:
        storage, perf, by_table = Storage(0, 0), Perf(0, 0, 0, 0), {}
        for option in run.options:
            for shard in option.shards:
                if shard.rank != device.rank:
                    continue
                shard_storage = shard.storage or Storage(0, 0)
                shard_perf = shard.perf or Perf(0, 0, 0, 0)
                storage, perf = storage + shard_storage, perf + shard_perf
                entry = by_table.setdefault(option.name, {"hbm": 0, "ddr": 0, "perf_ms": 0.0})
                entry["hbm"] += shard_storage.hbm
                entry["ddr"] += shard_storage.ddr
                entry["perf_ms"] += shard_perf.total
        tables_bytes = {"hbm": storage.hbm, "ddr": storage.ddr}
        ranks.append(RankReport(
            rank=device.rank, host=device.rank // spec.ranks_per_host,
            capacity={"hbm": device.storage.hbm, "ddr": device.storage.ddr},
            used={tier: tables_bytes[tier] + reserved[tier] for tier in ("hbm", "ddr")},
            tables_bytes=tables_bytes, perf_ms=_perf_dict(perf), by_table=by_table,
        ))
    report = PlanReport(
        recipe=recipe, topology=spec, tables=tables, ranks=ranks, imbalance=[], reserved=reserved, margin=margin,
        planner_stats=[_strip_border(line) for line in run.stats_table], planning_seconds=run.seconds,
        num_proposals=run.num_proposals, num_plans=run.num_plans, plan=plan_to_dict(run.plan),
        parameters=_parameters(run.options),
    )
    report.imbalance = [imbalance(ranks, "total_ms", [r.perf_ms["total"] for r in ranks])] + [
        imbalance(ranks, f"{tier}_bytes", [r.used[tier] for r in ranks]) for tier in report.tiers
        if any(r.used[tier] for r in ranks)
    ]
    return report


def _parameters(options: list[ShardingOption]) -> dict[str, dict[str, Any]]:
    """Before/after parameters per original table, from the planned modules' table configs."""
    configs = {}
    for option in options:
        embedding_configs = getattr(option.module[1], "embedding_bag_configs", None)
        for config in embedding_configs() if embedding_configs else []:
            configs.setdefault(config.name, config)
    tables = sorted(configs.values(), key=lambda t: _natural_key(t.name))
    return parameters_from_tables(tables)


def _natural_key(name: str) -> tuple:
    """Sort t_C2 before t_C10.

    >>> sorted(["t_C10", "t_C2", "t_I1"], key=_natural_key)
    ['t_C2', 't_C10', 't_I1']
    """
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _strip_border(line: str) -> str:
    """TorchRec's stats lines are framed in '#' and padded to its widest row; keep the content.

    >>> _strip_border("#   --- Planner Statistics ---      #")
    '--- Planner Statistics ---'
    >>> _strip_border("# ------------------------ #")
    '----------------------------------------'
    """
    line = line.rstrip()
    if line.startswith("#") and line.endswith("#") and len(line) > 1:
        line = line[1:-1]
    content = line.strip()
    if content and set(content) <= {"#", "-"}:
        return "-" * 40
    if content.startswith("---"):
        return content
    return line.rstrip()[1:] if line.startswith(" ") else line.rstrip()


def report_to_dict(report: PlanReport) -> dict[str, Any]:
    """JSON-able report; ``["plan"]`` is loadable by ``torchrec-app train --plan FILE``."""
    data = dataclasses.asdict(report)
    data["tiers"] = list(report.tiers)
    for table, entry in zip(report.tables, data["tables"]):
        entry["ranks"] = table.ranks
    for imb, entry in zip(report.imbalance, data["imbalance"]):
        entry["ratio"] = imb.ratio
    return {"format": REPORT_FORMAT, "version": REPORT_VERSION, "fits": True, **data}
