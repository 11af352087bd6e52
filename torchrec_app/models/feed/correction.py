"""Undo negative downsampling's bias: calibrated probabilities from a model trained on sampled data.

The sampling lever (``preprocess`` of feed data with negative downsampling, docs/DATA.md)
keeps every row with at least one positive label and a fraction ``r`` of the all-negative
rows, and records ``r`` in the dataset's metadata (``extra.sampling.negative_keep_rate``).
A model trained on the kept rows learns, for each objective ``k`` and for the auxiliary
"any positive" objective ``a`` (``y_a = max_k y_k``)::

    q_k(x) = P(y_k = 1 | x, kept),   q_a(x) = P(y_a = 1 | x, kept)

A row is kept with probability ``D(x) = p_a + r (1 - p_a)``, and ``y_k = 1`` implies kept,
so ``q_k = p_k / D`` and ``q_a = p_a / D``. Solving for the full-rate probabilities ``p``
gives the exact corrections (no assumption on how the objectives correlate)::

    logit p_a = logit q_a + log r
    p_k = q_k * r / (1 - (1 - r) q_a)          (= q_k * D, since 1 - (1 - r) q_a = r / D)

Without them the predicted rate of a rare objective is too high by about ``1 / r`` (for a
rare ``k``, ``D ~ r``). Everything here works on logits, in log space, so that rare
objectives' tiny probabilities keep their precision::

    log p_k = log sigmoid(z_k) + log r - softplus(z_a + log r) + softplus(z_a)

(``1 - (1 - r) sigmoid(z) = (1 + r e^z) / (1 + e^z)``). The feed model adds the ``any`` head
when the dataset was downsampled; its evaluator and serving report the corrected logits.

Example::

    >>> q_k, q_a, r = torch.tensor([0.2]), torch.tensor([0.5]), 0.1
    >>> corrected = corrected_logits(torch.logit(q_k), torch.logit(q_a), r)
    >>> round(float(torch.sigmoid(corrected)), 6), round(float(q_k * r / (1 - (1 - r) * q_a)), 6)
    (0.036364, 0.036364)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from torchrec_app.config.errors import ConfigError

#: the auxiliary head's name (a head of ModelOutput.predictions, not an objective of the data)
ANY_HEAD = "any"


def negative_keep_rate(extra: dict[str, Any] | None, source: str = "metadata.json") -> float:
    """``r`` of a dataset's metadata ``extra`` (``extra.sampling.negative_keep_rate``; 1.0 when absent).

    >>> negative_keep_rate({"sampling": {"negative_keep_rate": 0.25}}), negative_keep_rate({})
    (0.25, 1.0)
    >>> negative_keep_rate({"sampling": {"negative_keep_rate": 0}})
    Traceback (most recent call last):
    ...
    torchrec_app.config.errors.ConfigError: metadata.json: extra.sampling.negative_keep_rate must be a number in (0, 1], got 0
    """
    value = ((extra or {}).get("sampling") or {}).get("negative_keep_rate", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ConfigError(f"{source}: extra.sampling.negative_keep_rate must be a number in (0, 1], got {value!r}")
    return float(value)


def any_positive(labels: torch.Tensor) -> torch.Tensor:
    """``B x T`` labels in {0, 1} -> ``B``: 1 where any objective is positive (the ``any`` head's label).

    >>> any_positive(torch.tensor([[0.0, 1.0], [0.0, 0.0]])).tolist()
    [1.0, 0.0]
    """
    return labels.amax(dim=-1)


def corrected_any_logit(any_logit: torch.Tensor, keep_rate: float) -> torch.Tensor:
    """``logit p_a = logit q_a + log r`` (any shape).

    >>> round(float(torch.sigmoid(corrected_any_logit(torch.tensor(0.0), 0.25))), 4)  # q_a = 1/2 -> p_a = r / (1 + r)
    0.2
    """
    _check_rate(keep_rate)
    return any_logit + math.log(keep_rate)


def corrected_log_probability(logits: torch.Tensor, any_logit: torch.Tensor, keep_rate: float) -> torch.Tensor:
    """``log p_k`` from the sampled-data logits ``z_k`` and the ``any`` head's ``z_a``.

    Args:
        logits: ``B x T`` (or ``B``) logits of the objectives, trained on the kept rows.
        any_logit: ``B`` logits of the any-positive head, trained on the same rows.
        keep_rate: ``r`` in (0, 1], the fraction of all-negative rows kept.

    Returns:
        The same shape as ``logits``: ``log sigmoid(z_k) + log r - softplus(z_a + log r) + softplus(z_a)``, at most 0.
    """
    _check_rate(keep_rate)
    log_r = math.log(keep_rate)
    if logits.dim() == any_logit.dim() + 1:
        any_logit = any_logit.unsqueeze(-1)
    log_keep = log_r - F.softplus(any_logit + log_r) + F.softplus(any_logit)  # log D = log r - log(1 - (1 - r) q_a)
    return (F.logsigmoid(logits) + log_keep).clamp(max=0.0)


def corrected_logits(logits: torch.Tensor, any_logit: torch.Tensor, keep_rate: float) -> torch.Tensor:
    """``logit p_k`` (what metrics and serving read), same shape as ``logits``; ``logits`` itself when ``r = 1``.

    >>> z = torch.tensor([[-3.0, 1.0]])
    >>> torch.equal(corrected_logits(z, torch.tensor([2.0]), 1.0), z)
    True
    """
    if keep_rate == 1.0:
        _check_rate(keep_rate)
        return logits
    log_p = corrected_log_probability(logits, any_logit, keep_rate)
    # logit = log p - log(1 - p), with log(1 - p) = log(-expm1(log p)), finite while p < 1
    return log_p - torch.log(-torch.expm1(log_p).clamp(max=-torch.finfo(log_p.dtype).tiny))


def _check_rate(keep_rate: float) -> None:
    if not 0.0 < keep_rate <= 1.0:
        raise ConfigError(f"negative keep rate must be in (0, 1], got {keep_rate}")


def downsampling_correction(objectives: list[str], keep_rate: float):
    """The evaluator's transform (:class:`~torchrec_app.metrics.multitask.MultiTaskEvaluator`): a batch's
    ``{head: logits B}`` with each objective's logits replaced by :func:`corrected_logits` and the
    ``any`` head's by :func:`corrected_any_logit`; other heads pass unchanged.

    >>> transform = downsampling_correction(["chat"], 0.1)
    >>> out = transform({"chat": torch.logit(torch.tensor([0.2])), ANY_HEAD: torch.logit(torch.tensor([0.5]))})
    >>> round(float(torch.sigmoid(out["chat"])), 6), round(float(torch.sigmoid(out[ANY_HEAD])), 6)
    (0.036364, 0.090909)
    """
    _check_rate(keep_rate)

    def correct(predictions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if ANY_HEAD not in predictions:
            raise ConfigError(f"the data kept {keep_rate:g} of all-negative rows, so calibrated probabilities need the "
                              f"'{ANY_HEAD}' head: set model.feed.any_head=auto or on")  # fmt: skip
        any_logit = predictions[ANY_HEAD]
        corrected = dict(predictions)
        for name in objectives:
            corrected[name] = corrected_logits(predictions[name], any_logit, keep_rate)
        corrected[ANY_HEAD] = corrected_any_logit(any_logit, keep_rate)
        return corrected

    return correct
