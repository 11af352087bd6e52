"""Human-readable text of a :class:`~torchrec_app.tools.plan.report.PlanReport`.

Three parts: the tables (shape, bytes, sharding, kernel, ranks, shard shapes), the
ranks (memory used / capacity, estimated cost per step, imbalance), then TorchRec's own
planner statistics table, which it would otherwise only log at INFO.
"""

from __future__ import annotations

from torchrec_app.tools.plan.report import PlanReport, TableReport
from torchrec_app.tools.plan.units import collapse_ranks, gib


def shard_shapes(table: TableReport) -> str:
    """Shard shapes, grouped: ``8 x [5000000, 128]``; data-parallel tables are whole copies."""
    groups: dict[tuple[int, ...], int] = {}
    for shard in table.shards:
        groups[tuple(shard.sizes)] = groups.get(tuple(shard.sizes), 0) + 1
    text = " + ".join(f"{n} x [{', '.join(str(x) for x in shape)}]" for shape, n in groups.items())
    return text + (" (replicas)" if table.sharding_type == "data_parallel" else "")


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def _compression_lines(report: PlanReport) -> list[str]:
    """Before/after parameters of the compressed tables (none: no section)."""
    compressed = {name: e for name, e in report.parameters.items() if e["compression"] != "full"}
    if not compressed:
        return []
    rows = [["table", "compression", "rows before", "params before", "params after", "bytes after", "ratio", "tables"]]
    for name, e in compressed.items():
        rows.append([
            name, e["compression"], f"{e['before']['rows']:,}", f"{e['before']['parameters']:,}",
            f"{e['after']['parameters']:,}", f"{gib(e['after']['bytes'])} GiB", f"{e['ratio']:.1f}x", ", ".join(e["tables"]),
        ])
    before = sum(e["before"]["parameters"] for e in report.parameters.values())
    after = sum(e["after"]["parameters"] for e in report.parameters.values())
    return ["", "Compressed tables (docs/EMBEDDINGS.md)"] + _table(rows, right={2, 3, 4, 5, 6}) + [
        f"  all tables: {before:,} -> {after:,} parameters ({before / max(after, 1):.1f}x fewer; fp32 bytes x4)"
    ]


def format_report(report: PlanReport, with_stats: bool = True) -> str:
    """The full text report."""
    spec = report.topology
    tiers = report.tiers
    cap = report.ranks[0].capacity
    lines = [
        f"Sharding plan for recipe {report.recipe}: {spec.world_size} x {spec.device} "
        f"({spec.ranks_per_host} per host), batch {spec.batch_size} per rank",
        "Memory per rank: " + ", ".join(f"{t.upper()} {gib(cap[t])} GiB" for t in tiers)
        + f"; planner keeps {report.margin:.0%} of HBM free" * (spec.device == "cuda")
        + "; reserved on every rank for dense parameters x6 and input batches: "
        + ", ".join(f"{t.upper()} {gib(report.reserved[t])} GiB" for t in tiers),
        f"Planned in {report.planning_seconds:.1f} s ({report.num_proposals} proposals, {report.num_plans} feasible)",
        "",
        "Tables",
    ]
    rows = [["table", "rows x dim", "bytes", f"memory {'+'.join(t.upper() for t in tiers)}", "sharding", "kernel", "ranks", "shards"]]
    for t in report.tables:
        memory = "+".join(f"{gib(getattr(t, tier))}" for tier in tiers)
        rows.append([
            t.name, f"{t.rows:,} x {t.dim}", f"{gib(t.weight_bytes)} GiB", f"{memory} GiB",
            t.sharding_type, t.compute_kernel, collapse_ranks(t.ranks), shard_shapes(t),
        ])
    lines += _table(rows, right={1, 2, 3})
    lines.append(
        "  bytes: weights (rows x dim x 4 for fp32); memory: the planner's estimate over all shards "
        f"({'+'.join(t.upper() for t in tiers)}): weights, optimizer state, I/O buffers"
    )
    lines += _compression_lines(report)
    lines += ["", "Ranks"]
    rows = [["rank", "host"] + [f"{t.upper()} used / cap GiB" for t in tiers] + ["compute ms", "comms ms", "total ms", "tables"]]
    for r in report.ranks:
        mem = [
            f"{gib(r.used[t])} / {gib(r.capacity[t])} ({r.used[t] / r.capacity[t]:.0%})" if r.capacity[t] else gib(r.used[t])
            for t in tiers
        ]
        rows.append([str(r.rank), str(r.host)] + mem + [
            f"{r.perf_ms['compute']:.3f}", f"{r.perf_ms['comms']:.3f}", f"{r.perf_ms['total']:.3f}", str(len(r.by_table)),
        ])
    lines += _table(rows, right=set(range(len(rows[0]))))
    lines.append(
        "  used: the rank's shards + the reservation above; compute: forward + backward (+ prefetch) "
        "of its embedding lookups; comms: forward + backward all-to-all / reduce-scatter; ms per step, estimated"
    )
    lines += ["", "Imbalance (most vs least loaded rank)"]
    for imb in report.imbalance:
        fmt = (lambda v: f"{v:.3f} ms") if imb.metric.endswith("_ms") else (lambda v: f"{gib(v)} GiB")
        name = "estimated cost" if imb.metric == "total_ms" else imb.metric.replace("_bytes", "").upper() + " used"
        lines.append(
            f"  {name}: max {fmt(imb.max)} on rank {imb.max_rank}, min {fmt(imb.min)} on rank {imb.min_rank}, "
            f"ratio {imb.ratio:.2f}"
        )
    if with_stats and report.planner_stats:
        lines += ["", "TorchRec planner statistics"] + [f"  {line}" for line in report.planner_stats]
    return "\n".join(lines) + "\n"
