"""EASE: the closed form against a brute-force constrained least squares, the memory refusal, one process."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.general_data import make_general_datasets
from torchrec_app.cli import main as cli_main
from torchrec_app.config.errors import ConfigError
from torchrec_app.config.general import EaseConfig
from torchrec_app.metrics.ranking import read_per_user
from torchrec_app.models.general.ease import check_ease_memory, ease_memory_bytes, item_gram, solve_ease


def brute_force_ease(x: np.ndarray, l2: float) -> np.ndarray:
    """Column by column: b_j minimises ||x_j - X b_j||^2 + l2 ||b_j||^2 with b_jj = 0, i.e. a ridge
    regression of column j on every other column (the constraint removes column j from the inputs)."""
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = [i for i in range(n) if i != j]
        a = x[:, others]
        b[others, j] = np.linalg.solve(a.T @ a + l2 * np.eye(n - 1), a.T @ x[:, j])
    return b


@pytest.mark.parametrize("l2", [0.5, 10.0])
def test_closed_form_equals_the_brute_force_constrained_least_squares(l2):
    rng = np.random.default_rng(0)
    x = (rng.random((12, 7)) < 0.4).astype(np.float64)
    b = solve_ease(torch.from_numpy(x), l2).numpy()
    np.testing.assert_allclose(b, brute_force_ease(x, l2), atol=1e-10)
    assert np.all(np.diag(b) == 0.0)
    # the same B from the chunked Gram matrix of item lists (the path training takes)
    items = [np.flatnonzero(row) for row in x]
    gram = item_gram(items, 7, users_per_chunk=5)
    np.testing.assert_array_equal(gram.numpy(), x.T @ x)
    np.testing.assert_allclose(solve_ease(None, l2, gram=gram).numpy(), b, atol=1e-12)


def test_memory_is_stated_and_a_catalog_over_the_budget_is_refused_with_the_figure():
    assert ease_memory_bytes(2000) == 20 * 2000**2
    assert check_ease_memory(2000, EaseConfig(memory_gb=1.0)) == 80_000_000
    with pytest.raises(ConfigError, match=r"EASE on 20,000 items needs 8\.0 GB .* but ease.memory_gb=1\.0"):
        check_ease_memory(20_000, EaseConfig(memory_gb=1.0))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return make_general_datasets(tmp_path_factory.mktemp("ease"))


def test_train_recipe_ease_writes_the_run_directory_and_scores_with_the_shared_evaluator(datasets, tmp_path, capsys, monkeypatch):
    run = tmp_path / "ease"
    assert cli_main(["train", "--recipe", "ease", "--data", str(datasets["general"]), "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "ease" and summary["closed_form"] and summary["test_users"] == 160
    assert 0.0 < summary["test_ndcg@10"] <= 1.0 and (run / "config.json").exists() and (run / "metrics.jsonl").exists()
    details = read_per_user(run / "details" / "test.parquet")
    assert details.num_rows == 160 and "top_k_scores" in details.column_names
    # the top-K lists rank every item but the user's input (masked) and the padding id 0, best first
    inputs = {u: set(i) for u, i in zip(*(pq.read_table(datasets["general"] / "test.parquet").column(c).to_pylist()
                                          for c in ("user", "items")))}  # fmt: skip
    num_items = json.loads((datasets["general"] / "metadata.json").read_text())["extra"]["num_items"]
    for user, top in zip(details.column("user").to_pylist(), details.column("top_k").to_pylist()):
        assert set(top) == set(range(1, num_items + 1)) - inputs[user]
    scores = details.column("top_k_scores").to_pylist()
    assert all(a >= b for row in scores for a, b in zip(row, row[1:]))
    capsys.readouterr()
    # bad budget: one line with the figure, nothing trained
    assert cli_main(["train", "--recipe", "ease", "--data", str(datasets["general"]), "--out", str(tmp_path / "x"),
                     "ease.memory_gb=0.0001"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "EASE on 79 items needs 0.0 GB" in err or "EASE on 80 items needs 0.0 GB" in err, err
    # nothing to plan: one line with the memory it needs
    assert cli_main(["plan", "--recipe", "ease", "--data", str(datasets["general"]), "--world-size", "2", "--device", "cpu"]) == 2
    assert "closed form on one process: no tables to plan or shard" in capsys.readouterr().err
    # more than one process: refused, saying why
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main(["train", "--recipe", "ease", "--data", str(datasets["general"]), "--out", str(tmp_path / "y")]) == 2
    assert "solved in closed form on one process" in capsys.readouterr().err


def test_ease_and_sasrec_on_the_sequential_protocol_compare_user_by_user(datasets, tmp_path, capsys):
    ease_run, sasrec_run = tmp_path / "ease", tmp_path / "sasrec"
    assert cli_main(["train", "--recipe", "ease", "--data", str(datasets["sequential"]), "--out", str(ease_run)]) == 0
    assert cli_main(["train", "--recipe", "sasrec_tiny", "--data", str(datasets["sequences"]), "--out", str(sasrec_run)]) == 0
    capsys.readouterr()
    # compare refuses runs whose users or targets differ: passing means same users, same targets
    assert cli_main(["compare", "--a", str(sasrec_run), "--b", str(ease_run), "--metric", "ndcg@10", "--method", "t", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["users"] == 160
    ease, sasrec = (json.loads((r / "summary.json").read_text()) for r in (ease_run, sasrec_run))
    assert result["mean_b"] == pytest.approx(ease["test_ndcg@10"]) and result["mean_a"] == pytest.approx(sasrec["test_ndcg@10"])
