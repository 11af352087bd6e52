"""Exact AUC / logloss / calibration, checked against TorchRec's metric functions and across ranks."""

from __future__ import annotations

import math

import numpy as np
import torch
from torchrec.metrics.auc import compute_auc
from torchrec.metrics.ne import compute_cross_entropy

from tests.multiprocess import run_on_ranks
from torchrec_app.metrics.binary import LOGLOSS_EPS, BinaryEvaluator, binary_metrics


def _predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    logits = (rng.normal(size=n) + 1.5 * labels).astype(np.float32)  # distinct values: no ties
    return logits, labels


def test_auc_and_logloss_equal_torchrecs_on_a_fixed_prediction_set():
    logits, labels = _predictions(5000, 0)
    ours = binary_metrics(logits, labels)
    p = torch.sigmoid(torch.from_numpy(logits).double())
    ones = torch.ones(len(labels), dtype=torch.float64)
    torchrec_auc = compute_auc(1, [p.float().view(1, -1)], [torch.from_numpy(labels).view(1, -1)], [ones.float().view(1, -1)]).item()
    torchrec_ce_bits = compute_cross_entropy(torch.from_numpy(labels).double(), p, ones, LOGLOSS_EPS).sum().item()
    assert abs(ours["auc"] - torchrec_auc) < 1e-6
    assert abs(ours["logloss"] - torchrec_ce_bits * math.log(2) / len(labels)) < 1e-9  # torchrec sums log2
    assert abs(ours["calibration"] - p.mean().item() / labels.astype(np.float64).mean()) < 1e-9


def _gathered(runtime, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    rows = len(labels) // runtime.world_size
    mine = slice(runtime.rank * rows, (runtime.rank + 1) * rows)
    evaluator = BinaryEvaluator()
    weights = torch.ones(rows)
    weights[-3:] = 0.0  # padding rows count nowhere
    evaluator.add({"click": torch.from_numpy(logits[mine])}, {"click": torch.from_numpy(labels[mine])}, weights)
    return evaluator.compute()


def test_metrics_over_two_ranks_equal_one_process_over_the_union():
    logits, labels = _predictions(2000, 1)
    per_rank = run_on_ranks(_gathered, 2, logits, labels)
    keep = np.ones(len(labels), bool)
    keep[997:1000] = keep[1997:2000] = False  # the padding rows of each rank
    expected = binary_metrics(logits[keep], labels[keep])
    for result in per_rank:
        assert result["rows"] == 1994
        for name in ("auc", "logloss", "calibration"):
            assert result[name] == expected[name] and result[f"click/{name}"] == expected[name]


def test_several_heads_are_scored_separately_and_logloss_is_their_mean():
    a_logits, a_labels = _predictions(500, 2)
    b_logits, b_labels = _predictions(500, 3)
    evaluator = BinaryEvaluator()
    evaluator.add({"a": torch.from_numpy(a_logits), "b": torch.from_numpy(b_logits)},
                  {"a": torch.from_numpy(a_labels), "b": torch.from_numpy(b_labels)}, torch.ones(500))
    metrics = evaluator.compute()
    assert metrics["a/auc"] == binary_metrics(a_logits, a_labels)["auc"]
    assert metrics["b/auc"] == binary_metrics(b_logits, b_labels)["auc"]
    assert metrics["logloss"] == (metrics["a/logloss"] + metrics["b/logloss"]) / 2
