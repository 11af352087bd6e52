"""The benchmark's charts, drawn from ``bench.json`` alone (so they can be redrawn later).

* ``samples_per_second.png``: per case, end-to-end and ceiling samples/s (median, with
  the min-max range as an error bar) and the pipeline efficiency above each pair.
* ``auc_vs_samples.png``: validation AUC against samples seen (first repeat of each
  case), with the oracle AUC of generated data as a dashed line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_samples_per_second(bench: dict[str, Any], path: Path) -> None:
    """Bar chart of end-to-end vs ceiling samples/s per case."""
    plt = _pyplot()
    cases = bench["cases"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(cases) + 2), 4.5))
    width = 0.38
    for offset, key, label in ((-width / 2, "samples_per_second", "end to end (Parquet)"),
                               (width / 2, "ceiling_samples_per_second", "ceiling (in-memory batches)")):  # fmt: skip
        xs, heights, errors = [], [], [[], []]
        for i, case in enumerate(cases):
            s = case.get(key)
            if s:
                xs.append(i + offset)
                heights.append(s["median"])
                errors[0].append(s["median"] - s["min"])
                errors[1].append(s["max"] - s["median"])
        if xs:
            ax.bar(xs, heights, width, yerr=errors, capsize=3, label=label)
    for i, case in enumerate(cases):
        if case.get("pipeline_efficiency") is not None:
            top = max(case["samples_per_second"]["max"], case.get("ceiling_samples_per_second", {}).get("max", 0))
            ax.annotate(f"{100 * case['pipeline_efficiency']:.0f}%", (i, top), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(cases)), [f"{c['name']}\n({c['nproc']} proc)" for c in cases], fontsize=8)
    ax.set_ylabel("samples / s (all processes)")
    ax.set_title("Training throughput (median, min–max; % = pipeline efficiency)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_auc_vs_samples(bench: dict[str, Any], path: Path) -> None:
    """Validation AUC over samples seen, one line per case."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for case in bench["cases"]:
        points = [(s, a) for s, a in case["auc_vs_samples"] if a is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=case["name"])
    oracles = {c["oracle"]["valid"] for c in bench["cases"] if c["oracle"].get("valid")}
    for oracle in oracles:
        ax.axhline(oracle, linestyle="--", color="grey", linewidth=1, label=f"oracle {oracle:.4f}")
    target = next((c["target"]["auc"] for c in bench["cases"] if c.get("target")), None)
    if target:
        ax.axhline(target, linestyle=":", color="black", linewidth=1, label=f"target {target}")
    ax.set_xlabel("training samples seen (all processes)")
    ax.set_ylabel("validation AUC")
    ax.set_title("Validation AUC vs samples (first repeat)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
