"""Binary-classification metrics over a whole split, across all ranks: exact AUC, logloss,
calibration, for one head (CTR) or several (multi-task).

Each rank holds predictions for its own rows only; AUC is not decomposable, so the
scores are gathered (tensor all-gathers) and ranked together, and every rank computes
the same result. At Criteo scale (~90M validation rows) that is ~0.7 GB of float32 pairs
on each rank: acceptable for evaluation, and exact, unlike binned approximations
(``torchrec.metrics``' AUC also gathers every prediction; its NE/calibration are the same
sums — ``tests/metrics/test_binary.py`` checks our values against torchrec's functions).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

LOGLOSS_EPS = 1e-7


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN if one class is absent.

    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    >>> roc_auc(np.array([0.5, 0.5]), np.array([0, 1]))
    0.5
    """
    labels = labels.astype(bool)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score
    rank_sum = average_rank[inverse][labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of ``probabilities`` against ``labels``.

    >>> round(log_loss(np.array([0.5, 0.5]), np.array([0, 1])), 4)
    0.6931
    """
    p = np.clip(probabilities.astype(np.float64), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D ``tensor`` of this rank's rows with every other rank's, in rank order.

    A tensor all-gather (sizes first, then padded rows), so it works on gloo and nccl
    alike; without a process group (or alone) it returns ``tensor``.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    size = torch.tensor([tensor.numel()], dtype=torch.int64, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.numel()] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])


def binary_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC, logloss, calibration (mean predicted / observed rate) and row count of one head.

    >>> m = binary_metrics(np.array([2.0, -1.0, 0.5, -3.0]), np.array([1.0, 0.0, 1.0, 0.0]))
    >>> m["auc"], m["rows"], round(m["calibration"], 3)
    (1.0, 4, 0.91)
    """
    probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    observed = float(labels.astype(np.float64).mean()) if labels.size else float("nan")
    return {
        "auc": roc_auc(probabilities, labels),
        "logloss": log_loss(probabilities, labels) if labels.size else float("nan"),
        "calibration": float(probabilities.mean()) / observed if labels.size and observed > 0 else float("nan"),
        "rows": int(labels.size),
    }


class BinaryEvaluator:
    """Exact AUC / logloss / calibration per head over a whole split, across all ranks.

    ``update`` runs the model on a batch and keeps, for every head of
    ``ModelOutput.predictions``, the logits and labels of real rows (weight > 0).
    ``compute`` gathers them from every rank (tensor all-gathers) and returns, per head
    ``h``, ``h/auc``, ``h/logloss``, ``h/calibration``, ``h/rows``; with one head also the
    plain keys ``auc``, ``logloss``, ``calibration``, ``rows``, and with several heads
    ``logloss`` = the mean over heads (what early stopping follows).
    """

    def __init__(self) -> None:
        self._logits: dict[str, list[torch.Tensor]] = {}
        self._labels: dict[str, list[torch.Tensor]] = {}

    def update(self, model: torch.nn.Module, batch) -> None:
        _, output = model(batch)
        self.add(output.predictions, output.labels, output.weights)

    def add(self, predictions: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], weights: torch.Tensor) -> None:
        """Keep the rows with weight > 0 of every head."""
        real = weights > 0
        for head, logits in predictions.items():
            self._logits.setdefault(head, []).append(logits[real].detach().float().cpu())
            self._labels.setdefault(head, []).append(labels[head][real].detach().float().cpu())

    def compute(self) -> dict[str, float]:
        """Metrics over the rows of every rank (collective: every rank calls it, all get the same)."""
        heads = sorted(self._logits)  # the same on every rank: every rank scores the same number of batches
        metrics: dict[str, float] = {}
        for head in heads:
            logits = gather_rows(torch.cat(self._logits.get(head, [torch.empty(0)])))
            labels = gather_rows(torch.cat(self._labels.get(head, [torch.empty(0)])))
            for name, value in binary_metrics(logits.numpy(), labels.numpy()).items():
                metrics[f"{head}/{name}"] = value
        if len(heads) == 1:
            metrics.update({name: metrics[f"{heads[0]}/{name}"] for name in ("auc", "logloss", "calibration", "rows")})
        elif heads:
            metrics["logloss"] = float(np.mean([metrics[f"{h}/logloss"] for h in heads]))
            metrics["auc"] = float(np.mean([metrics[f"{h}/auc"] for h in heads]))
            metrics["rows"] = metrics[f"{heads[0]}/rows"]
        return metrics
