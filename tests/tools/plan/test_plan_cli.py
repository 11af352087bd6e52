"""`torchrec-app plan`: a GPU-cluster plan made on a CPU, the no-fit explanation, the diff."""

from __future__ import annotations

import json

import pytest

from torchrec_app.cli import main
from torchrec_app.config import build_recipe
from torchrec_app.config.errors import ConfigError
from torchrec_app.distributed.planning import check_plan_matches, load_plan
from torchrec_app.tools.plan.model import build_planning_model, recipe_metadata

MLPERF = "criteo_1tb_dcnv2_mlperf"


@pytest.fixture(scope="module")
def plan16(tmp_path_factory):
    """The MLPerf recipe planned for 16 H100-class GPUs (2 hosts of 8), on this CPU-only machine."""
    out = tmp_path_factory.mktemp("plan16")
    path, png = out / "plan16.json", out / "plan16.png"
    import io
    from contextlib import redirect_stdout

    text = io.StringIO()
    with redirect_stdout(text):
        rc = main(["plan", "--recipe", MLPERF, "--world-size", "16", "--hbm-gb", "80", "--json", str(path), "--png", str(png)])
    return rc, text.getvalue(), json.loads(path.read_text()), path, png


def test_16_gpu_plan_is_made_on_cpu_and_loads_for_16_ranks(plan16):
    rc, text, report, path, png = plan16
    assert rc == 0
    assert report["fits"] and report["topology"]["world_size"] == 16 and report["topology"]["device"] == "cuda"
    tables = {t["name"]: t for t in report["tables"]}
    assert len(tables) == 26 and tables["t_C1"]["rows"] == 40_000_000 and tables["t_C1"]["dim"] == 128
    placements = {s["placement"] for m in report["plan"].values() for e in m.values() for s in e["shards"]}
    assert placements and all("/cuda:" in p for p in placements)
    # the trainer's checks accept it on 16 ranks, on GPUs or (device rewritten) on CPUs
    _, configs = build_planning_model(build_recipe(MLPERF), recipe_metadata(build_recipe(MLPERF)))
    check_plan_matches(load_plan(path, "cuda"), configs, world_size=16)
    cpu_plan = load_plan(path, "cpu")
    for sharding in cpu_plan.plan["model.sparse_arch.embedding_bag_collection"].values():
        for shard in (sharding.sharding_spec.shards if sharding.sharding_spec else []):
            assert str(shard.placement).endswith("/cpu")
    with pytest.raises(ConfigError, match="ranks up to 15 .* but this run has 8 ranks: it was made for another world size"):
        check_plan_matches(load_plan(path, "cuda"), configs, world_size=8)
    # per rank, memory adds up to the tables' and stays under capacity
    ranks = report["ranks"]
    assert len(ranks) == 16
    assert sum(r["tables_bytes"]["hbm"] for r in ranks) == sum(t["hbm"] for t in report["tables"])
    assert all(0 < r["used"]["hbm"] <= r["capacity"]["hbm"] for r in ranks)
    assert all(r["perf_ms"]["total"] > 0 for r in ranks)
    # the text has the per-table and per-rank views and TorchRec's captured stats table
    assert "t_C1   40,000,000 x 128" in text and "Ranks" in text and "Imbalance" in text
    assert "--- Planner Statistics ---" in text
    assert png.stat().st_size > 10_000


def test_too_big_model_says_which_table_fails_by_how_much_and_what_fixes_it(capsys):
    rc = main([
        "plan", "--recipe", "tiny", "--device", "cpu", "--world-size", "2", "--ddr-gb", "0.05",
        "sparse.num_embeddings=4000000,50,20,10", "data.max_ind_range=0", "sharding.types=table_wise",
    ])
    out = capsys.readouterr().out
    assert rc == 1
    assert "DOES NOT FIT" in out and "Traceback" not in out
    assert "t_C1 (4,000,000 x 8, allowed table_wise)" in out  # the table that fits nowhere
    assert "over by" in out and "short by" in out
    assert "more ranks" in out and "--world-size" in out
    assert "sharding.per_table=t_C1:row_wise" in out  # row-wise is the fix the constraints forbid
    assert "data.max_ind_range=" in out and "quotient-remainder" in out


def test_missing_world_size_is_a_config_error(capsys):
    assert main(["plan", "--recipe", "tiny"]) == 2
    assert "--world-size" in capsys.readouterr().err


def _plan(tmp_path, name, *overrides):
    path = tmp_path / f"{name}.json"
    assert main(["plan", "--recipe", "tiny", "--device", "cpu", "--world-size", "2", "--no-stats", "--json", str(path), *overrides]) == 0
    return path


def test_diff_names_moved_and_retyped_tables(tmp_path, capsys):
    a = _plan(tmp_path, "a", "sharding.types=table_wise")
    b = _plan(tmp_path, "b", "sharding.types=table_wise", "sharding.per_table=t_C1:row_wise")
    moved = json.loads(a.read_text())
    entry = moved["plan"]["model.sparse_arch.embedding_bag_collection"]["t_C2"]
    other = 1 - entry["ranks"][0]
    entry["ranks"] = [other]
    entry["shards"][0]["placement"] = f"rank:{other}/cpu"
    c = tmp_path / "c.json"
    c.write_text(json.dumps(moved))
    capsys.readouterr()

    assert main(["plan", "--diff", str(a), str(c)]) == 0
    out = capsys.readouterr().out
    assert "tables moved: t_C2" in out
    assert "rank   0" in out and "rank   1" in out

    assert main(["plan", "--diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "t_C1  type    table_wise -> row_wise" in out
    assert "shape" in out


def test_a_suggested_world_size_is_whole_hosts_and_plans(capsys):
    """The no-fit advice for 8-GPU hosts names a world size that `plan` accepts (a multiple of 8)."""
    args = ["plan", "--recipe", MLPERF, "--device", "cuda", "--hbm-gb", "4", "--ddr-gb", "8", "--no-stats"]
    assert main([*args, "--world-size", "8"]) == 1
    out = capsys.readouterr().out
    suggested = int(out.split("(--world-size ")[1].split(",")[0].split(";")[0])
    assert suggested % 8 == 0 and f"{suggested // 8} hosts of 8" in out
    assert main([*args, "--world-size", str(suggested)]) in (0, 1)  # plans (fits, or explains again): no error
    assert "does not divide" not in capsys.readouterr().err
