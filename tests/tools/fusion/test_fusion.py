"""Ensembles and the re-ranker: fitted on validation only, never on test; scored by the one evaluator."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.general_data import make_general_datasets
from torchrec_app.cli import main as cli_main
from torchrec_app.config.general import FusionConfig
from torchrec_app.metrics.ranking import RankingMetrics, read_per_user
from torchrec_app.tools.fusion.ensemble import run_ensemble
from torchrec_app.tools.fusion.rerank import run_rerank

USERS, ITEMS = 40, 30


def _write_run(root, split, target_first: bool, seed: int):
    """A run's per-user file whose list puts each user's target first (or leaves it out)."""
    rng = np.random.default_rng(seed)
    targets = np.arange(USERS) % ITEMS + 1
    tops, ranks = [], []
    for t in targets:
        others = [i for i in rng.permutation(np.arange(1, ITEMS + 1)) if i != t][:10]
        tops.append(([t] + others)[:10] if target_first else others)
        ranks.append(1 if target_first else 25)
    metrics = RankingMetrics((10,))
    metrics.add(torch.arange(USERS), torch.from_numpy(targets)[:, None], torch.tensor(ranks)[:, None], torch.tensor(np.array(tops)))
    (root / "details").mkdir(parents=True, exist_ok=True)
    metrics.write_per_user(root / "details" / f"{split}.parquet")


def test_fusion_weights_come_from_validation_and_test_only_scores_them(tmp_path):
    config = FusionConfig(candidates=10, weight_grid=4, fit_metric="ndcg@10")
    a, b = tmp_path / "a", tmp_path / "b"
    _write_run(a, "valid", True, 0), _write_run(b, "valid", False, 1)  # a is right on valid
    _write_run(a, "test", False, 2), _write_run(b, "test", True, 3)  # b is right on test
    first = run_ensemble([str(a), str(b)], str(tmp_path / "e1"), config, ks=(10,), save_top_k=10)
    assert first["rrf_weights"][0] > first["rrf_weights"][1] and first["best_single_run"] == str(a)
    assert first["test_rrf"]["ndcg@10"] < 1.0 and first["test_best_single"]["ndcg@10"] == 0.0
    # rewrite the test files the other way round: the weights and every tried point stay the same
    _write_run(a, "test", True, 4), _write_run(b, "test", False, 5)
    second = run_ensemble([str(a), str(b)], str(tmp_path / "e2"), config, ks=(10,), save_top_k=10)
    assert second["rrf_weights"] == first["rrf_weights"] and second["weights_tried"] == first["weights_tried"]
    assert second["test_rrf"]["ndcg@10"] == 1.0  # ...while the test result follows the test data
    comparison = {r["metric"]: r for r in second["test_vs_best_single"]["rrf"]}
    assert comparison["ndcg@10"]["users"] == USERS and comparison["ndcg@10"]["diff"] == 0.0


@pytest.fixture(scope="module")
def generator_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    datasets = make_general_datasets(root)
    runs = []
    for name, l2 in (("ease_200", 200.0), ("ease_5", 5.0)):
        assert cli_main(["train", "--recipe", "ease", "--data", str(datasets["general"]), "--out", str(root / name),
                         f"ease.l2={l2}", "ranking.save_top_k=30"]) == 0  # fmt: skip
        runs.append(root / name)
    return datasets, runs


def _scramble_test_targets(run, out):
    """A copy of ``run`` whose test targets (and their ranks) are other items."""
    shutil.copytree(run, out)
    path = out / "details" / "test.parquet"
    table = pq.read_table(path)
    targets = [[(t % 79) + 1 for t in row] for row in table.column("targets").to_pylist()]
    table = table.set_column(table.schema.get_field_index("targets"), "targets", pa.array(targets, pa.list_(pa.int64())))
    table = table.set_column(table.schema.get_field_index("ranks"), "ranks",
                             pa.array([[50] * len(r) for r in targets], pa.list_(pa.int64())))  # fmt: skip
    pq.write_table(table, path)
    return out


def test_the_reranker_never_sees_test_targets(generator_runs, tmp_path):
    datasets, runs = generator_runs
    config = FusionConfig(candidates=30, num_rounds=40, early_stopping_rounds=10)
    first = run_rerank([str(r) for r in runs], str(datasets["general"]), str(tmp_path / "r1"), config, ks=(10,), save_top_k=30)
    scrambled = [_scramble_test_targets(r, tmp_path / f"scrambled_{r.name}") for r in runs]
    second = run_rerank([str(r) for r in scrambled], str(datasets["general"]), str(tmp_path / "r2"), config, ks=(10,), save_top_k=30)
    # the same model and the same test lists whatever the test targets are ...
    assert (tmp_path / "r1" / "reranker.txt").read_text() == (tmp_path / "r2" / "reranker.txt").read_text()
    lists = [read_per_user(tmp_path / r / "details" / "test.parquet").column("top_k").to_pylist() for r in ("r1", "r2")]
    assert lists[0] == lists[1]
    # ... which were really different (the evaluation reads them, after the re-ranking)
    assert first["test"]["ndcg@10"] != second["test"]["ndcg@10"]
    assert first["best_iteration"] >= 1 and set(first["feature_importance"]) >= {"rank_0", "score_1", "pop", "genre_match"}


def test_ensemble_and_rerank_commands_print_paired_comparisons(generator_runs, tmp_path, capsys):
    datasets, runs = generator_runs
    runs = [str(r) for r in runs]
    assert cli_main(["ensemble", "--runs", *runs, "--out", str(tmp_path / "ens"), "fusion.candidates=30", "fusion.weight_grid=4"]) == 0
    out = capsys.readouterr().out
    assert "RRF weights fitted on valid" in out and "rrf vs best single (test, paired bootstrap 95%)" in out
    summary = json.loads((tmp_path / "ens" / "summary.json").read_text())
    assert summary["test_rrf"]["users"] == 160 and (tmp_path / "ens" / "details" / "test.parquet").exists()
    assert cli_main(["compare", "--a", runs[0], "--b", str(tmp_path / "ens"), "--metric", "recall@10"]) == 0  # same users, targets
    assert cli_main(["rerank", "--runs", *runs, "--data", str(datasets["general"]), "--out", str(tmp_path / "rr"),
                     "fusion.candidates=30", "fusion.num_rounds=20"]) == 0  # fmt: skip
    assert "rerank vs best single" in capsys.readouterr().out
    assert cli_main(["rerank", "--runs", *runs, "--data", str(datasets["sequences"]), "--out", str(tmp_path / "bad")]) == 2
    assert "rerank reads the user-item dataset" in capsys.readouterr().err
