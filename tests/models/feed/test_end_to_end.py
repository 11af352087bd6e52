"""The feed ranker from the command line: generate --kind feed, preprocess, plan, train, explain, suggest-dims, retrain."""

from __future__ import annotations

import json

import pytest

from torchrec_app.cli import main as cli_main
from torchrec_app.data.feed.batch import ACTIONS, OBJECTIVES

GENERATE = ["--rows", "2400", "generate_feed.items=300", "generate_feed.keywords=500", "generate_feed.categories=16"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("feed")
    assert cli_main(["generate", "--kind", "feed", "--out", str(root / "raw"), *GENERATE]) == 0
    raw = root / "raw"
    assert cli_main(["preprocess", "--kind", "feed", "--train", str(raw / "train.parquet"), "--valid", str(raw / "valid.parquet"),
                     "--test", str(raw / "test.parquet"), "--out", str(root / "data")]) == 0  # fmt: skip
    return root


def test_plan_shows_the_item_table_and_the_keyword_table(dataset, capsys):
    assert cli_main(["plan", "--recipe", "feed", "--data", str(dataset / "data"), "--world-size", "2", "--device", "cpu",
                     "--no-stats"]) == 0  # fmt: skip
    tables = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("t_")}
    assert "row_wise" in tables["t_item"], tables["t_item"]  # the recipe's placement of the large tables
    assert {"row_wise", "table_row_wise"} & set(tables["t_keywords"]), tables["t_keywords"]
    assert {"t_user", "t_category", "t_ctx_device"} <= set(tables)


def test_train_explain_suggest_dims_and_retrain(dataset, capsys):
    data, run = str(dataset / "data"), dataset / "run"
    assert cli_main(["train", "--recipe", "feed_tiny", "--data", data, "--out", str(run), "train.max_steps=12",
                     "train.eval_every=6"]) == 0  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["task"], summary["monitor"], summary["encoder"]) == ("feed", "auc", "lstm")
    for objective in OBJECTIVES:  # every objective is scored (rare ones may have no positive in 223 rows: null)
        assert {f"valid_{objective}/{m}" for m in ("auc", "logloss", "calibration")} <= set(summary)
    assert summary["valid_click/calibration"] > 0 and 0.0 <= summary["valid_click/auc"] <= 1.0
    assert len(summary["history"]) == 2
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in logged if "loss" in r]
    assert train_lines and all(r[f"loss/{o}"] > 0 for r in train_lines for o in OBJECTIVES), "per-objective train losses are logged"

    capsys.readouterr()
    assert cli_main(["explain", "--run", str(run)]) == 0
    blocks = json.loads((run / "explain" / "blocks.json").read_text())
    assert {"item", *(f"hist_{a}" for a in ACTIONS)} <= set(blocks["names"]), "the sequence encoders' outputs are blocks"

    assert cli_main(["suggest-dims", "--run", str(run), "--budget-fraction", "0.5"]) == 0
    override = (run / "explain" / "dims.txt").read_text().strip()
    dims = dict(pair.split(":") for pair in override.removeprefix("sparse.dims=").split(","))
    assert "item" in dims and not any(name.startswith("hist_") for name in dims), dims
    suggestion = json.loads((run / "explain" / "suggestion.json").read_text())
    assert suggestion["after"]["tower_flops"] <= 0.5 * suggestion["before"]["tower_flops"]

    retrain = dataset / "retrain"
    assert cli_main(["train", "--recipe", "feed_tiny", "--data", data, "--out", str(retrain), "train.max_steps=2", override]) == 0
    retrained = json.loads((retrain / "summary.json").read_text())
    rows = json.loads((dataset / "data" / "metadata.json").read_text())["num_embeddings"]["item"]
    assert retrained["item_table_parameters"] == rows * int(dims["item"])


@pytest.mark.parametrize("encoder", ["lstm", "none"])
def test_batches_carry_only_the_history_the_model_reads(dataset, encoder):
    from dataclasses import replace

    import pyarrow.parquet as pq

    from torchrec_app.config import build_recipe
    from torchrec_app.data.metadata import load_metadata
    from torchrec_app.models import task_for

    base = build_recipe("feed_tiny")
    config = replace(base, model=replace(base.model, feed=replace(base.model.feed, encoder=encoder, max_history=3)))
    metadata = load_metadata(str(dataset / "data"))
    task = task_for("feed")
    columns, make_batch = task.batch_maker(config, metadata, str(dataset / "data"))
    rows = pq.read_table(dataset / "data" / metadata.files["train"][0].path, columns=columns).slice(0, 30)
    batch = make_batch(rows, 32)
    if encoder == "none":  # the no-history baseline sends no history ids at all
        assert batch.sequences.keys() == ["item"]
    else:
        assert batch.sequences.keys() == ["item", *(f"hist_{a}" for a in ACTIONS)]
        assert int(batch.sequences.lengths().max()) == 3, "histories are cut at the reader to model.feed.max_history"
    loss, output = task.build_model(config, metadata, "cpu")(batch)
    assert loss.isfinite() and output.weights.sum() == 30


def test_plan_without_data_places_the_marketplace_tables(capsys):
    assert cli_main(["plan", "--recipe", "feed_marketplace", "--world-size", "4", "--no-stats"]) == 0
    tables = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("t_")}
    assert tables["t_keywords"][1:4] == ["1,200,000", "x", "32"] and "row_wise" in tables["t_item"]
    assert cli_main(["plan", "--recipe", "feed", "--world-size", "2"]) == 2
    assert "sparse.num_embeddings" in capsys.readouterr().err


def test_an_unpooled_table_gets_a_one_line_error_for_a_type_it_cannot_have(dataset, capsys):
    data = str(dataset / "data")
    per_table = 'sharding.per_table={"t_item": "table_row_wise"}'
    assert cli_main(["plan", "--recipe", "feed", "--data", data, "--world-size", "2", "--device", "cpu", per_table]) == 2
    err = capsys.readouterr().err
    assert "table t_item (an unpooled EmbeddingCollection table): sharding type(s) ['table_row_wise'] cannot run on cpu" in err
    assert "Traceback" not in err
    # sharding.types for every table: t_item keeps the types it supports, the pooled tables take table-row-wise
    both = ["sharding.per_table={}", "sharding.types=table_row_wise,row_wise"]
    assert cli_main(["plan", "--recipe", "feed", "--data", data, "--world-size", "2", "--device", "cpu", "--no-stats", *both]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("t_")}
    assert "row_wise" in rows["t_item"]
