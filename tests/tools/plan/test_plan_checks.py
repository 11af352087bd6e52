"""The trainer's guards on a loaded plan: ``check_plan_matches`` and ``load_plan``."""

from __future__ import annotations

import json

import pytest
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_app.config.errors import ConfigError
from torchrec_app.distributed.planning import check_plan_matches, load_plan, plan_from_dict

TABLES = [
    EmbeddingBagConfig(name="t_a", feature_names=["a"], num_embeddings=10, embedding_dim=4),
    EmbeddingBagConfig(name="t_b", feature_names=["b"], num_embeddings=6, embedding_dim=4),
]


def _entry(kind, shards, kernel="fused"):
    return {"sharding_type": kind, "compute_kernel": kernel, "ranks": [r for r, _, _ in shards],
            "shards": [{"offsets": o, "sizes": s, "placement": f"rank:{r}/cuda:{r}"} for r, o, s in shards]}


def _plan(**tables):
    return {"m": tables}


GOOD = _plan(t_a=_entry("row_wise", [(0, [0, 0], [5, 4]), (1, [5, 0], [5, 4])]), t_b=_entry("table_wise", [(1, [0, 0], [6, 4])]))


def test_a_matching_plan_passes():
    check_plan_matches(plan_from_dict(GOOD), TABLES, world_size=2)


@pytest.mark.parametrize("plan,message", [
    (_plan(t_a=GOOD["m"]["t_a"]), "tables missing from the plan: ['t_b']"),
    ({"m": {**GOOD["m"], "t_c": GOOD["m"]["t_b"]}}, "does not have: ['t_c']"),
    (_plan(t_a=_entry("row_wise", [(0, [0, 0], [4, 4]), (1, [4, 0], [4, 4])]), t_b=GOOD["m"]["t_b"]),
     "t_a: shards cover 32 of its 10 x 4 = 40 values"),
    (_plan(t_a=GOOD["m"]["t_a"], t_b=_entry("table_wise", [(1, [0, 0], [8, 4])])), "t_b: shard at offset [0, 0] of size [8, 4] lies outside"),
    (_plan(t_a=GOOD["m"]["t_a"], t_b=_entry("table_wise", [(3, [0, 0], [6, 4])])), "t_b: placed on rank(s) [3], but the world size is 2"),
])
def test_a_mismatch_names_what_differs(plan, message):
    with pytest.raises(ConfigError) as err:
        check_plan_matches(plan_from_dict(plan), TABLES, world_size=2)
    assert message in str(err.value)
    assert "torchrec-app plan" in str(err.value)


def test_row_wise_plan_for_another_world_size_is_refused():
    with pytest.raises(ConfigError, match="row_wise needs one shard on each of the 4 ranks"):
        check_plan_matches(plan_from_dict(GOOD), TABLES, world_size=4)


def test_load_plan_rewrites_placements_and_refuses_gpu_only_kernels(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"format": "torchrec_app.plan_report", "plan": GOOD}))
    cpu = load_plan(path, "cpu")
    assert [str(s.placement) for s in cpu.plan["m"]["t_a"].sharding_spec.shards] == ["rank:0/cpu", "rank:1/cpu"]
    path.write_text(json.dumps(_plan(t_a=_entry("row_wise", [(0, [0, 0], [10, 4])], kernel="fused_uvm_caching"))))
    with pytest.raises(ConfigError, match="t_a uses compute kernel fused_uvm_caching, which cannot run on cpu"):
        load_plan(path, "cpu")
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read sharding plan"):
        load_plan(path, "cpu")
