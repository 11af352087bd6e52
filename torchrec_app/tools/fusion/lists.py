"""Several ranking runs' per-user top-K lists, aligned user by user, and how a fused list is scored.

Every ranking run (next-item or general) leaves ``<run>/details/<split>.parquet``: one row
per user with the held-out ``targets``, their full-catalog ``ranks``, the metrics and the
``top_k`` list (and ``top_k_scores`` where the model saved them). :func:`load_runs` reads
one split of several runs and checks they are comparable: the same users with the same
targets (so also the same protocol and split).

A fused (re-ranked, ensembled) list only orders the **candidates**, the union of each run's
top ``C`` items. A target inside the candidates gets its exact position in the fused list;
a target outside them (no run put it in its top ``C``) is placed after every candidate, at
``|candidates| + min_m rank_m(t) - C`` (its best run's rank, shifted past the candidates).
So Recall@K and NDCG@K for ``K <= C`` are exact, and MRR is exact for users whose best
target is a candidate and a consistent bound for the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from torchrec_app.metrics.ranking import RankingMetrics, read_per_user


@dataclass
class RunLists:
    """One run's per-user results of one split, users in ascending order.

    Attributes:
        name: a short name of the run (its directory's name).
        users: ``U`` user ids.
        targets: ``U`` arrays of target ids.
        ranks: ``U`` arrays of the targets' full-catalog ranks.
        top: ``U`` arrays of the run's top-K ids, best first.
        scores: ``U`` arrays of their scores, or None when the run did not save them.
    """

    name: str
    users: np.ndarray
    targets: list[np.ndarray]
    ranks: list[np.ndarray]
    top: list[np.ndarray]
    scores: list[np.ndarray] | None


def details_path(run: str, split: str) -> str:
    """``<run>/details/<split>.parquet`` (or ``run`` itself when it is a file)."""
    if os.path.isfile(run):
        return run
    path = os.path.join(run, "details", f"{split}.parquet")
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found: {run} is not a ranking run, or its {split} split was not evaluated")
    return path


def read_run_lists(run: str, split: str) -> RunLists:
    """The per-user lists of ``run``'s ``split``."""
    table = read_per_user(details_path(run, split))
    order = np.argsort(table.column("user").to_numpy(), kind="stable")
    table = table.take(pa.array(order))

    def arrays(name: str, dtype) -> list[np.ndarray]:
        return [np.asarray(x, dtype=dtype) for x in table.column(name).to_pylist()]

    if "top_k" not in table.column_names:
        raise ValueError(f"{details_path(run, split)} has no top_k lists (rerun with ranking.save_top_k > 0)")
    return RunLists(
        name=os.path.basename(os.path.normpath(run)),
        users=table.column("user").to_numpy().astype(np.int64),
        targets=arrays("targets", np.int64),
        ranks=arrays("ranks", np.int64),
        top=arrays("top_k", np.int64),
        scores=arrays("top_k_scores", np.float64) if "top_k_scores" in table.column_names else None,
    )


def load_runs(runs: list[str], split: str, candidates: int) -> list[RunLists]:
    """``split`` of every run in ``runs``, checked to hold the same users and targets.

    A run contributes the first ``candidates`` items of each list; lists may be shorter (a
    catalog smaller than ``candidates`` once seen items are removed, or ``ranking.save_top_k``
    smaller): :func:`list_depths` reports what each run gave.
    """
    if len(runs) < 2:
        raise ValueError(f"give at least two runs to combine, got {len(runs)}")
    loaded = [read_run_lists(r, split) for r in runs]
    first = loaded[0]
    for run, lists in zip(runs[1:], loaded[1:]):
        if not np.array_equal(lists.users, first.users):
            raise ValueError(f"{run} and {runs[0]} evaluated different users on {split} ({len(lists.users)} vs {len(first.users)}): "
                             "combine runs of the same dataset and protocol")  # fmt: skip
        bad = [int(u) for u, a, b in zip(first.users, first.targets, lists.targets) if sorted(a) != sorted(b)]
        if bad:
            raise ValueError(f"users {bad[:5]} have different {split} targets in {run} and {runs[0]}: combine runs of the same protocol")
    return loaded


def list_depths(runs: list[RunLists]) -> dict[str, int]:
    """The longest top-K list of each run (what it can contribute to the candidates)."""
    return {run.name: max((len(t) for t in run.top), default=0) for run in runs}


def candidate_union(runs: list[RunLists], user_index: int, candidates: int) -> np.ndarray:
    """The items in any run's top ``candidates`` for one user, in first-seen order (run by run, best first).

    >>> a = RunLists("a", np.array([0]), [np.array([5])], [np.array([1])], [np.array([5, 3, 9])], None)
    >>> b = RunLists("b", np.array([0]), [np.array([5])], [np.array([2])], [np.array([3, 7, 5])], None)
    >>> candidate_union([a, b], 0, 2).tolist()
    [5, 3, 7]
    """
    seen: dict[int, None] = {}
    for run in runs:
        for item in run.top[user_index][:candidates].tolist():
            seen.setdefault(item, None)
    return np.fromiter(seen.keys(), dtype=np.int64, count=len(seen))


def fused_ranks(fused: np.ndarray, targets: np.ndarray, run_ranks: list[np.ndarray], candidates: int) -> np.ndarray:
    """Ranks of ``targets`` under the fused candidate order (see the module docstring for targets outside it).

    Args:
        fused: the user's candidates, best first.
        targets: ``T`` target ids.
        run_ranks: per run, the ``T`` targets' full-catalog ranks in that run.
        candidates: ``C``, the depth taken from each run.

    >>> fused_ranks(np.array([7, 5, 3]), np.array([5, 8]), [np.array([1, 150]), np.array([3, 120])], 2).tolist()
    [2, 121]
    """
    position = {int(item): i + 1 for i, item in enumerate(fused.tolist())}
    best = np.min(np.stack(run_ranks), axis=0)
    return np.array([position.get(int(t), len(fused) + max(1, int(b) - candidates)) for t, b in zip(targets.tolist(), best.tolist())],
                    dtype=np.int64)  # fmt: skip


def evaluate_fused(runs: list[RunLists], fused_lists: list[np.ndarray], candidates: int, ks, save_top_k: int) -> RankingMetrics:
    """Per-user metrics of fused lists (one per user, in ``runs[0].users`` order), by the one evaluator's math."""
    metrics = RankingMetrics(ks)
    width = max((len(t) for t in runs[0].targets), default=1)
    ranks = np.zeros((len(fused_lists), width), dtype=np.int64)
    targets = np.full((len(fused_lists), width), -1, dtype=np.int64)
    top = np.full((len(fused_lists), save_top_k), -1, dtype=np.int64)
    for u, fused in enumerate(fused_lists):
        t = runs[0].targets[u]
        order = [np.array([dict(zip(run.targets[u].tolist(), run.ranks[u].tolist()))[x] for x in t.tolist()]) for run in runs]
        ranks[u, : len(t)] = fused_ranks(fused, t, order, candidates)
        targets[u, : len(t)] = t
        top[u, : min(save_top_k, len(fused))] = fused[:save_top_k]
    metrics.add(torch.from_numpy(runs[0].users), torch.from_numpy(targets), torch.from_numpy(ranks), torch.from_numpy(top))
    return metrics
