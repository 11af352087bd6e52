"""The one ranking evaluator: a hand-computed case, block/shard decomposition, masking, files, comparisons."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.multiprocess import run_on_ranks
from torchrec_app.metrics.ranking import (
    BlockRanker,
    RankingMetrics,
    metrics_from_ranks,
    paired_comparison,
    rank_full_scores,
    read_per_user,
)

# Catalog: items 0..6, item 0 is padding. Three users, scores by hand:
SCORES = torch.tensor([
    [9.0, 0.1, 0.8, 0.3, 0.8, 0.5, 0.2],   # user 10: target 4; item 2 ties it (2 < 4 wins); seen {2}
    [9.0, 0.9, 0.1, 0.7, 0.6, 0.5, 0.4],   # user 11: target 6; seen {1, 3}
    [9.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],   # user 12: two targets {1, 5}; seen {6}
])
TARGETS = torch.tensor([[4, -1], [6, -1], [1, 5]])
SEEN = [[2], [1, 3], [6]]


def test_hand_computed_case():
    """Ranks and metrics worked out on paper for the table above, with and without masking seen items."""
    ranks, top, _ = rank_full_scores(SCORES, TARGETS, SEEN, k=3, min_item=1)
    # user 10: items ranked 4(0.8) 5 3 6 1, item 2 masked -> target 4 is 1st
    # user 11: unmasked 4(0.6) 5(0.5) 6(0.4) 2 -> target 6 is 3rd
    # user 12: unmasked 5 4 3 2 1 -> target 5 is 1st, target 1 is 5th
    assert ranks.tolist() == [[1, 0], [3, 0], [5, 1]]
    assert top.tolist() == [[4, 5, 3], [4, 5, 6], [5, 4, 3]]
    m = metrics_from_ranks(ranks, ks=(1, 3))
    assert m["recall@1"].tolist() == [1.0, 0.0, 1.0]          # user 12: 1 hit / min(1, 2)
    assert m["recall@3"].tolist() == [1.0, 1.0, 0.5]          # user 12: 1 hit / min(3, 2)
    assert m["ndcg@3"][1].item() == pytest.approx(0.5)        # 1 / log2(4)
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg@3"][2].item() == pytest.approx(1 / ideal)
    assert m["mrr"].tolist() == pytest.approx([1.0, 1 / 3, 1.0])

    unmasked, _, _ = rank_full_scores(SCORES, TARGETS, None, k=0, min_item=1)
    # user 10: item 2 ties the target at 0.8 and has the lower id -> rank 2
    assert unmasked.tolist() == [[2, 0], [5, 0], [6, 2]]


def test_blocks_in_any_order_give_the_same_ranks_as_the_full_matrix():
    """What sharded scoring relies on: counts add up over any partition of the catalog."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (16, 50), generator=g).float()  # many ties
    targets = torch.randint(1, 50, (16, 2), generator=g)
    seen = [torch.randint(1, 50, (5,), generator=g).tolist() for _ in range(16)]
    full_ranks, full_top, full_scores = rank_full_scores(scores, targets, seen, k=7, min_item=1)
    ranker = BlockRanker(targets, scores.gather(1, targets), seen, k=7, min_item=1)
    for first, stop in [(30, 50), (0, 13), (13, 30)]:
        ranker.add_block(scores[:, first:stop], first)
    ranks, top, top_scores = ranker.result()
    assert torch.equal(ranks, full_ranks) and torch.equal(top, full_top) and torch.equal(top_scores, full_scores)
    # brute force: order items by (score desc, id asc), drop padding and seen non-targets
    for u in range(16):
        order = sorted((i for i in range(1, 50) if i not in seen[u] or i in targets[u].tolist()),
                       key=lambda i: (-scores[u, i].item(), i))
        assert [order.index(t) + 1 for t in targets[u].tolist()] == ranks[u].tolist()
        assert top[u].tolist() == order[:7]


def test_per_user_file_round_trip_and_comparison(tmp_path):
    """Saved per-user results hold what a paired comparison and an ensemble need."""
    metrics = RankingMetrics(ks=(10, 20))
    users = torch.arange(100, 300)
    rng = np.random.default_rng(0)
    ranks_a = torch.tensor(rng.integers(1, 40, size=(200, 1)))
    metrics.add(users, users[:, None] + 1, ranks_a, torch.arange(200 * 20).reshape(200, 20))
    path = tmp_path / "a.parquet"
    metrics.write_per_user(path)
    table = read_per_user(path)
    assert table.column("user").to_pylist() == users.tolist()
    assert table.column("ranks").to_pylist() == ranks_a.tolist()
    assert len(table.column("top_k")[0].as_py()) == 20
    assert np.mean(table.column("recall@10").to_numpy()) == pytest.approx(metrics.compute()["recall@10"])

    better = RankingMetrics(ks=(10, 20))
    better.add(users.flip(0), (users + 1).flip(0)[:, None], (ranks_a // 2).clamp(min=1).flip(0))
    b = better.per_user_table()
    t = paired_comparison(table, b, "ndcg@10", method="t")
    boot = paired_comparison(table, b, "ndcg@10", method="bootstrap", resamples=4000)
    assert t["diff"] > 0 and t["ci_low"] > 0 and t["p_value"] < 1e-3
    assert boot["diff"] == pytest.approx(t["diff"]) and boot["ci_low"] == pytest.approx(t["ci_low"], abs=0.02)
    same = paired_comparison(table, table, "mrr", method="t")
    assert same["diff"] == 0 and same["p_value"] == 1.0


def test_comparison_refuses_different_splits():
    a = pa.table({"user": [1, 2], "targets": [[5], [6]], "mrr": [1.0, 0.5]})
    with pytest.raises(ValueError, match="different users"):
        paired_comparison(a, pa.table({"user": [1, 3], "targets": [[5], [6]], "mrr": [1.0, 0.5]}), "mrr")
    with pytest.raises(ValueError, match="different targets"):
        paired_comparison(a, pa.table({"user": [1, 2], "targets": [[5], [7]], "mrr": [1.0, 0.5]}), "mrr")
    with pytest.raises(ValueError, match="no column 'ndcg@10'"):
        paired_comparison(a, a, "ndcg@10")


def _gather_on_rank(runtime, path):
    metrics = RankingMetrics(ks=(10,))
    rank = runtime.rank
    users = torch.arange(rank * 10, rank * 10 + 3 + rank)  # different counts per rank
    metrics.add(users, users[:, None], (users[:, None] % 12) + 1, torch.zeros(len(users), 2 + rank, dtype=torch.long))
    result = metrics.compute()
    metrics.write_per_user(path)
    return result


def test_metrics_are_over_every_ranks_users(tmp_path):
    path = tmp_path / "per_user.parquet"
    results = run_on_ranks(_gather_on_rank, 2, str(path))
    users = torch.tensor([0, 1, 2, 10, 11, 12, 13])
    expected = metrics_from_ranks((users[:, None] % 12) + 1, ks=(10,))
    assert results[0] == results[1]
    assert results[0]["users"] == 7
    assert results[0]["mrr"] == pytest.approx(expected["mrr"].mean().item())
    assert read_per_user(path).column("user").to_pylist() == users.tolist()
