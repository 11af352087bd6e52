"""``--png``: memory and estimated cost per rank, stacked by table.

Top panel: memory used per rank in the device's main tier (HBM on cuda, DDR on cpu),
one segment per table plus the planner's reservation, with the capacity as a line.
Bottom panel: estimated cost per step (ms), one segment per table. The eight biggest
tables get their own colour; the rest are "other tables".
"""

from __future__ import annotations

from pathlib import Path

from torchrec_app.distributed.planning import GIB
from torchrec_app.tools.plan.report import PlanReport

NAMED_TABLES = 8


def write_chart(report: PlanReport, path: str | Path) -> Path:
    """Write the chart to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tier = report.tiers[0]
    ranks = [r.rank for r in report.ranks]
    biggest = sorted(report.tables, key=lambda t: -getattr(t, tier))[:NAMED_TABLES]
    named = [t.name for t in biggest]
    colors = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # 7 is the grey of "other"

    def series(key: str) -> dict[str, list[float]]:
        out = {name: [] for name in named + ["other tables"]}
        for r in report.ranks:
            for name in out:
                out[name].append(0.0)
            for table, entry in r.by_table.items():
                out[table if table in named else "other tables"][-1] += entry[key]
        return out

    fig, (ax_mem, ax_perf) = plt.subplots(2, 1, figsize=(max(8, 0.25 * len(ranks) + 4), 8), sharex=True)
    for ax, key, scale, label in ((ax_mem, tier, GIB, f"{tier.upper()} used (GiB)"), (ax_perf, "perf_ms", 1.0, "est. cost per step (ms)")):
        bottom = [0.0] * len(ranks)
        if key == tier:
            reserved = [report.reserved[tier] / scale] * len(ranks)
            ax.bar(ranks, reserved, color="lightgray", label="reserved (dense, inputs)")
            bottom = reserved
        for i, (name, values) in enumerate(series(key).items()):
            values = [v / scale for v in values]
            if not any(values):
                continue
            color = colors[i % len(colors)] if name != "other tables" else "darkgray"
            ax.bar(ranks, values, bottom=bottom, color=color, label=name)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_ylabel(label)
    ax_mem.axhline(report.ranks[0].capacity[tier] / GIB, color="red", linestyle="--", label="capacity")
    ax_mem.legend(fontsize=7, ncol=2, loc="upper right")
    ax_perf.set_xlabel("rank")
    spec = report.topology
    fig.suptitle(f"{report.recipe}: {spec.world_size} x {spec.device}, batch {spec.batch_size} per rank")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
