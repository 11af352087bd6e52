"""Time to target over several objectives: when is every objective's validation AUC close enough?

A multi-task model (the home-feed ranker) is "as good as the baseline" only when **every**
objective is: a lever that speeds up click but loses chat has not reached the target. The
target of objective ``k`` is an AUC ``t_k`` (in the feed suite: the baseline's best
validation AUC of ``k``, averaged over seeds); a validation reaches the targets when::

    auc_k >= t_k - tolerance    for every objective k          (tolerance 0.002 by default)

The time to target is the training time (``train_seconds``: wall clock spent in training
steps, validation passes excluded, the same clock as samples/s) and the samples seen at the
first validation that reaches them. The same rule serves two places:

* online, :class:`~torchrec_app.tools.bench.callbacks.StopAtAUC` (``bench.target_aucs``)
  stops a run there;
* offline, :func:`first_reaching` finds it in a finished run's validation history
  (``metrics.jsonl``), for any tolerance, without rerunning.

Metric names are the evaluator's: ``<objective>/auc`` (``valid_<objective>/auc`` in
``metrics.jsonl``); the single-head key ``auc`` is the objective ``auc``.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Mapping

#: the default closeness to the target AUC (the issue's bar: within 0.002 of the baseline's best)
DEFAULT_TOLERANCE = 0.002


def objective_aucs(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{objective: auc}`` from evaluator metrics (``click/auc``) or a metrics.jsonl record (``prefix="valid_"``).

    >>> objective_aucs({"valid_click/auc": 0.7, "valid_chat/auc": 0.8, "valid_auc": 0.75, "step": 3}, "valid_")
    {'click': 0.7, 'chat': 0.8}
    """
    aucs = {}
    for key, value in metrics.items():
        if key.startswith(prefix) and key.endswith("/auc") and isinstance(value, (int, float)) and not isinstance(value, bool):
            aucs[key[len(prefix) : -len("/auc")]] = float(value)
    return aucs


def auc_of(metrics: Mapping[str, Any], objective: str, prefix: str = "") -> float:
    """Objective ``objective``'s AUC in ``metrics`` (``auc`` itself for ``objective == "auc"``); NaN if absent."""
    key = f"{prefix}auc" if objective == "auc" else f"{prefix}{objective}/auc"
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def shortfalls(metrics: Mapping[str, Any], targets: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """``{objective: target - auc}`` (positive: still short of the target; NaN AUC counts as infinitely short).

    >>> shortfalls({"click/auc": 0.70, "chat/auc": 0.81}, {"click": 0.71, "chat": 0.80})
    {'click': 0.01, 'chat': -0.01}
    """
    out = {}
    for objective, target in targets.items():
        auc = auc_of(metrics, objective, prefix)
        out[objective] = math.inf if math.isnan(auc) else round(target - auc, 12)
    return out


def targets_met(metrics: Mapping[str, Any], targets: Mapping[str, float], tolerance: float = DEFAULT_TOLERANCE,
                prefix: str = "") -> bool:  # fmt: skip
    """Whether every objective of ``targets`` has ``auc >= target - tolerance`` in ``metrics``.

    >>> targets_met({"click/auc": 0.709, "chat/auc": 0.80}, {"click": 0.71, "chat": 0.80})
    True
    >>> targets_met({"click/auc": 0.707, "chat/auc": 0.90}, {"click": 0.71, "chat": 0.80})
    False
    """
    return bool(targets) and all(short <= tolerance + 1e-12 for short in shortfalls(metrics, targets, prefix).values())


def first_reaching(evals: Iterable[Mapping[str, Any]], targets: Mapping[str, float], tolerance: float = DEFAULT_TOLERANCE,
                   prefix: str = "valid_") -> dict[str, Any] | None:  # fmt: skip
    """The first validation record (metrics.jsonl order) that meets ``targets``; None if none does.

    >>> evals = [{"step": 10, "valid_click/auc": 0.60, "train_seconds": 5.0},
    ...          {"step": 20, "valid_click/auc": 0.709, "train_seconds": 9.0}]
    >>> first_reaching(evals, {"click": 0.71})["step"], first_reaching(evals, {"click": 0.72})
    (20, None)
    """
    for record in evals:
        if targets_met(record, targets, tolerance, prefix):
            return dict(record)
    return None


def best_aucs(evals: Iterable[Mapping[str, Any]], objectives: Iterable[str], prefix: str = "valid_") -> dict[str, float]:
    """Each objective's best validation AUC over one run's history (objectives scored independently).

    >>> best_aucs([{"valid_a/auc": 0.6, "valid_b/auc": 0.9}, {"valid_a/auc": 0.7, "valid_b/auc": 0.8}], ["a", "b"])
    {'a': 0.7, 'b': 0.9}
    """
    evals = list(evals)
    best = {}
    for objective in objectives:
        values = [v for v in (auc_of(r, objective, prefix) for r in evals) if not math.isnan(v)]
        best[objective] = max(values) if values else math.nan
    return best


def targets_from_runs(histories: list[list[Mapping[str, Any]]], objectives: Iterable[str], prefix: str = "valid_") -> dict[str, float]:
    """The targets a baseline sets: per objective, the mean over its runs (seeds) of each run's best AUC.

    The mean, not the max over seeds: the max of noisy AUCs is a target even the baseline's
    own seeds mostly miss.

    >>> targets_from_runs([[{"valid_a/auc": 0.70}], [{"valid_a/auc": 0.60}, {"valid_a/auc": 0.72}]], ["a"])
    {'a': 0.71}
    """
    objectives = list(objectives)
    per_run = [best_aucs(history, objectives, prefix) for history in histories]
    targets = {}
    for o in objectives:
        values = [run[o] for run in per_run if not math.isnan(run[o])]
        targets[o] = round(statistics.fmean(values), 12) if values else math.nan
    return targets
