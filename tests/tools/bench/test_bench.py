"""``torchrec-app bench`` end to end on the tiny recipe: what it writes, not how fast it is."""

from __future__ import annotations

import json

import pytest

from torchrec_app.cli import main as cli_main
from torchrec_app.config import ConfigError
from torchrec_app.tools.bench.cases import SUITES, parse_case
from torchrec_app.tools.bench.step_profile import CATEGORIES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench_out(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = cli_main([
        "bench", "--data", str(tiny_dataset), "--out", str(out), "--case", "tiny2=tiny@2 train.batch_size=128",
        "--repeats", "1", "--steps", "12", "--evals", "3", "--profile-steps", "2", "--reader-batches", "4",
        "--target-auc", "0.45",  # the tiny model's valid AUC: 0.445, 0.443, 0.455 at steps 4, 8, 12: reached at the last
    ])  # fmt: skip
    assert code == 0
    return out


def test_writes_json_markdown_and_plots(bench_out):
    for name in ("bench.json", "bench.md", "samples_per_second.png", "auc_vs_samples.png"):
        assert (bench_out / name).stat().st_size > 0, name
    for name in ("samples_per_second.png", "auc_vs_samples.png"):
        assert (bench_out / name).read_bytes()[:8] == PNG_MAGIC


def test_bench_json_has_throughput_ceiling_split_and_quality(bench_out):
    bench = json.loads((bench_out / "bench.json").read_text())
    assert bench["bench"]["repeats"] == 1 and bench["bench"]["steps"] == 12
    assert bench["reader"][0]["samples_per_second"] > 0
    (case,) = bench["cases"]
    assert (case["name"], case["recipe"], case["nproc"], case["model"]) == ("tiny2", "tiny", 2, "dcnv2")
    assert case["batch_size_per_rank"] == 128 and case["global_batch_size"] == 256
    for key in ("samples_per_second", "ceiling_samples_per_second", "samples_per_second_per_rank", "peak_rss_mb_per_rank"):
        assert set(case[key]) >= {"median", "min", "max", "spread", "values"} and case[key]["median"] > 0, key
    assert case["pipeline_efficiency"] == pytest.approx(case["samples_per_second"]["median"] / case["ceiling_samples_per_second"]["median"])
    assert case["reader_samples_per_second_per_process"] > 0
    assert 0.0 <= case["quality"]["test_auc"] <= 1.0 and case["quality"]["test_auc_gap_to_oracle"] is not None
    assert case["oracle"]["valid"] > 0.5
    split = case["step_split"]
    assert set(split["ms"]) == set(CATEGORIES) and split["steps"] == 2 and len(split["ms_by_rank"]) == 2
    assert split["step_ms"] > 0 and sum(split["ms"].values()) == pytest.approx(split["step_ms"], rel=0.05)
    assert [s for s, _ in case["auc_vs_samples"]] == sorted(s for s, _ in case["auc_vs_samples"])
    assert case["target"]["auc"] == 0.45
    kinds = sorted(r["kind"] for r in case["runs"])
    assert kinds == ["ceiling", "end_to_end"]


def test_time_to_quality_is_the_headline(bench_out):
    bench = json.loads((bench_out / "bench.json").read_text())
    (case,) = bench["cases"]
    assert case["target"]["reached"] == "1/1"
    summary = json.loads((bench_out / "runs" / "tiny2" / "end_to_end-0" / "summary.json").read_text())
    assert case["time_to_auc_s"] == summary["time_to_auc_s"] > 0
    assert case["samples_to_auc"] == summary["samples_to_auc"] == summary["steps_to_auc"] * 256  # global batch
    assert summary["target_reached"]["auc"] >= 0.45 and summary["steps"] == summary["steps_to_auc"]  # stopped there
    text = (bench_out / "bench.md").read_text()
    assert text.startswith("## Time to quality: validation AUC 0.45") and "| tiny2 | dcnv2 | 2 | 1/1 |" in text


def test_ceiling_run_trained_on_in_memory_batches(bench_out):
    summaries = {p.parent.name: json.loads(p.read_text()) for p in (bench_out / "runs" / "tiny2").glob("*/summary.json")}
    assert summaries["ceiling-0"]["in_memory"] is True and "in_memory" not in summaries["end_to_end-0"]
    assert summaries["ceiling-0"]["steps"] == 12
    assert (bench_out / "runs" / "tiny2" / "end_to_end-0" / "step_profile.json").exists()


def test_markdown_names_every_case_and_column(bench_out):
    text = (bench_out / "bench.md").read_text()
    assert "| tiny2 | dcnv2 | 2 | 128 |" in text
    for column in ("samples/s end-to-end", "ceiling samples/s", "pipeline eff.", "valid AUC", "data wait", "output a2a"):
        assert column in text, column


def test_case_spec_parsing_and_errors():
    case = parse_case("rw=tiny@2 sharding.types=row_wise model.dense_arch=16,8")
    assert (case.name, case.recipe, case.nproc) == ("rw", "tiny", 2)
    assert case.overrides == ("sharding.types=row_wise", "model.dense_arch=16,8")
    with pytest.raises(ConfigError, match="NPROC"):
        parse_case("x=tiny@two")
    with pytest.raises(ConfigError, match="bench case x"):
        parse_case("x=tiny train.no_such_key=1").check()
    for suite in SUITES.values():  # every shipped suite resolves
        for c in suite.cases:
            c.check()
