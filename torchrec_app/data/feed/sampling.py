"""The data-side training-time levers: which train rows to keep, and with what loss weight.

Each lever is a function from the train split to a keep mask (and, for the core-set, an
``importance`` per kept row). Valid and test are never sampled, so a lever's cost in
quality is measured on the same full-rate rows as the baseline's.

* **Negative downsampling** (:func:`negative_downsample`): keep every row with any positive
  label and a fraction ``r`` of all-negative rows. The kept data over-represents positives
  by ``1 / r``; the model corrects its probabilities with ``r`` (an auxiliary "any
  positive" head ``q_a``: ``logit p_a = logit q_a + log r`` and
  ``p_k = q_k r / (1 - (1 - r) q_a)``), so ``r`` is recorded in the dataset's metadata
  (``extra.sampling.negative_keep_rate``) and importance stays 1.
* **User / session subsampling** (:func:`keep_groups`): keep all rows of a fraction of users
  (or sessions), chosen by a hash of the id and the seed, so the same user is in or out in
  every file and every rerun. Uniform over groups: no reweighting needed.
* **Core-set selection** (:func:`coreset_probabilities`, :func:`importance_weights`): keep
  row ``i`` with probability ``p_i = rate ((1 - mix) l_i / mean(l) + mix)`` (capped at 1, the
  excess handed to the others so ``sum p = rate N``), where ``l_i`` is a proxy loss (rows
  the proxy finds hard are kept more often; the uniform share ``mix`` bounds the
  weights by ``1 / (rate mix)``), and weight a kept row by ``1 / p_i`` (an unbiased
  estimate of the full-data loss), self-normalised so the kept rows' mean importance is 1
  (the learning rate keeps its meaning). The proxy loss comes from :func:`proxy_losses`
  (a multi-output logistic model fitted here in one pass) or a previous run's per-row
  losses.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from torchrec_app.data.feed.batch import OBJECTIVES
from torchrec_app.data.feed.schema import DENSE_FEATURES, LABEL_COLUMNS, POOLED_FEATURES, SEQUENCE_FEATURES, VOCABULARY_OF

_MIX = np.uint64(0x9E3779B97F4A7C15)


def uniform_hash(ids: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """A uniform number in ``[0, 1)`` per id, a function of (id, seed, salt) only (splitmix64).

    >>> u = uniform_hash(np.array([1, 2, 1]), seed=0)
    >>> bool(u[0] == u[2]), bool(0 <= u.min() and u.max() < 1)
    (True, True)
    """
    with np.errstate(over="ignore"):
        z = np.asarray(ids).astype(np.uint64) + np.uint64((seed * 1_000_003 + salt * 7_919) & 0xFFFFFFFFFFFF) * _MIX
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def keep_groups(ids: np.ndarray, rate: float, seed: int, salt: int) -> np.ndarray:
    """Mask of rows whose group (user or session id) is among the kept ``rate`` of groups.

    >>> keep_groups(np.array([5, 5, 6]), 1.0, seed=0, salt=1).tolist()
    [True, True, True]
    """
    if rate >= 1.0:
        return np.ones(len(ids), dtype=bool)
    return uniform_hash(ids, seed, salt) < rate


def any_positive(labels: np.ndarray) -> np.ndarray:
    """``N`` bool: whether a row has any positive label (``labels``: ``N x len(OBJECTIVES)``)."""
    return labels.astype(bool).any(axis=1)


def negative_downsample(labels: np.ndarray, rate: float, seed: int, stream: int = 0) -> np.ndarray:
    """Mask keeping every row with a positive label and a ``rate`` fraction of all-negative rows
    (the draws: a function of ``seed`` and ``stream``, e.g. the input file's index).

    >>> labels = np.array([[1, 0], [0, 0], [0, 1], [0, 0]])
    >>> negative_downsample(labels, 1.0, seed=0).tolist()
    [True, True, True, True]
    >>> negative_downsample(labels, 1e-9, seed=0).tolist()
    [True, False, True, False]
    """
    positive = any_positive(labels)
    if rate >= 1.0:
        return np.ones(len(labels), dtype=bool)
    draws = np.random.default_rng([seed, 17, stream]).random(len(labels))
    return positive | (draws < rate)


def coreset_probabilities(losses: np.ndarray, rate: float, mix: float) -> np.ndarray:
    """Keep probability of each row: ``rate ((1 - mix) l / mean(l) + mix)``, capped at 1 with the
    excess spread over the uncapped rows, so the expected number kept is ``rate N``.

    >>> p = coreset_probabilities(np.array([1.0, 1.0, 1.0, 97.0]), rate=0.5, mix=0.0)
    >>> p.round(3).tolist(), round(float(p.sum()), 6)
    ([0.333, 0.333, 0.333, 1.0], 2.0)
    """
    losses = np.maximum(np.asarray(losses, dtype=np.float64), 0.0)
    n = len(losses)
    if n == 0:
        return np.zeros(0)
    mean = losses.mean()
    share = losses / mean if mean > 0 else np.ones(n)
    p = rate * ((1.0 - mix) * share + mix)
    for _ in range(64):  # water-filling: cap at 1, rescale the rest to keep the total
        capped = p >= 1.0
        if not capped.any() or p[~capped].sum() <= 0:
            break
        target = rate * n - capped.sum()
        scale = target / p[~capped].sum()
        if abs(scale - 1.0) < 1e-12:
            break
        p = np.where(capped, 1.0, p * scale)
    return np.minimum(p, 1.0)


def importance_weights(probabilities: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``1 / p`` of the kept rows, self-normalised to mean 1 over them.

    >>> importance_weights(np.array([0.5, 1.0, 0.25]), np.array([True, True, True])).round(4).tolist()
    [0.8571, 0.4286, 1.7143]
    """
    weights = 1.0 / probabilities[kept]
    return weights * (len(weights) / weights.sum()) if len(weights) else weights


def draw_coreset(probabilities: np.ndarray, seed: int) -> np.ndarray:
    """Mask of the rows kept: row ``i`` independently with probability ``probabilities[i]``."""
    return np.random.default_rng([seed, 23]).random(len(probabilities)) < probabilities


def labels_of(table: pa.Table) -> np.ndarray:
    """``N x len(OBJECTIVES)`` int8 labels of a (raw or preprocessed) feed table."""
    return np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in LABEL_COLUMNS], axis=1).astype(np.int8)


def proxy_losses(table: pa.Table, sizes: dict[str, int], seed: int, epochs: int = 1, batch_size: int = 4096) -> np.ndarray:
    """Per-row proxy loss of a preprocessed train table: a fast multi-output logistic model's.

    The proxy is linear: every id of every feature (pooled ids, the candidate, the history
    items as bags) gets a weight per objective, dense features a linear term. It is fitted
    for ``epochs`` passes with Adagrad, and each row's loss is its binary cross-entropy summed
    over objectives, each objective's divided by its mean (so rare objectives count as much as
    common ones). Linear in the ids, it cannot see history x candidate effects: a proxy for
    "hard rows", not a model.

    Args:
        table: preprocessed rows (vocabulary indices).
        sizes: rows of each vocabulary (``metadata.extra.vocabulary_sizes``).

    Returns:
        ``N`` float64 losses.
    """
    n = table.num_rows
    if n == 0:
        return np.zeros(0)
    bases, offset = {}, 0
    for name, size in sizes.items():
        bases[name], offset = offset, offset + size
    columns = [*POOLED_FEATURES, *SEQUENCE_FEATURES]
    values, lengths = [], []
    for name in columns:
        column = table.column(name).combine_chunks()
        base = bases[VOCABULARY_OF[name]]
        if pa.types.is_list(column.type):
            lengths.append(pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64))
            values.append(pc.list_flatten(column).to_numpy().astype(np.int64) + base)
        else:
            lengths.append(np.ones(n, dtype=np.int64))
            values.append(column.to_numpy().astype(np.int64) + base)
    # one bag per row holding its ids of every feature: feature f's ids of row r go after the row's
    # ids of features < f (a scatter, no sort)
    row_lengths = np.stack(lengths, axis=1).sum(axis=1)
    row_starts = np.concatenate([[0], np.cumsum(row_lengths)[:-1]])
    flat = np.empty(int(row_lengths.sum()), dtype=np.int64)
    before = np.zeros(n, dtype=np.int64)
    for length, value in zip(lengths, values):
        first = np.concatenate([[0], np.cumsum(length)[:-1]])
        flat[np.repeat(row_starts + before - first, length) + np.arange(len(value))] = value
        before += length
    offsets = np.concatenate([[0], np.cumsum(row_lengths)])
    dense = torch.from_numpy(np.stack([table.column(c).to_numpy() for c in DENSE_FEATURES], axis=1).astype(np.float32))
    labels = torch.from_numpy(labels_of(table).astype(np.float32))
    rates = labels.mean(dim=0).clamp(1e-4, 1 - 1e-4)
    # the model: logits = sum of the rows' id weights + dense @ W + b; Adagrad with the gradient written
    # out (sigmoid(logits) - labels, scattered to the ids), which beats autograd's sparse coalesce here
    weight = torch.zeros(offset, len(OBJECTIVES))
    dense_weight = torch.zeros(len(DENSE_FEATURES), len(OBJECTIVES))
    bias = torch.log(rates / (1 - rates))
    params = [weight, dense_weight, bias]
    squares = [torch.zeros_like(t) for t in params]
    lr, eps = 0.05, 1e-10
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")

    def logits_of(rows: torch.Tensor, ids: torch.Tensor, bag_offsets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding_bag(ids, weight, bag_offsets, mode="sum") + dense[rows] @ dense_weight + bias

    def batches(order: np.ndarray):
        """(rows, ids, bag offsets, bag lengths) of consecutive ``batch_size`` rows of ``order``: the bags
        are laid out in that order once, so every batch is a contiguous slice."""
        lengths = row_lengths[order]
        starts = np.concatenate([[0], np.cumsum(lengths)])
        ids = torch.from_numpy(flat[np.repeat(offsets[order] - starts[:-1], lengths) + np.arange(int(starts[-1]))])
        starts_t, lengths_t = torch.from_numpy(starts), torch.from_numpy(lengths)
        for lo in range(0, len(order), batch_size):
            hi = min(lo + batch_size, len(order))
            yield torch.from_numpy(order[lo:hi]), ids[starts_t[lo] : starts_t[hi]], starts_t[lo:hi] - starts_t[lo], lengths_t[lo:hi]

    rng = np.random.default_rng([seed, 29])
    for _ in range(epochs):
        for rows, ids, bag_offsets, lengths in batches(rng.permutation(n)):
            error = (torch.sigmoid(logits_of(rows, ids, bag_offsets)) - labels[rows]) / len(rows)  # d mean loss / d logits
            grads = [
                torch.zeros_like(weight).index_add_(0, ids, error.repeat_interleave(lengths, dim=0)),
                dense[rows].T @ error,
                error.sum(dim=0),
            ]
            for param, square, grad in zip(params, squares, grads):
                square.add_(grad * grad)
                param.sub_(lr * grad / (square.sqrt() + eps))
    per_objective = torch.cat([loss_fn(logits_of(rows, ids, o), labels[rows]) for rows, ids, o, _ in batches(np.arange(n))])
    normalised = per_objective / per_objective.mean(dim=0).clamp_min(1e-12)
    return normalised.sum(dim=1).double().numpy()
