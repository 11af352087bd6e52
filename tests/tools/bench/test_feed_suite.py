"""The feed levers benchmark: per-objective time to target (online stop and offline), the suite's choices and report."""

from __future__ import annotations

import json

import pytest

from tests.training.conftest import cli
from torchrec_app.tools.bench.cases import BenchCase
from torchrec_app.tools.bench.levers import (
    LEVER_SUITES,
    Lever,
    best_combination,
    lever_report,
    plain_overrides,
    plot_auc_vs_wallclock,
    summarize_lever,
)
from torchrec_app.tools.bench.time_to_target import first_reaching, targets_from_runs, targets_met

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OBJECTIVES = ("click", "chat")


@pytest.fixture(scope="module")
def feed_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("feed_bench")
    code, err = cli(["generate", "--kind", "feed", "--rows", "3000", "--out", str(root / "raw"),
                     'generate_feed.base_rates={"click": 0.2, "watch": 0.1, "chat": 0.1, "hide": 0.1, "report": 0.1}'])  # fmt: skip
    assert code == 0, err
    raw = root / "raw"
    code, err = cli(["preprocess", "--kind", "feed", "--train", str(raw / "train.parquet"), "--valid", str(raw / "valid.parquet"),
                     "--test", str(raw / "test.parquet"), "--out", str(root / "data")])  # fmt: skip
    assert code == 0, err
    return root / "data"


def test_training_stops_at_the_first_validation_where_every_objective_meets_its_target(feed_dataset, tmp_path):
    """bench.target_aucs: a callback of the one loop; targets met at the first validation stop it there."""
    run = tmp_path / "run"
    code, err = cli(["train", "--recipe", "bench_feed", "--data", str(feed_dataset), "--out", str(run),
                     "train.batch_size=64", "train.max_steps=12", "train.eval_every=4", "checkpoint.at_end=false",
                     'bench.target_aucs={"click": 0.3, "chat": 0.3}', "bench.target_tolerance=0.002",
                     "model.feed.encoder=mean", "model.feed.max_history=5"])  # fmt: skip
    assert code == 0, err[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["stop_reason"].startswith("validation AUC reached click 0.3000, chat 0.3000")
    reached = summary["target_reached"]
    assert reached["step"] == 4 and reached["samples"] == 4 * 64 and reached["wall_seconds"] >= reached["train_seconds"] > 0
    assert summary["target_aucs"] == {"click": 0.3, "chat": 0.3} and summary["target_tolerance"] == 0.002
    assert all(short < 0 for short in summary["target_shortfalls"].values())
    # the offline rule finds the same validation in metrics.jsonl
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "valid_auc" in line]
    assert first_reaching(evals, {"click": 0.3, "chat": 0.3})["step"] == 4


def _history(aucs_by_step: list[dict[str, float]], seconds_per_eval: float) -> list[dict]:
    return [{"step": 10 * (i + 1), "samples": 100 * (i + 1), "train_seconds": seconds_per_eval * (i + 1),
             **{f"valid_{o}/auc": a for o, a in aucs.items()}, **{f"valid_{o}/calibration": 1.0 for o in aucs}}
            for i, aucs in enumerate(aucs_by_step)]  # fmt: skip


def _runs(histories: list[list[dict]]) -> list[dict]:
    return [{"evals": h, "summary": {"samples_per_second": 1000.0, "train_seconds": h[-1]["train_seconds"]}} for h in histories]


def test_targets_time_to_target_and_the_best_combination():
    climb = [{"click": 0.60, "chat": 0.60}, {"click": 0.70, "chat": 0.75}, {"click": 0.72, "chat": 0.80}]
    baseline = _runs([_history(climb, 10.0), _history([{"click": 0.61, "chat": 0.62}, *climb[1:2], {"click": 0.70, "chat": 0.78}], 10.0)])
    targets = targets_from_runs([r["evals"] for r in baseline], OBJECTIVES)
    assert targets == pytest.approx({"click": 0.71, "chat": 0.79})
    # every objective must be within the tolerance at the same validation: click alone is not enough
    assert not targets_met({"click/auc": 0.75, "chat/auc": 0.70}, targets)
    base = summarize_lever(Lever("baseline", "baseline"), baseline, targets, 0.002, None)
    assert base["target"]["train_seconds"] == [30.0, None] and base["target"]["reached"] == "1/2"
    assert base["loose_target"]["train_seconds"] == [30.0, 30.0] and base["loose_target"]["median_train_seconds"] == 30.0

    fast = _runs([_history(climb, 5.0)] * 2)  # the same curve in half the time
    lossy = _runs([_history([{"click": 0.72, "chat": 0.60}, {"click": 0.73, "chat": 0.70}], 2.0)] * 2)  # fast, loses chat
    slow = _runs([_history(climb, 20.0)] * 2)
    entries = {
        "baseline": base,
        "enc_fast": summarize_lever(Lever("enc_fast", "forward", ("model.feed.encoder=mean",)), fast, targets, 0.002, base),
        "enc_lossy": summarize_lever(Lever("enc_lossy", "forward", ("model.feed.encoder=gru",)), lossy, targets, 0.002, base),
        "neg_slow": summarize_lever(Lever("neg_slow", "sampling", data="negatives"), slow, targets, 0.002, base),
    }
    assert entries["enc_fast"]["loose_time_ratio"] == pytest.approx(0.5) and entries["enc_fast"]["time_ratio"] is None
    assert entries["enc_lossy"]["worst_auc_delta"] == pytest.approx(-0.09)
    assert entries["enc_fast"]["auc_delta"] == pytest.approx({"click": 0.01, "chat": 0.01})
    suite = LEVER_SUITES["feed_tiny"]
    suite = type(suite)(suite.description, suite.recipe, (), {"full": ()}, (
        Lever("baseline", "baseline"), Lever("enc_fast", "forward", ("model.feed.encoder=mean",)),
        Lever("enc_lossy", "forward", ("model.feed.encoder=gru",)), Lever("neg_slow", "sampling", data="negatives")))  # fmt: skip
    combination = best_combination(suite, entries, 0.002)
    # the fastest forward lever that loses nothing, and the (slow but lossless) sampling lever's data
    assert combination == Lever("combination", "combination", ("model.feed.encoder=mean",), "negatives")


def test_report_and_plot(tmp_path):
    climb = [{"click": 0.60, "chat": 0.60}, {"click": 0.72, "chat": 0.80}]
    runs = {"baseline": _runs([_history(climb, 10.0)]), "enc_mean": _runs([_history(climb, 4.0)])}
    targets = {"click": 0.72, "chat": 0.80}
    base = summarize_lever(Lever("baseline", "baseline"), runs["baseline"], targets, 0.002, None)
    mean = summarize_lever(Lever("enc_mean", "forward", ("model.feed.encoder=mean",)), runs["enc_mean"], targets, 0.002, base)
    bench = {"bench": {"suite": "feed", "recipe": "bench_feed", "rows": 1000, "steps": 20, "eval_every": 10, "seeds": [0],
                       "tolerance": 0.002, "loose_tolerance": 0.01, "targets": targets, "cpu_count": 2, "wall_seconds": 60.0,
                       "load_average": {"before": 3.0, "median": 4.0, "max": 5.0}},
             "levers": [base, mean], "runs": runs}  # fmt: skip
    report = lever_report(bench)
    assert "| enc_mean | forward | 8 | 0.40 | 8 | 0.40 | 0 |" in report and "load average 3.0 before" in report
    plot_auc_vs_wallclock(bench, tmp_path / "auc.png")
    assert (tmp_path / "auc.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("suite", sorted(LEVER_SUITES))
def test_every_lever_of_the_suites_resolves(suite):
    for lever in LEVER_SUITES[suite].levers:
        BenchCase(lever.name, LEVER_SUITES[suite].recipe, plain_overrides(lever), nproc=2).check()
        assert lever.data in LEVER_SUITES[suite].data_variants
