"""Ensembles of ranking runs: the priority heuristic, and reciprocal-rank fusion with weights fitted on validation.

Both order each user's candidates (the union of every run's top ``C``; :mod:`.lists`):

* **priority** (the hand-made baseline): items proposed by more runs first; among those
  proposed by as many, the item of the run with the highest priority (the order the runs
  are given in) first, then by its rank in that run;
* **weighted reciprocal-rank fusion** (Cormack et al. 2009, weighted): item ``i`` scores
  ``sum_m w_m / (k + r_m(i))`` over the runs whose top ``C`` holds it (``r`` 1-based), ties
  by the lower id. The weights are the point of the grid ``{w >= 0, sum w = 1}`` with step
  ``1 / weight_grid`` that maximises the validation split's mean ``fusion.fit_metric``;
  the test split is only scored with them, never looked at to choose them.

:func:`run_ensemble` evaluates both on test, with the one evaluator's math, against the
best single run (the run best on validation), paired user by user with a bootstrap
interval (:func:`~torchrec_app.metrics.ranking.paired_comparison`).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Sequence

import numpy as np

from torchrec_app.config.general import FusionConfig
from torchrec_app.metrics.ranking import paired_comparison, read_per_user
from torchrec_app.tools.fusion.lists import RunLists, details_path, evaluate_fused, list_depths, load_runs


def priority_order(runs: list[RunLists], user_index: int, candidates: int) -> np.ndarray:
    """One user's candidates by (runs proposing it desc, highest-priority proposing run, rank in it).

    >>> a = RunLists("a", np.array([0]), [np.array([1])], [np.array([1])], [np.array([5, 3, 9])], None)
    >>> b = RunLists("b", np.array([0]), [np.array([1])], [np.array([1])], [np.array([7, 9, 4])], None)
    >>> priority_order([a, b], 0, 3).tolist()   # 9 is in both; then a's list, then b's
    [9, 5, 3, 7, 4]
    """
    keys: dict[int, list] = {}
    for priority, run in enumerate(runs):
        for rank, item in enumerate(run.top[user_index][:candidates].tolist()):
            if item not in keys:
                keys[item] = [0, priority, rank]
            keys[item][0] -= 1
    return np.array(sorted(keys, key=lambda i: (*keys[i], i)), dtype=np.int64)


def rrf_order(runs: list[RunLists], user_index: int, candidates: int, weights: Sequence[float], k: float) -> np.ndarray:
    """One user's candidates by weighted reciprocal-rank fusion score (desc), ties by lower id.

    >>> a = RunLists("a", np.array([0]), [np.array([1])], [np.array([1])], [np.array([5, 3])], None)
    >>> b = RunLists("b", np.array([0]), [np.array([1])], [np.array([1])], [np.array([3, 7])], None)
    >>> rrf_order([a, b], 0, 2, [0.5, 0.5], 60).tolist(), rrf_order([a, b], 0, 2, [1.0, 0.0], 60).tolist()
    ([3, 5, 7], [5, 3, 7])
    """
    scores: dict[int, float] = {}
    for weight, run in zip(weights, runs):
        for rank, item in enumerate(run.top[user_index][:candidates].tolist(), start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return np.array(sorted(scores, key=lambda i: (-scores[i], i)), dtype=np.int64)


def simplex_grid(num_runs: int, steps: int) -> list[tuple[float, ...]]:
    """Every weight vector ``w >= 0`` with ``sum w = 1`` and entries multiples of ``1 / steps``.

    >>> simplex_grid(2, 2)
    [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    """
    points = []
    for combo in itertools.product(range(steps + 1), repeat=num_runs - 1):
        if sum(combo) <= steps:
            points.append(tuple(c / steps for c in combo) + ((steps - sum(combo)) / steps,))
    return points


def fit_rrf_weights(valid: list[RunLists], config: FusionConfig, ks) -> tuple[tuple[float, ...], float, list[dict]]:
    """The grid weights maximising mean ``config.fit_metric`` on the **validation** lists; ``(weights, value, tried)``."""
    best, best_value, tried = None, -np.inf, []
    for weights in simplex_grid(len(valid), config.weight_grid):
        fused = [rrf_order(valid, u, config.candidates, weights, config.rrf_k) for u in range(len(valid[0].users))]
        value = evaluate_fused(valid, fused, config.candidates, ks, 0).compute()[config.fit_metric]
        tried.append({"weights": list(weights), config.fit_metric: value})
        if value > best_value + 1e-12:
            best, best_value = weights, value
    return best, best_value, tried


def run_ensemble(runs: list[str], out_dir: str, config: FusionConfig, ks=(10, 20), save_top_k: int = 100) -> dict[str, Any]:
    """Fit fusion weights on valid, score priority and RRF on test, compare with the best single run; write ``out_dir``.

    Writes ``details/{valid,test}_{priority,rrf}.parquet`` and ``details/{valid,test}.parquet`` (the RRF
    ensemble: what ``torchrec-app compare`` reads) and returns the summary (also ``summary.json``).
    """
    from torchrec_app.utils.fs import write_json_atomic

    ks = tuple(ks)
    valid, test = load_runs(runs, "valid", config.candidates), load_runs(runs, "test", config.candidates)
    weights, valid_value, tried = fit_rrf_weights(valid, config, ks)
    singles = {run: read_per_user(details_path(run, "valid")).column(config.fit_metric).to_numpy().mean() for run in runs}
    best_single = max(runs, key=lambda r: singles[r])
    os.makedirs(os.path.join(out_dir, "details"), exist_ok=True)
    summary: dict[str, Any] = {"runs": runs, "priority_order": runs, "rrf_weights": list(weights), "rrf_k": config.rrf_k,
                               "candidates": config.candidates, "list_depths": list_depths(test), "fit_metric": config.fit_metric, "weights_tried": tried,
                               "best_single_run": best_single, "valid_single": {r: float(v) for r, v in singles.items()}}  # fmt: skip
    for split, lists in (("valid", valid), ("test", test)):
        users = range(len(lists[0].users))
        methods = {
            "priority": [priority_order(lists, u, config.candidates) for u in users],
            "rrf": [rrf_order(lists, u, config.candidates, weights, config.rrf_k) for u in users],
        }
        for method, fused in methods.items():
            metrics = evaluate_fused(lists, fused, config.candidates, ks, save_top_k)
            summary[f"{split}_{method}"] = metrics.compute()
            metrics.write_per_user(os.path.join(out_dir, "details", f"{split}_{method}.parquet"))
            if method == "rrf":
                metrics.write_per_user(os.path.join(out_dir, "details", f"{split}.parquet"))
    single = read_per_user(details_path(best_single, "test"))
    summary["test_best_single"] = {m: float(single.column(m).to_numpy().mean()) for m in single.column_names if "@" in m or m == "mrr"}
    summary["test_vs_best_single"] = {
        method: [paired_comparison(single, read_per_user(os.path.join(out_dir, "details", f"test_{method}.parquet")), metric)
                 for metric in [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")] + ["mrr"]]
        for method in ("priority", "rrf")
    }  # fmt: skip
    write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
    return summary
