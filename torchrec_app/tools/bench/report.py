"""Turn the runs of a benchmark into ``bench.json`` and ``bench.md``.

Every case was run ``repeats`` times end to end (reading Parquet) and ``repeats`` times
on in-memory batches (the ceiling), interleaved with the other cases so that drift in
machine load hits every case alike. Throughput is reported as the median with the
min-max range and the relative spread ``(max - min) / median``; pipeline efficiency is
median end-to-end / median ceiling. Quality (AUC, logloss) is the median over the
end-to-end repeats; the step-time split comes from the profiled first repeat.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from torchrec_app.tools.bench.cases import BenchCase
from torchrec_app.tools.bench.launch import RunResult
from torchrec_app.tools.bench.peer import peer_markdown
from torchrec_app.tools.bench.step_profile import CATEGORIES

QUALITY_KEYS = ("valid_auc", "valid_logloss", "test_auc", "test_logloss", "valid_auc_gap_to_oracle", "test_auc_gap_to_oracle",
                "valid_ndcg@10", "test_recall@10", "test_ndcg@10", "test_recall@20", "test_ndcg@20", "test_mrr",
                "test_oracle_ndcg@10", "best_epoch", "epochs_trained")
#: Ranking models (next-item, general): the keys of the "Ranking quality" table.
RANKING_KEYS = ("epochs_trained", "best_epoch", "valid_ndcg@10", "test_recall@10", "test_ndcg@10", "test_recall@20",
                "test_ndcg@20", "test_mrr", "test_oracle_ndcg@10")
SHORT_TYPES = {"table_wise": "TW", "row_wise": "RW", "column_wise": "CW", "data_parallel": "DP",
               "table_row_wise": "TWRW", "table_column_wise": "TWCW", "grid_shard": "GRID"}  # fmt: skip


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max and relative spread of repeated measurements.

    >>> spread([10.0, 12.0, 11.0])
    {'median': 11.0, 'min': 10.0, 'max': 12.0, 'spread': 0.18181818181818182, 'values': [10.0, 12.0, 11.0], 'n': 3}
    """
    median = statistics.median(values)
    low, high = min(values), max(values)
    return {"median": median, "min": low, "max": high, "spread": (high - low) / median if median else 0.0,
            "values": list(values), "n": len(values)}  # fmt: skip


def sharding_summary(types: dict[str, str]) -> str:
    """``{"t_C1": "table_wise", ...}`` as counts, e.g. ``"TW×19 RW×7"``.

    >>> sharding_summary({"a": "table_wise", "b": "row_wise", "c": "table_wise"})
    'TW×2 RW×1'
    """
    counts = Counter(SHORT_TYPES.get(t, t) for t in types.values())
    return " ".join(f"{k}×{v}" for k, v in counts.most_common())


def _mean_over_ranks(profile: dict[str, Any] | None) -> dict[str, Any] | None:
    ranks = [r for r in (profile or {}).get("ranks", []) if r and r.get("steps")]
    if not ranks:
        return None
    return {
        "step_ms": statistics.fmean(r["step_ms"] for r in ranks),
        "ms": {c: statistics.fmean(r["ms"][c] for r in ranks) for c in CATEGORIES},
        "ms_by_rank": [r["ms"] for r in ranks],
        "top_ops_ms": ranks[0]["top_ops_ms"],
        "steps": ranks[0]["steps"],
    }


def summarize_case(case: BenchCase, end_to_end: list[RunResult], ceiling: list[RunResult], reader: dict[str, Any] | None) -> dict[str, Any]:
    """One case's entry of ``bench.json``."""
    first = end_to_end[0].summary
    batch_size = end_to_end[0].config["train"]["batch_size"]
    e2e = spread([r.summary["samples_per_second"] for r in end_to_end])
    entry: dict[str, Any] = {
        "name": case.name, "recipe": case.recipe, "overrides": list(case.overrides), "nproc": case.nproc,
        "model": first["model"], "device": first["device"], "backend": first["backend"],
        "batch_size_per_rank": batch_size, "global_batch_size": batch_size * case.nproc,
        "steps": first["steps"], "sharding": sharding_summary(first["sharding_types"]),
        "sharding_types": first["sharding_types"],
        "samples_per_second": e2e,
        "samples_per_second_per_rank": spread([v / case.nproc for v in e2e["values"]]),
        "peak_rss_mb_per_rank": spread([r.summary["peak_rss_mb"] for r in end_to_end + ceiling]),
        "reader_samples_per_second_per_process": reader["samples_per_second"] if reader else None,
        "quality": {k: statistics.median(v) if (v := [r.summary[k] for r in end_to_end if r.summary.get(k) is not None]) else None
                    for k in QUALITY_KEYS},  # fmt: skip
        "oracle": {s: first.get(f"{s}_oracle_auc") for s in ("valid", "test")},
        "auc_vs_samples": [[s, a] for s, a in {r["samples"]: r["valid_auc"] for r in reversed(end_to_end[0].evals)}.items()][::-1],
        "step_split": _mean_over_ranks(end_to_end[0].profile),
    }
    if "peak_gpu_memory_mb" in first:
        entry["peak_gpu_memory_mb"] = spread([r.summary["peak_gpu_memory_mb"] for r in end_to_end + ceiling])
    if ceiling:
        entry["ceiling_samples_per_second"] = spread([r.summary["samples_per_second"] for r in ceiling])
        entry["pipeline_efficiency"] = e2e["median"] / entry["ceiling_samples_per_second"]["median"]
    if first.get("target_auc"):
        reached = [r.summary.get("target_reached") for r in end_to_end]
        hits = [r for r in reached if r]
        entry["target"] = {
            "auc": first["target_auc"], "reached": f"{len(hits)}/{len(reached)}",
            "samples": statistics.median(r["samples"] for r in hits) if hits else None,
            "train_seconds": statistics.median(r["train_seconds"] for r in hits) if hits else None,
        }  # fmt: skip
        entry.update(time_to_quality(end_to_end))
    entry["runs"] = [_run_record("end_to_end", i, r) for i, r in enumerate(end_to_end)] + \
                    [_run_record("ceiling", i, r) for i, r in enumerate(ceiling)]  # fmt: skip
    return entry


def time_to_quality(end_to_end: list[RunResult]) -> dict[str, Any]:
    """``time_to_auc_s`` and ``samples_to_auc`` (medians over the runs that reached the target AUC;
    None if none did), ``steps_to_auc`` and each run's values.

    ``time_to_auc_s`` is wall-clock from the first step to the end of the first validation at
    or above the target, validations included (:class:`~torchrec_app.tools.bench.callbacks.StopAtAUC`).
    """
    hits = [r.summary for r in end_to_end if r.summary.get("time_to_auc_s") is not None]

    def median(key: str) -> float | None:
        return statistics.median(h[key] for h in hits) if hits else None

    return {"time_to_auc_s": median("time_to_auc_s"), "samples_to_auc": median("samples_to_auc"),
            "steps_to_auc": median("steps_to_auc"),
            "time_to_auc_s_runs": [r.summary.get("time_to_auc_s") for r in end_to_end]}  # fmt: skip


def _run_record(kind: str, repeat: int, result: RunResult) -> dict[str, Any]:
    s = result.summary
    return {"kind": kind, "repeat": repeat, "run_dir": result.run_dir, "samples_per_second": s["samples_per_second"],
            "train_seconds": s["train_seconds"], "wall_seconds": result.wall_seconds, "samples": s["samples"],
            "peak_rss_mb": s["peak_rss_mb"], **{k: s.get(k) for k in QUALITY_KEYS}}  # fmt: skip


# ----------------------------------------------------------------------------- Markdown


def _fmt(value: float | None, digits: int = 0, pct: bool = False) -> str:
    if value is None:
        return "–"
    if pct:
        return f"{100 * value:.{digits}f}%"
    return f"{value:,.{digits}f}"


def _range(s: dict[str, Any] | None) -> str:
    if not s:
        return "–"
    return f"{s['median']:,.0f} ({s['min']:,.0f}–{s['max']:,.0f}, ±{50 * s['spread']:.0f}%)"


def time_to_quality_table(cases: list[dict[str, Any]]) -> list[str]:
    """The headline table when a target AUC was set: time and samples to it, next to samples/s (else no lines)."""
    targets = [c for c in cases if c.get("target")]
    if not targets:
        return []
    lines = [f"## Time to quality: validation AUC {targets[0]['target']['auc']}", "",
             "Wall-clock from the first step to the end of the first validation at or above the target "
             "(validations included), and global samples trained on by then; medians over the runs that reached it.", "",
             "| case | model | procs | reached | time_to_auc_s | samples_to_auc | steps | train s | samples/s | valid AUC at the end |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for c in targets:
        t = c["target"]
        lines.append(f"| {c['name']} | {c['model']} | {c['nproc']} | {t['reached']} | {_fmt(c.get('time_to_auc_s'), 1)} | "
                     f"{_fmt(c.get('samples_to_auc'))} | {_fmt(c.get('steps_to_auc'))} | {_fmt(t['train_seconds'], 1)} | "
                     f"{_fmt(c['samples_per_second']['median'])} | {_fmt(c['quality']['valid_auc'], 4)} |")  # fmt: skip
    return [*lines, ""]


def markdown_report(bench: dict[str, Any]) -> str:
    """``bench.md``: the throughput/quality table, the step-time split, and the run's facts."""
    meta, cases = bench["bench"], bench["cases"]
    lines = [*time_to_quality_table(cases), "## Throughput and quality",
        "",
        f"{meta['repeats']} repeat(s) per case, {meta['steps']} steps each, cases interleaved; "
        "samples/s = median (min–max, ±half the relative spread). Ceiling: same model and plan on in-memory "
        "batches; efficiency = end-to-end ÷ ceiling. Reader: one process reading alone.",
        "",
        "| case | model | procs | batch/proc | sharding | samples/s end-to-end | per proc | ceiling samples/s | "
        "pipeline eff. | reader samples/s/proc | peak RSS/proc MB | valid AUC | test AUC | test logloss | AUC gap to oracle |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cases:
        q = c["quality"]
        lines.append(
            f"| {c['name']} | {c['model']} | {c['nproc']} | {c['batch_size_per_rank']} | {c['sharding']} | "
            f"{_range(c['samples_per_second'])} | {_fmt(c['samples_per_second_per_rank']['median'])} | "
            f"{_range(c.get('ceiling_samples_per_second'))} | {_fmt(c.get('pipeline_efficiency'), 1, pct=True)} | "
            f"{_fmt(c['reader_samples_per_second_per_process'])} | {_fmt(c['peak_rss_mb_per_rank']['max'])} | "
            f"{_fmt(q['valid_auc'], 4)} | {_fmt(q['test_auc'], 4)} | {_fmt(q['test_logloss'], 4)} | "
            f"{_fmt(q['test_auc_gap_to_oracle'], 4)} |"
        )
    lines += ["", "## Step-time split (ms per step per process, mean over processes; profiled first repeat)", ""]
    names = {"data_wait": "data wait", "input_all_to_all": "input a2a", "embedding_lookup": "emb. lookup (+fused opt.)",
             "output_all_to_all": "output a2a", "dense_fwd_bwd": "dense fwd/bwd", "dense_all_reduce": "dense all-reduce",
             "optimizer": "dense optimizer", "other": "other"}  # fmt: skip
    lines += ["| case | step ms | " + " | ".join(names[c] for c in CATEGORIES) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in CATEGORIES) + " |"]  # fmt: skip
    for c in cases:
        split = c.get("step_split")
        if not split:
            lines.append(f"| {c['name']} | – | " + " | ".join("–" for _ in CATEGORIES) + " |")
            continue
        step = split["step_ms"]
        cells = [f"{split['ms'][k]:.1f} ({100 * split['ms'][k] / step:.0f}%)" if step else "–" for k in CATEGORIES]
        lines.append(f"| {c['name']} | {step:.1f} | " + " | ".join(cells) + " |")
    heavy = [c for c in cases if c.get("step_split")]
    if heavy:
        lines += ["", "Heaviest ops (self CPU ms per step, first process):", ""]
        for c in heavy:
            ops = ", ".join(f"{name} {ms:.1f}" for name, ms in c["step_split"]["top_ops_ms"][:6])
            lines.append(f"- **{c['name']}**: {ops}")
    ranking = [c for c in cases if c["quality"].get("test_ndcg@10") is not None]
    if ranking:
        lines += ["", "## Ranking quality (full ranking, seen items masked; median over repeats)", "",
                  "| case | epochs trained | best epoch (valid NDCG@10) | valid NDCG@10 | test Recall@10 | test NDCG@10 | "
                  "test Recall@20 | test NDCG@20 | test MRR | oracle test NDCG@10 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for c in ranking:
            q = c["quality"]
            cells = [_fmt(q[k], 2) if k in ("epochs_trained", "best_epoch") else _fmt(q[k], 4) for k in RANKING_KEYS]
            lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    lines += peer_markdown(cases)
    load = meta.get("load_average", {})
    lines += [
        "", "## Run", "",
        f"- command: `{meta['command']}`",
        f"- data: `{meta['data']}` ({', '.join(f'{k} {v:,}' for k, v in meta['split_rows'].items())} rows)",
        f"- machine: {meta['machine']}",
        f"- 1-minute load average before / after: {load.get('before', '–')} / {load.get('after', '–')}",
        f"- wall time: {meta['wall_seconds']:.0f} s; run directories under `{meta['runs_dir']}`",
        "",
    ]
    return "\n".join(lines)
