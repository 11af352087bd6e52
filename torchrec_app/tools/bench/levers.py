"""The home-feed ranker's training-time levers, each measured as time to target (``bench --suite feed``).

    torchrec-app bench --suite feed --rows 100000 --steps 150 --evals 6 --repeats 2 --out runs/bench-feed

The question each lever answers: how much sooner (training seconds) does the model reach the
quality of the baseline, and what does it cost in quality? Every run is a real 2-process
training through the torchx ``train`` component (:func:`~torchrec_app.tools.bench.launch.run_training`),
the same recipe (``bench_feed``: LSTM histories, shared-bottom towers, static weights) with one
lever changed:

* **sampling** (a dataset variant, preprocessed once from the same raw impressions, same
  full-rate valid split): negative downsampling (the model's ``any`` head corrects its
  probabilities, :mod:`torchrec_app.models.feed.correction`), loss-based core-set with ``1/p``
  importance weights, user subsampling;
* **forward**: the history encoder (mean, GRU, DIN target attention, transformer vs LSTM);
* **backward**: the objective weighting (uncertainty, DWA vs static; :mod:`torchrec_app.models.feed.weighting`);
* **reference** runs for the issue's bars: no history encoder at all, single-task models;
* **combination**: after the single levers, the best lever of each combinable group (the
  fastest to target among those that reach it on every seed and lose no objective more than
  the tolerance) applied together.

Targets and time to target (:mod:`~torchrec_app.tools.bench.time_to_target`): objective ``k``'s
target is the baseline's best validation AUC of ``k``, averaged over seeds; a run's time to
target is the training time of its first validation where every objective is within the
tolerance of its target. Runs are not stopped there (all run ``--steps``), so the curves are
complete and the time to target can be read for any tolerance afterwards: the report gives
it at ``--target-tolerance`` (0.002, the issue's bar) and at :data:`LOOSE_TOLERANCE`.

Writes ``bench.json`` (every run's history, targets, per-lever summary), ``bench.md`` (the
tables of docs/BENCHMARKS.md) and ``auc_vs_wallclock.png`` into ``--out``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torchrec_app.config import AppConfig, ConfigError, resolve_config
from torchrec_app.tools.bench.cases import BenchCase
from torchrec_app.tools.bench.time_to_target import best_aucs, first_reaching, targets_from_runs

#: a second, looser closeness reported beside the bar (small validation splits make AUC noisy)
LOOSE_TOLERANCE = 0.01
#: a lever override replaced at run time by ``suggest-dims --budget-fraction F`` on the baseline's first seed
SUGGEST_DIMS = "@suggest-dims"


@dataclass(frozen=True, slots=True)
class Lever:
    """One configuration of the suite: the baseline recipe with ``overrides``, trained on dataset variant ``data``."""

    name: str
    group: str
    """baseline, sampling, forward, backward, size, reference (not combined) or combination."""
    overrides: tuple[str, ...] = ()
    """``section.key=value`` overrides; ``@suggest-dims:F`` stands for the ``sparse.dims=...`` that
    ``suggest-dims --budget-fraction F`` proposes from the baseline's first seed (trained first)."""
    data: str = "full"
    """The dataset variant (a key of :attr:`LeverSuite.data_variants`)."""


@dataclass(frozen=True, slots=True)
class LeverSuite:
    """A baseline, levers, and how to make the data they train on."""

    description: str
    recipe: str
    generate: tuple[str, ...]
    """``generate_feed.*`` overrides of the raw impressions (rows come from ``--rows``)."""
    data_variants: dict[str, tuple[str, ...]]
    """Variant name -> ``feed_preprocess.*`` overrides (``full``: none)."""
    levers: tuple[Lever, ...]
    """The first is the baseline."""
    combine: tuple[str, ...] = ("sampling", "forward", "backward", "size")
    """Groups whose best lever joins the combination."""


#: rarer objectives made less rare than the generator's default, so a 10k-row validation split scores them
_FEED_BENCH_RATES = ('generate_feed.base_rates={"click": 0.10, "watch": 0.05, "chat": 0.02, "hide": 0.02, "report": 0.01}',)
_FEED_VARIANTS = {
    "full": (),
    "negatives_0.25": ("feed_preprocess.negative_keep_rate=0.25",),
    "coreset_0.5": ("feed_preprocess.coreset_rate=0.5",),
    "users_0.5": ("feed_preprocess.user_keep_rate=0.5",),
}
_FEED_LEVERS = (
    Lever("baseline", "baseline"),
    Lever("neg_downsample", "sampling", data="negatives_0.25"),
    Lever("coreset", "sampling", data="coreset_0.5"),
    Lever("enc_mean", "forward", ("model.feed.encoder=mean",)),
    Lever("enc_din", "forward", ("model.feed.encoder=din",)),
    Lever("enc_transformer", "forward", ("model.feed.encoder=transformer",)),
    Lever("w_uncertainty", "backward", ("model.feed.weighting=uncertainty",)),
    Lever("w_dwa", "backward", ("model.feed.weighting=dwa", "model.feed.dwa_period=25")),
    Lever("dims_suggested", "size", (f"{SUGGEST_DIMS}:0.5",)),
    Lever("no_history", "reference", ("model.feed.encoder=none",)),
    Lever("single_chat", "reference", ('model.feed.objectives=["chat"]',)),
)

LEVER_SUITES: dict[str, LeverSuite] = {
    "feed": LeverSuite(
        description="docs/BENCHMARKS.md 'Home-feed ranker: training-time levers': each lever alone and the best "
        "combination vs the LSTM / static / full-data baseline, time to every objective's target AUC "
        "(sized for ~25 min on a loaded 2-core machine; feed_full adds the remaining levers)",
        recipe="bench_feed",
        generate=_FEED_BENCH_RATES,
        data_variants=_FEED_VARIANTS,
        levers=_FEED_LEVERS,
    ),
    "feed_full": LeverSuite(
        description="feed plus user subsampling, the GRU encoder and a second rare single-task reference",
        recipe="bench_feed",
        generate=_FEED_BENCH_RATES,
        data_variants=_FEED_VARIANTS,
        levers=(
            *_FEED_LEVERS,
            Lever("user_subsample", "sampling", data="users_0.5"),
            Lever("enc_gru", "forward", ("model.feed.encoder=gru",)),
            Lever("single_report", "reference", ('model.feed.objectives=["report"]',)),
        ),
    ),
    "feed_size": LeverSuite(
        description="the model-size lever alone: explain / suggest-dims on the baseline, retrained with the widths",
        recipe="bench_feed",
        generate=_FEED_BENCH_RATES,
        data_variants={"full": ()},
        levers=(Lever("baseline", "baseline"), Lever("dims_suggested", "size", (f"{SUGGEST_DIMS}:0.5",))),
    ),
    "feed_tiny": LeverSuite(
        description="seconds-long smoke run of the levers suite itself (tests)",
        recipe="bench_feed",
        generate=(),
        data_variants={"full": (), "negatives_0.5": ("feed_preprocess.negative_keep_rate=0.5",)},
        levers=(
            Lever("baseline", "baseline"),
            Lever("neg_downsample", "sampling", data="negatives_0.5"),
            Lever("enc_mean", "forward", ("model.feed.encoder=mean",)),
            Lever("w_uncertainty", "backward", ("model.feed.weighting=uncertainty",)),
        ),
    ),
}


# ----------------------------------------------------------------------------- data


def prepare_variants(suite: LeverSuite, root: Path, rows: int, seed: int, log=print) -> dict[str, Path]:
    """Generate the raw impressions once under ``root/raw`` and preprocess every variant into ``root/<variant>``
    (kept between benchmarks: a variant whose ``metadata.json`` exists is reused)."""
    from torchrec_app.data.feed.generate import generate_feed_dataset
    from torchrec_app.data.feed.preprocess import preprocess_feed

    raw = root / "raw"
    if not (raw / "truth.json").exists():
        log(f"bench: generating {rows:,} feed impressions into {raw} (once; reused by later runs)")
        config = resolve_config(suite.recipe, [*suite.generate, f"generate_feed.rows={rows}", f"generate_feed.seed={seed}"])
        generate_feed_dataset(str(raw), config.generate_feed)
    files = {split: [str(raw / f"{split}.parquet")] for split in ("train", "valid", "test")}
    paths = {}
    used = {lever.data for lever in suite.levers}
    for name, overrides in suite.data_variants.items():
        if name not in used:
            continue
        path = root / name
        if not (path / "metadata.json").exists():
            log(f"bench: preprocessing variant {name} ({' '.join(overrides) or 'no sampling'})")
            config = resolve_config(suite.recipe, list(overrides))
            max_history = config.model.feed.max_history
            preprocess_feed(str(path), files, replace(config.feed_preprocess, max_history=max_history))
        paths[name] = path
    return paths


# ----------------------------------------------------------------------------- summaries


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean(values: list[Any]) -> float:
    """Mean of the numbers among ``values`` (metrics.jsonl writes NaN as null); NaN if none.

    >>> _mean([1.0, None, 2.0]), math.isnan(_mean([None]))
    (1.5, True)
    """
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return statistics.fmean(numbers) if numbers else math.nan


def summarize_lever(lever: Lever, runs: list[dict[str, Any]], targets: dict[str, float], tolerance: float,
                    baseline: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """One lever's line of the report from its runs (one per seed; each ``{"evals", "summary"}``)."""
    objectives = [o for o in targets if all(f"valid_{o}/auc" in r["evals"][-1] for r in runs if r["evals"])]
    scored_targets = {o: targets[o] for o in objectives}
    entry: dict[str, Any] = {"name": lever.name, "group": lever.group, "overrides": list(lever.overrides), "data": lever.data,
                             "seeds": len(runs), "objectives": objectives}  # fmt: skip
    for label, tol in (("target", tolerance), ("loose_target", LOOSE_TOLERANCE)):
        hits = [first_reaching(r["evals"], scored_targets, tol) for r in runs]
        reached = [h for h in hits if h is not None]
        entry[label] = {
            "tolerance": tol,
            "reached": f"{len(reached)}/{len(runs)}",
            "all_reached": len(reached) == len(runs),
            "train_seconds": [None if h is None else h["train_seconds"] for h in hits],
            "samples": [None if h is None else h["samples"] for h in hits],
            "median_train_seconds": _median([h["train_seconds"] for h in reached]) if len(reached) == len(runs) else None,
        }
    best = [best_aucs(r["evals"], objectives) for r in runs]
    entry["best_auc"] = {o: _mean([b[o] for b in best]) for o in objectives}
    entry["auc_delta"] = {o: entry["best_auc"][o] - targets[o] for o in objectives}
    last = [r["evals"][-1] for r in runs if r["evals"]]
    entry["calibration"] = {o: _mean([e.get(f"valid_{o}/calibration") for e in last]) for o in objectives}
    entry["samples_per_second"] = _median([r["summary"]["samples_per_second"] for r in runs])
    entry["train_seconds"] = _median([r["summary"]["train_seconds"] for r in runs])
    entry["any_head"] = bool(runs[0]["summary"].get("any_head"))
    if baseline is not None:
        base, mine = baseline["target"]["median_train_seconds"], entry["target"]["median_train_seconds"]
        entry["time_ratio"] = mine / base if base and mine is not None else None
        lb, ml = baseline["loose_target"]["median_train_seconds"], entry["loose_target"]["median_train_seconds"]
        entry["loose_time_ratio"] = ml / lb if lb and ml is not None else None
    entry["worst_auc_delta"] = min(entry["auc_delta"].values()) if entry["auc_delta"] else None
    return entry


def best_combination(suite: LeverSuite, entries: dict[str, dict[str, Any]], tolerance: float) -> Lever | None:
    """The best lever of each combinable group, together.

    A lever qualifies at a tolerance when it reaches the target at that tolerance on every seed
    and no objective's best AUC ends more than that tolerance below its target; the strict
    tolerance is preferred, the loose one (:data:`LOOSE_TOLERANCE`) used when no lever of the group
    qualifies strictly. Among the qualified, the fastest to target wins. None when no group has one.
    """
    chosen: list[Lever] = []
    for group in suite.combine:
        candidates = []
        for lever in suite.levers:
            e = entries.get(lever.name)
            if lever.group != group or e is None or e["worst_auc_delta"] is None:
                continue
            for rank, (key, tol) in enumerate((("target", tolerance), ("loose_target", LOOSE_TOLERANCE))):
                if e[key]["median_train_seconds"] is not None and e["worst_auc_delta"] >= -tol:
                    candidates.append((rank, e[key]["median_train_seconds"], lever))
                    break
        if candidates:
            chosen.append(min(candidates, key=lambda c: (c[0], c[1]))[2])
    if not chosen:
        return None
    data = next((lever.data for lever in chosen if lever.data != "full"), "full")
    overrides = tuple(o for lever in chosen for o in lever.overrides)
    return Lever("combination", "combination", overrides, data)


def plain_overrides(lever: Lever) -> tuple[str, ...]:
    """``lever.overrides`` without run-time markers (what can be checked before any run)."""
    return tuple(o for o in lever.overrides if not o.startswith("@"))


def resolve_override(override: str, baseline_run: Path) -> str:
    """``override`` itself, or for ``@suggest-dims:F`` the ``sparse.dims=...`` line that
    ``torchrec-app suggest-dims --run BASELINE --budget-fraction F`` writes (run once, then reused)."""
    if not override.startswith(SUGGEST_DIMS):
        return override
    import subprocess

    fraction = override.partition(":")[2] or "0.5"
    dims = baseline_run / "explain" / "dims.txt"
    if not dims.exists():
        command = [str(Path(sys.executable).with_name("torchrec-app")), "suggest-dims", "--run", str(baseline_run),
                   "--budget-fraction", fraction]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not dims.exists():
            raise ConfigError(f"bench: suggest-dims on {baseline_run} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return dims.read_text().strip()


# ----------------------------------------------------------------------------- the run


def run_lever_suite(args, config: AppConfig) -> int:
    """``torchrec-app bench --suite feed``: see the module docstring."""
    from torchrec_app.tools.bench.launch import BenchRunError, run_training

    suite = LEVER_SUITES[args.suite]
    if args.repeats < 1 or args.steps < 1 or args.evals < 1:
        raise ConfigError(f"bench --suite {args.suite} needs --repeats >= 1, --steps >= 1 and --evals >= 1")
    tolerance = args.target_tolerance
    common = list(args.overrides)
    for lever in suite.levers:  # every lever must resolve before the first run starts
        BenchCase(lever.name, suite.recipe, plain_overrides(lever), nproc=2).check(tuple(common))
    out = Path(args.out or f"runs/bench-{args.suite}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    data_root = Path(args.data) if args.data else Path("data/generated") / f"{args.suite}-bench-{args.rows}"
    variants = prepare_variants(suite, data_root, args.rows, seed=0)
    every = max(1, args.steps // args.evals)
    loads: list[float] = []

    needs_checkpoint = any(o.startswith(SUGGEST_DIMS) for lever in suite.levers for o in lever.overrides)

    def run(lever: Lever, seed: int) -> dict[str, Any]:
        keep = needs_checkpoint and lever.group == "baseline" and seed == 0  # suggest-dims reads its checkpoint
        lever = replace(lever, overrides=tuple(resolve_override(o, out / "runs" / "baseline" / "seed-0") for o in lever.overrides))
        case = BenchCase(lever.name, suite.recipe, lever.overrides, nproc=2)
        overrides = [f"train.max_steps={args.steps}", "train.epochs=1000", f"train.eval_every={every}", f"train.seed={seed}",
                     "train.early_stop_patience=0", "train.progress_bar=false", f"checkpoint.at_end={str(keep).lower()}",
                     "checkpoint.resume=false", "checkpoint.every=0", *common]  # fmt: skip
        print(f"bench {suite.recipe} {lever.name} seed {seed} ({' '.join(lever.overrides) or 'no override'}; data {lever.data}) ...",
              end=" ", flush=True)  # fmt: skip
        result = run_training(case, variants[lever.data], out / "runs" / lever.name / f"seed-{seed}", overrides, args.timeout)
        loads.append(os.getloadavg()[0])
        s = result.summary
        print(f"valid AUC {s.get('valid_auc', math.nan):.4f}, {s['train_seconds']:.0f}s training, {result.wall_seconds:.0f}s wall, "
              f"load {loads[-1]:.1f}", flush=True)  # fmt: skip
        return {"seed": seed, "run_dir": result.run_dir, "overrides": list(lever.overrides), "wall_seconds": result.wall_seconds,
                "load_after": loads[-1],
                "summary": s, "evals": result.evals}  # fmt: skip

    seeds = list(range(args.repeats))
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        baseline = suite.levers[0]
        runs[baseline.name] = [run(baseline, s) for s in seeds]
        objectives = runs[baseline.name][0]["summary"].get("objectives") or []
        targets = targets_from_runs([r["evals"] for r in runs[baseline.name]], objectives)
        unscored = [o for o, t in targets.items() if math.isnan(t)]
        if unscored:  # no positives in the validation split: no AUC, no target
            print(f"bench: no target for {', '.join(unscored)} (no validation AUC: too few positives; use more --rows)")
            targets = {o: t for o, t in targets.items() if not math.isnan(t)}
        print(f"bench: targets (baseline's best validation AUC, mean of {len(seeds)} seeds): "
              + ", ".join(f"{o} {t:.4f}" for o, t in targets.items()), flush=True)  # fmt: skip
        entries = {baseline.name: summarize_lever(baseline, runs[baseline.name], targets, tolerance, None)}
        for lever in suite.levers[1:]:
            runs[lever.name] = [run(lever, s) for s in seeds]
            entries[lever.name] = summarize_lever(lever, runs[lever.name], targets, tolerance, entries[baseline.name])
        combination = best_combination(suite, entries, tolerance)
        if combination is not None:
            runs[combination.name] = [run(combination, s) for s in seeds]
            entries[combination.name] = summarize_lever(combination, runs[combination.name], targets, tolerance, entries[baseline.name])
    except BenchRunError as err:
        print("failed", flush=True)
        print(f"torchrec-app bench: {err}", file=sys.stderr)
        return 1

    levers = [*suite.levers, *([combination] if combination is not None else [])]
    bench = {
        "bench": {
            "suite": args.suite, "description": suite.description, "recipe": suite.recipe,
            "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": args.rows, "data": str(data_root),
            "steps": args.steps, "eval_every": every, "seeds": seeds, "nproc": 2, "tolerance": tolerance,
            "loose_tolerance": LOOSE_TOLERANCE, "targets": targets,
            "load_average": {"before": load_before, "after_each_run": loads, "max": max(loads), "median": statistics.median(loads)},
            "wall_seconds": time.perf_counter() - started, "cpu_count": os.cpu_count(),
        },
        "levers": [entries[lever.name] for lever in levers],
        "runs": {name: [{k: v for k, v in r.items()} for r in rs] for name, rs in runs.items()},
    }  # fmt: skip
    (out / "bench.json").write_text(json.dumps(bench, indent=2, default=str) + "\n")
    report = lever_report(bench)
    (out / "bench.md").write_text(report)
    plot_auc_vs_wallclock(bench, out / "auc_vs_wallclock.png")
    print(report)
    print(f"bench: wrote {out}/bench.json, bench.md, auc_vs_wallclock.png", flush=True)
    return 0


# ----------------------------------------------------------------------------- report


def _f(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _seconds(values: list[float | None]) -> str:
    return " / ".join("–" if v is None else f"{v:.0f}" for v in values)


def lever_report(bench: dict[str, Any]) -> str:
    """The Markdown tables: time to target per lever, per-objective AUC deltas, calibration."""
    b = bench["bench"]
    objectives = list(b["targets"])
    lines = [
        f"Suite `{b['suite']}` ({b['recipe']}, 2 gloo processes, {b['rows']:,} generated impressions, {b['steps']} steps, "
        f"validation every {b['eval_every']}, seeds {b['seeds']}); load average {b['load_average']['before']:.1f} before, "
        f"median {b['load_average']['median']:.1f} / max {b['load_average']['max']:.1f} after runs, on {b['cpu_count']} CPU cores; "
        f"{b['wall_seconds'] / 60:.0f} min wall.",
        "",
        "Targets (the baseline's best validation AUC per objective, mean over seeds): "
        + ", ".join(f"{o} {t:.4f}" for o, t in b["targets"].items()) + ".",
        "",
        f"| lever | group | time to target ±{b['tolerance']} (s, per seed) | ratio | time to target ±{b['loose_tolerance']} (s) | ratio "
        f"| samples to ±{b['loose_tolerance']} (k) | worst Δ AUC | samples/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for e in bench["levers"]:
        lines.append(
            f"| {e['name']} | {e['group']} | {_seconds(e['target']['train_seconds'])} | {_f(e.get('time_ratio'), 2)} "
            f"| {_seconds(e['loose_target']['train_seconds'])} | {_f(e.get('loose_time_ratio'), 2)} "
            f"| {_seconds([None if v is None else v / 1000 for v in e['loose_target']['samples']])} "
            f"| {_f(e['worst_auc_delta'], 4, True)} | {e['samples_per_second']:,.0f} |"
        )
    lines += ["", "Best validation AUC per objective minus its target (mean over seeds); calibration (predicted ÷ observed rate) "
              "at the last validation:", "",
              "| lever | " + " | ".join(f"Δ {o}" for o in objectives) + " | " + " | ".join(f"cal {o}" for o in objectives) + " |",
              "| --- |" + " --- |" * (2 * len(objectives))]  # fmt: skip
    for e in bench["levers"]:
        deltas = " | ".join(_f(e["auc_delta"].get(o), 4, True) for o in objectives)
        cals = " | ".join(_f(e["calibration"].get(o), 2) for o in objectives)
        lines.append(f"| {e['name']} | {deltas} | {cals} |")
    combination = next((e for e in bench["levers"] if e["group"] == "combination"), None)
    if combination:
        lines += ["", f"Combination: `{' '.join(combination['overrides']) or '(no override)'}` on data `{combination['data']}`."]
    return "\n".join(lines) + "\n"


def plot_auc_vs_wallclock(bench: dict[str, Any], path: Path) -> None:
    """One panel per lever group: mean validation AUC over the objectives vs training seconds (first seed),
    the baseline in every panel, the mean target as a dashed line."""
    from torchrec_app.tools.bench.plots import _pyplot

    plt = _pyplot()
    groups = [g for g in dict.fromkeys(e["group"] for e in bench["levers"]) if g != "baseline"]
    targets = bench["bench"]["targets"]
    panels = max(1, len(groups))
    columns = min(3, panels)
    rows = (panels + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.8 * rows), sharey=True, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[panels:]:
        ax.set_visible(False)
    for ax, group in zip(flat, groups or ["baseline"]):
        for e in bench["levers"]:
            if e["group"] not in (group, "baseline"):
                continue
            evals = bench["runs"][e["name"]][0]["evals"]
            objectives = [o for o in targets if f"valid_{o}/auc" in (evals[-1] if evals else {})]
            xs = [r["train_seconds"] for r in evals]
            ys = [statistics.fmean(r[f"valid_{o}/auc"] for o in objectives) for r in evals]
            style = {"color": "black", "linewidth": 2} if e["group"] == "baseline" else {}
            ax.plot(xs, ys, marker="o", markersize=3, label=e["name"], **style)
        ax.axhline(statistics.fmean(targets.values()), linestyle="--", color="grey", linewidth=1, label="mean target")
        ax.set_title(group)
        ax.set_xlabel("training seconds (2 processes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for row in axes:
        row[0].set_ylabel("validation AUC, mean over\nthe run's objectives")
    fig.suptitle("Home-feed levers: validation AUC vs training wall-clock (seed 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
