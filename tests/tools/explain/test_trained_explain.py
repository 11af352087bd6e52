"""explain and suggest-dims on a DCNv2 trained on 2 gloo ranks, on data whose planted crosses are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.multiprocess import run_on_ranks
from torchrec_app.cli import main as cli_main
from torchrec_app.config import resolve_config
from torchrec_app.data.truth import load_truth
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.tools.explain.blocks import block_scores, rank_crosses
from torchrec_app.tools.explain.cost import table_params
from torchrec_app.tools.explain.trained_model import find_checkpoint, read_trained_cross, run_model_inputs
from torchrec_app.training.run_dir import RunDir
from torchrec_app.training.trainer import Trainer

#: Stronger planted crosses than the default data, so 2 short epochs learn them: few ids per
#: field (each id seen often), most of the logit variance in the crosses.
STRONG_CROSSES = ["generate.max_cardinality=40", "generate.cross_share=0.7", "generate.dense_cross_share=0.25",
                  "generate.logit_std=2.5"]
#: Unequal widths, planted features among both the wide and the narrow ones.
DIMS = "sparse.dims=C1:12,C2:4,C3:12,C5:4,C14:12,C20:4,C21:12"


@pytest.fixture(scope="module")
def planted_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    raw, out = root / "raw", root / "parquet"
    assert cli_main(["generate", "--rows", "30000", "--seed", "1", "--out", str(raw), *STRONG_CROSSES]) == 0
    assert cli_main(["preprocess", "--train", str(raw / "train.txt"), "--valid", str(raw / "valid.txt"),
                     "--test", str(raw / "test.txt"), "--out", str(out)]) == 0
    return out


def train_on_rank(runtime: Runtime, data: str, out: str, overrides: list[str]) -> dict:
    config = resolve_config("tiny", overrides)
    return Trainer(config, runtime, Path(data), RunDir(Path(out), enabled=runtime.is_main)).train()


@pytest.fixture(scope="module", params=["full", "low_rank"])
def trained_run(request, planted_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"run_{request.param}")
    run_on_ranks(train_on_rank, 2, str(planted_dataset), str(out), [
        f"model.cross.kind={request.param}", "model.cross.num_layers=1", "model.cross.low_rank=32", DIMS,
        "train.epochs=2", "train.batch_size=256", "optim.dense_lr=0.02", "optim.sparse_lr=0.05",
    ])
    return out


def test_planted_crosses_rank_above_the_median_cross(trained_run, planted_dataset):
    truth = load_truth(str(planted_dataset))
    checkpoint = find_checkpoint(str(trained_run), None)
    trained = read_trained_cross(checkpoint, *run_model_inputs(checkpoint, None))
    ranked = rank_crosses(block_scores(trained.weight, trained.layout))
    position = {frozenset(r.names): k for k, r in enumerate(ranked)}
    median = len(ranked) // 2
    planted = [frozenset(pair) for pair in truth["crosses"]] + [frozenset(("dense", c)) for _, c in truth["dense_crosses"]]
    ranks = {tuple(sorted(p)): position[p] for p in planted}
    assert all(k < median for k in ranks.values()), (ranks, len(ranked))


def test_explain_writes_blocks_rankings_and_heatmap(trained_run, capsys):
    assert cli_main(["explain", "--run", str(trained_run)]) == 0
    out = trained_run / "explain"
    blocks = json.loads((out / "blocks.json").read_text())
    assert blocks["names"][:4] == ["dense", "C1", "C2", "C3"] and blocks["widths"][:4] == [8, 12, 4, 12]
    assert len(blocks["plain"]) == len(blocks["normalized"]) == 27
    crosses = (out / "crosses.tsv").read_text().splitlines()
    assert crosses[0].split("\t") == ["rank", "names", "widths", "normalized", "plain", "plain_rank"]
    assert len(crosses) == 1 + 27 * 26 // 2
    assert len((out / "features.tsv").read_text().splitlines()) == 1 + 27
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "top crosses" in capsys.readouterr().out


def test_suggest_dims_respects_the_budget_and_retrains_without_code_change(trained_run, capsys):
    checkpoint = find_checkpoint(str(trained_run), None)
    trained = read_trained_cross(checkpoint, *run_model_inputs(checkpoint, None))
    now = table_params(trained.table_rows, dict(zip(trained.layout.names[1:], trained.layout.widths[1:])))
    budget = int(0.6 * now)
    assert cli_main(["suggest-dims", "--run", str(trained_run), "--budget-params", str(budget), "--multiple", "4"]) == 0
    override = (trained_run / "explain" / "dims.txt").read_text().strip()
    report = json.loads((trained_run / "explain" / "suggestion.json").read_text())
    assert report["after"]["table_params"] <= budget < report["before"]["table_params"]
    assert all(d % 4 == 0 and d >= 4 for d in report["dims_after"].values())
    out = capsys.readouterr().out
    assert "retrain with:" in out
    assert report["discriminates"] is True and "does not discriminate" not in out  # planted crosses: a clear ranking
    config = resolve_config("tiny", [override])  # the override is a plain config override
    assert config.sparse.dims == report["dims_after"]
