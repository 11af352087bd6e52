"""The plan a user inspects is the plan that trains: `plan --json` -> `train --plan` on 2 gloo ranks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from tests.multiprocess import run_on_ranks
from torchrec_app.cli import main as cli_main
from torchrec_app.config import ConfigError, resolve_config
from torchrec_app.distributed.planning import load_plan, plan_to_dict
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.training.run_dir import RunDir
from torchrec_app.training.trainer import Trainer


def train_with_plan(runtime: Runtime, data: str, out: str, plan_file: str) -> dict:
    config = resolve_config("tiny", ["train.max_steps=5", "checkpoint.at_end=false"])
    config = replace(config, sharding=replace(config.sharding, plan_file=plan_file))
    try:
        trainer = Trainer(config, runtime, Path(data), RunDir(Path(out), enabled=runtime.is_main))
    except ConfigError as err:
        return {"error": str(err)}
    return trainer.train()


def _plan_json(tmp_path: Path, data: Path, world_size: int, extra: list[str]) -> Path:
    path = tmp_path / f"plan-{world_size}.json"
    assert cli_main(["plan", "--recipe", "tiny", "--data", str(data), "--device", "cpu",
                     "--world-size", str(world_size), "--json", str(path), *extra]) == 0
    return path


def test_inspected_plan_is_the_trained_plan(tiny_dataset, tmp_path):
    plan_file = _plan_json(tmp_path, tiny_dataset, 2, ["sharding.per_table=t_C1:column_wise,t_C2:table_row_wise"])
    summary, _ = run_on_ranks(train_with_plan, 2, str(tiny_dataset), str(tmp_path / "run"), str(plan_file))
    assert summary["steps"] == 5
    assert summary["sharding_types"]["t_C1"] == "column_wise" and summary["sharding_types"]["t_C2"] == "table_row_wise"
    used = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert used == plan_to_dict(load_plan(plan_file, "cpu"))


def test_plan_for_another_world_size_is_refused(tiny_dataset, tmp_path):
    plan_file = _plan_json(tmp_path, tiny_dataset, 4, ["sharding.types=row_wise"])
    result, _ = run_on_ranks(train_with_plan, 2, str(tiny_dataset), str(tmp_path / "run"), str(plan_file))
    assert "the sharding plan does not match this run" in result.get("error", ""), result
    assert "places tables on ranks up to 3" in result["error"] and "this run has 2 ranks" in result["error"]
    hint = f"torchrec-app plan --recipe tiny --data {tiny_dataset} --device cpu --world-size 2 --json FILE"
    assert hint in result["error"]  # a command that runs as printed (it names the dataset)
