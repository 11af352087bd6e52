"""Full-ranking evaluation of recommenders: one protocol and one set of numbers for every model.

A recommender is scored per user against **every item of the catalog** (no sampled
negatives). For a user ``u`` with held-out target items ``T_u`` (one for next-item
recommendation, several for the general recommenders), items the user has already seen
are removed from the ranking (``mask_seen``; the targets themselves are never removed),
and each target gets its rank in the remaining catalog::

    rank(t) = 1 + #{ j unmasked, j != t : s_j > s_t  or  (s_j == s_t and j < t) }

i.e. items are ordered by score, ties broken by the lower item id, so ranks are exact,
deterministic and decomposable: the count is a sum over any partition of the catalog
into blocks (or row shards on different ranks, see ``docs/SEQUENTIAL.md``). From the
ranks ``r_1..r_T`` of a user's ``T`` targets, with ``m = min(K, T)``:

* ``Recall@K = #{i : r_i <= K} / m`` (hit rate for ``T = 1``; normalised by ``min(K, T)``
  as in Liang et al. 2018, Multi-VAE, so a perfect model scores 1 for every ``T``),
* ``NDCG@K  = sum_{i : r_i <= K} 1 / log2(r_i + 1)  /  sum_{j=1..m} 1 / log2(j + 1)``,
* ``MRR     = 1 / min_i r_i`` (over the full ranking, not truncated at K),

each averaged over users (every user weighs the same, whatever ``T``). Ks are 10 and 20
unless configured.

Inputs are deliberately plain, so every model family can use the same evaluator:

* user ids ``B``, targets ``B x T`` (``-1`` pads users with fewer targets) and the items to
  mask (a list of id arrays, or ``B x S`` padded with ``-1``);
* and either **scores over item blocks** (``B x n`` scores of items ``first .. first+n-1``,
  fed block by block to :class:`BlockRanker`, with the targets' scores given up front) or a
  full ``B x N`` score matrix (:func:`rank_full_scores`), or **ranks already computed**
  (sharded scoring computes them across ranks) fed to :class:`RankingMetrics`.

:class:`RankingMetrics` keeps per-user results; ``compute()`` averages them over the users
of every rank (a collective), ``per_user_table()`` / ``write_per_user()`` save one row per
user (Parquet: user, targets, ranks, each metric, top-K list), and
:func:`paired_comparison` compares two models' per-user files with a paired t or
bootstrap confidence interval.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from torchrec_app.utils.fs import atomic_path

DEFAULT_KS = (10, 20)


# ------------------------------------------------------------------ metric math from ranks


def metrics_from_ranks(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, torch.Tensor]:
    """Per-user Recall@K, NDCG@K and MRR from the ranks of each user's targets.

    Args:
        ranks: ``B x T`` 1-based ranks of each user's targets in the full (masked) ranking;
            ``0`` (or less) pads users with fewer than ``T`` targets. Every user needs >= 1 target.
        ks: cut-offs.

    Returns:
        ``{"recall@K": B, "ndcg@K": B, ..., "mrr": B}`` float64 tensors.

    >>> m = metrics_from_ranks(torch.tensor([[1], [3], [15], [100]]), ks=(10,))
    >>> [round(v, 4) for v in m["recall@10"].tolist()], [round(v, 4) for v in m["ndcg@10"].tolist()]
    ([1.0, 1.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0])
    >>> [round(v, 4) for v in m["mrr"].tolist()]
    [1.0, 0.3333, 0.0667, 0.01]
    >>> two = metrics_from_ranks(torch.tensor([[2, 5]]), ks=(1, 10))  # two targets, ranked 2nd and 5th
    >>> round(two["recall@1"].item(), 4), round(two["recall@10"].item(), 4), round(two["ndcg@10"].item(), 4)
    (0.0, 1.0, 0.6241)
    """
    ranks = ranks.to(torch.float64)
    if ranks.dim() == 1:
        ranks = ranks[:, None]
    real = ranks > 0
    num_targets = real.sum(dim=1)
    if bool((num_targets == 0).any()):
        raise ValueError("every user needs at least one target with a rank >= 1 (0 pads missing targets)")
    gains = torch.where(real, 1.0 / torch.log2(ranks.clamp(min=1) + 1.0), torch.zeros_like(ranks))
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = real & (ranks <= k)
        ideal_count = num_targets.clamp(max=k)
        ideal = torch.cumsum(1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64)), 0)[ideal_count - 1]
        out[f"recall@{k}"] = hit.sum(dim=1).double() / ideal_count
        out[f"ndcg@{k}"] = torch.where(hit, gains, torch.zeros_like(gains)).sum(dim=1) / ideal
    best = torch.where(real, ranks, torch.full_like(ranks, math.inf)).min(dim=1).values
    out["mrr"] = 1.0 / best
    return out


# ------------------------------------------------------------------ ranks from scores


def _padded(items: torch.Tensor | Sequence[Sequence[int]] | None, rows: int) -> torch.Tensor:
    """``rows x S`` int64 ids padded with -1 from a padded tensor or a list of id lists."""
    if items is None:
        return torch.full((rows, 0), -1, dtype=torch.long)
    if isinstance(items, torch.Tensor):
        return items.long().reshape(rows, -1)
    width = max((len(x) for x in items), default=0)
    out = torch.full((rows, width), -1, dtype=torch.long)
    for i, x in enumerate(items):
        out[i, : len(x)] = torch.as_tensor(np.asarray(x, dtype=np.int64))
    return out


class BlockRanker:
    """Exact ranks and top-K lists of a batch of users, from scores fed one item block at a time.

    The catalog may be scored in any order of blocks ``[first, first + n)`` (each item exactly
    once over all blocks), so no process ever needs the full ``B x N`` score matrix or the
    whole item table: a rank holding rows ``[a, b)`` of the item table feeds that block.
    Items outside ``[min_item, num_items)`` (e.g. a padding row 0) are ignored.

    Args:
        targets: ``B x T`` target item ids (``-1`` pads).
        target_scores: ``B x T`` the model's score of each target (computed beforehand, e.g.
            by a sharded lookup of the targets' embeddings).
        seen: items to remove from each user's ranking (``B x S`` padded with -1, or lists);
            a target is never removed, even if also seen.
        k: length of the top-K list kept per user (0: none).
        min_item: the first real item id (1 when id 0 is padding).

    >>> scores = torch.tensor([[0.0, 0.9, 0.5, 0.7, 0.1]])   # items 0..4, item 0 is padding
    >>> r = BlockRanker(torch.tensor([[2]]), torch.tensor([[0.5]]), seen=[[1]], k=2, min_item=1)
    >>> r.add_block(scores[:, :3], first=0); r.add_block(scores[:, 3:], first=3)
    >>> ranks, top_ids, _ = r.result()
    >>> ranks.tolist(), top_ids.tolist()   # item 1 is seen (masked); item 3 beats the target
    ([[2]], [[3, 2]])
    """

    def __init__(
        self,
        targets: torch.Tensor,
        target_scores: torch.Tensor,
        seen: torch.Tensor | Sequence[Sequence[int]] | None = None,
        k: int = 0,
        min_item: int = 0,
    ) -> None:
        self.targets = targets.long().reshape(targets.shape[0], -1)
        self.target_scores = target_scores.float().reshape(self.targets.shape)
        rows = self.targets.shape[0]
        self.seen = _padded(seen, rows).to(self.targets.device)
        self.k = k
        self.min_item = min_item
        self.better = torch.zeros_like(self.targets)
        self.top_scores = torch.full((rows, 0), -math.inf, device=self.targets.device)
        self.top_ids = torch.full((rows, 0), -1, dtype=torch.long, device=self.targets.device)

    def add_block(self, scores: torch.Tensor, first: int) -> None:
        """Count, for each target, the unmasked items of this block ranked above it; update the top-K."""
        rows, n = scores.shape
        scores = scores.float()
        ids = torch.arange(first, first + n, device=scores.device)
        masked = (ids < self.min_item)[None, :].expand(rows, n).clone()
        if self.seen.numel():
            local = self.seen - first
            in_block = (local >= 0) & (local < n) & (self.seen >= self.min_item)
            # a target is never masked, even if seen
            is_target = (self.seen[:, :, None] == self.targets[:, None, :]).any(dim=2)
            keep = in_block & ~is_target
            row_index = torch.arange(rows, device=scores.device)[:, None].expand_as(local)
            masked[row_index[keep], local[keep]] = True
        ts = self.target_scores[:, :, None]
        ti = self.targets[:, :, None]
        beats = (scores[:, None, :] > ts) | ((scores[:, None, :] == ts) & (ids[None, None, :] < ti))
        beats &= ~masked[:, None, :] & (ids[None, None, :] != ti)
        self.better += beats.sum(dim=2)
        if self.k:
            block = scores.masked_fill(masked, -math.inf)
            self._merge_top(block, ids.expand(rows, n))

    def _merge_top(self, scores: torch.Tensor, ids: torch.Tensor) -> None:
        scores = torch.cat([self.top_scores, scores], dim=1)
        ids = torch.cat([self.top_ids, ids], dim=1)
        self.top_scores, self.top_ids = top_k_by_score_then_id(scores, ids, self.k)

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ranks B x T (0 for padded targets), top-K ids B x K, top-K scores B x K)``."""
        ranks = torch.where(self.targets >= 0, self.better + 1, torch.zeros_like(self.better))
        return ranks, self.top_ids, self.top_scores


def top_k_by_score_then_id(scores: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best ``(score desc, id asc)`` of each row; entries scored ``-inf`` sort last.

    >>> top_k_by_score_then_id(torch.tensor([[1.0, 2.0, 2.0, 0.5]]), torch.tensor([[4, 9, 3, 1]]), 3)
    (tensor([[2., 2., 1.]]), tensor([[3, 9, 4]]))
    """
    order = torch.argsort(ids, dim=1, stable=True)  # ids ascending, then a stable sort by score
    scores, ids = scores.gather(1, order), ids.gather(1, order)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), ids.gather(1, order)


def rank_full_scores(
    scores: torch.Tensor,
    targets: torch.Tensor,
    seen: torch.Tensor | Sequence[Sequence[int]] | None = None,
    k: int = 0,
    min_item: int = 0,
    block_items: int = 65536,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ranks and top-K from a full ``B x N`` score matrix (item ``i`` is column ``i``).

    For models that can score the whole catalog on one process (EASE, Multi-VAE, an
    unsharded model). Returns what :meth:`BlockRanker.result` returns.

    >>> ranks, top, _ = rank_full_scores(torch.tensor([[0.3, 0.1, 0.2]]), torch.tensor([[1]]), k=2)
    >>> ranks.tolist(), top.tolist()
    ([[3]], [[0, 2]])
    """
    targets = targets.long().reshape(scores.shape[0], -1)
    target_scores = scores.gather(1, targets.clamp(min=0))
    ranker = BlockRanker(targets, target_scores, seen, k, min_item)
    for first in range(0, scores.shape[1], block_items):
        ranker.add_block(scores[:, first : first + block_items], first)
    return ranker.result()


# ------------------------------------------------------------------ accumulating over a split


class RankingMetrics:
    """Per-user ranking results of one evaluation split, over every rank.

    Feed it ``add(users, targets, ranks, top_ids)`` for the real users of each batch
    (leave padding rows out); ``compute()`` is a collective returning the mean of each
    metric over all users of all ranks, plus ``users``.

    >>> m = RankingMetrics(ks=(10,))
    >>> m.add(torch.tensor([7, 8]), torch.tensor([[3], [4]]), torch.tensor([[1], [11]]))
    >>> m.compute()
    {'recall@10': 0.5, 'ndcg@10': 0.5, 'mrr': 0.5454545454545454, 'users': 2}
    """

    def __init__(self, ks: Sequence[int] = DEFAULT_KS) -> None:
        self.ks = tuple(ks)
        self._users: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._ranks: list[torch.Tensor] = []
        self._top: list[torch.Tensor] = []
        self._top_scores: list[torch.Tensor] = []
        self._gathered: dict[str, torch.Tensor] | None = None

    def add(self, users: torch.Tensor, targets: torch.Tensor, ranks: torch.Tensor, top_ids: torch.Tensor | None = None,
            top_scores: torch.Tensor | None = None) -> None:
        """Results of ``B`` real users: ids ``B``, targets and ranks ``B x T`` (-1 / 0 pad), top-K ids ``B x K``
        and, optionally, their scores ``B x K`` (saved as ``top_k_scores``, e.g. for a re-ranker's features)."""
        rows = users.shape[0]
        self._users.append(users.long().reshape(rows).cpu())
        self._targets.append(targets.long().reshape(rows, -1).cpu())
        self._ranks.append(ranks.long().reshape(rows, -1).cpu())
        self._top.append((top_ids if top_ids is not None else torch.empty(rows, 0)).long().reshape(rows, -1).cpu())
        self._top_scores.append((top_scores if top_scores is not None else torch.empty(rows, 0)).double().reshape(rows, -1).cpu())
        self._gathered = None

    def _local(self) -> dict[str, torch.Tensor]:
        return {
            "users": torch.cat(self._users) if self._users else torch.empty(0, dtype=torch.long),
            "targets": _cat_padded(self._targets, -1),
            "ranks": _cat_padded(self._ranks, 0),
            "top": _cat_padded(self._top, -1),
            "top_scores": _cat_padded(self._top_scores, -1) if self._top_scores else torch.empty(0, 0, dtype=torch.float64),
        }

    def gather(self) -> dict[str, torch.Tensor]:
        """Every rank's users, targets, ranks and top-K lists (a collective when distributed)."""
        if self._gathered is None:
            local = self._local()
            if dist.is_initialized() and dist.get_world_size() > 1:
                local = {name: _all_gather_rows(value, pad=0 if name == "ranks" else -1) for name, value in local.items()}
            self._gathered = local
        return self._gathered

    def compute(self) -> dict[str, float]:
        """Mean Recall@K, NDCG@K and MRR over the users of every rank (collective), and ``users``."""
        ranks = self.gather()["ranks"]
        if ranks.shape[0] == 0:
            return {**{f"{m}@{k}": math.nan for k in self.ks for m in ("recall", "ndcg")}, "mrr": math.nan, "users": 0}
        per_user = metrics_from_ranks(ranks, self.ks)
        return {**{name: float(v.mean()) for name, v in per_user.items()}, "users": int(ranks.shape[0])}

    def per_user_table(self) -> pa.Table:
        """One row per user, sorted by user: ``user, targets, ranks, <metric>... , top_k``."""
        data = self.gather()
        order = torch.argsort(data["users"], stable=True)
        users, targets, ranks, top, top_scores = (data[k][order] for k in ("users", "targets", "ranks", "top", "top_scores"))
        columns: dict[str, pa.Array] = {
            "user": pa.array(users.numpy(), pa.int64()),
            "targets": _list_column(targets, targets >= 0),
            "ranks": _list_column(ranks, ranks > 0),
        }
        if users.numel():
            for name, values in metrics_from_ranks(ranks, self.ks).items():
                columns[name] = pa.array(values.numpy(), pa.float64())
        else:
            for name in [f"{m}@{k}" for k in self.ks for m in ("recall", "ndcg")] + ["mrr"]:
                columns[name] = pa.array([], pa.float64())
        columns["top_k"] = _list_column(top, top >= 0)
        if top_scores.numel() and top_scores.shape == top.shape:
            columns["top_k_scores"] = _list_column(top_scores, top >= 0, pa.float64())
        return pa.table(columns)

    def write_per_user(self, path: str | os.PathLike) -> None:
        """Write :meth:`per_user_table` as Parquet, atomically (call on every rank; rank 0 writes)."""
        table = self.per_user_table()
        if dist.is_initialized() and dist.get_rank() != 0:
            return
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)


def _cat_padded(parts: list[torch.Tensor], pad: int) -> torch.Tensor:
    if not parts:
        return torch.full((0, 0), pad, dtype=torch.long)
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]), value=pad) for p in parts])


def _all_gather_rows(tensor: torch.Tensor, pad: int) -> torch.Tensor:
    """Concatenate every rank's ``rows x width`` (or ``rows``) tensor in rank order (any row counts and widths)."""
    world = dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    shape = torch.tensor([tensor.shape[0], tensor.shape[1] if tensor.dim() > 1 else 0], device=device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    rows = max(int(s[0]) for s in shapes)
    if tensor.dim() == 1:
        padded = torch.full((rows,), pad, dtype=tensor.dtype, device=device)
        padded[: tensor.shape[0]] = tensor.to(device)
    else:
        width = max(int(s[1]) for s in shapes)
        padded = torch.full((rows, width), pad, dtype=tensor.dtype, device=device)
        padded[: tensor.shape[0], : tensor.shape[1]] = tensor.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s[0])] for g, s in zip(gathered, shapes)]).cpu()


def _list_column(values: torch.Tensor, keep: torch.Tensor, value_type: pa.DataType = pa.int64()) -> pa.Array:
    lengths = keep.sum(dim=1).numpy() if values.numel() else np.zeros(values.shape[0], dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = values[keep].numpy() if values.numel() else np.zeros(0, dtype=np.int64)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, value_type))


# ------------------------------------------------------------------ comparing two models


def read_per_user(path: str | os.PathLike) -> pa.Table:
    """A per-user results file written by :meth:`RankingMetrics.write_per_user`."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"{path}: not a per-user results file ({err})") from None
    if "user" not in table.column_names or "targets" not in table.column_names:
        raise ValueError(f"{path}: not a per-user results file (columns {table.column_names}; expected user, targets, metrics)")
    return table


def paired_comparison(
    a: pa.Table,
    b: pa.Table,
    metric: str = "ndcg@10",
    method: str = "bootstrap",
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, float | str]:
    """Compare two models on the same users: mean difference ``b - a`` of ``metric`` and its interval.

    Users are matched by id and must have the same targets in both files (the same split);
    the difference is taken user by user (paired), which removes the between-user variance
    that dominates an unpaired comparison. ``method``: ``t`` (paired t-interval and
    two-sided p-value) or ``bootstrap`` (percentile interval over ``resamples`` resamples of
    users; p-value: twice the smaller tail share of resampled means beyond 0).

    >>> a = pa.table({"user": [1, 2, 3, 4], "targets": [[5], [6], [7], [8]], "ndcg@10": [0.0, 0.5, 0.2, 0.1]})
    >>> b = pa.table({"user": [4, 3, 2, 1], "targets": [[8], [7], [6], [5]], "ndcg@10": [0.3, 0.4, 0.6, 0.2]})
    >>> r = paired_comparison(a, b, method="t")
    >>> round(r["diff"], 3), r["users"], r["ci_low"] < r["diff"] < r["ci_high"]
    (0.175, 4, True)
    """
    for name, table in (("a", a), ("b", b)):
        if metric not in table.column_names:
            raise ValueError(f"per-user results {name} have no column {metric!r}; they have {table.column_names}")
    ua, ub = a.column("user").to_numpy(), b.column("user").to_numpy()
    if len(np.unique(ua)) != len(ua) or len(np.unique(ub)) != len(ub):
        raise ValueError("per-user results must have one row per user")
    common, ia, ib = np.intersect1d(ua, ub, return_indices=True)
    if len(common) != len(ua) or len(common) != len(ub):
        raise ValueError(
            f"the two per-user files cover different users ({len(ua)} and {len(ub)}, {len(common)} in common): "
            "compare runs evaluated on the same split"
        )
    ta, tb = a.column("targets").to_pylist(), b.column("targets").to_pylist()
    differing = [int(u) for u, i, j in zip(common, ia, ib) if sorted(ta[i]) != sorted(tb[j])]
    if differing:
        raise ValueError(f"users {differing[:5]} have different targets in the two files: compare runs evaluated on the same split")
    xa = a.column(metric).to_numpy()[ia].astype(np.float64)
    xb = b.column(metric).to_numpy()[ib].astype(np.float64)
    diff = xb - xa
    n = len(diff)
    mean = float(diff.mean()) if n else math.nan
    alpha = 1.0 - confidence
    if method == "t":
        se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        if se == 0:
            low = high = mean
            p = 1.0 if mean == 0 else 0.0
        else:
            q = student_t_quantile(1 - alpha / 2, n - 1)
            low, high = mean - q * se, mean + q * se
            p = 2 * (1 - student_t_cdf(abs(mean) / se, n - 1))
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = np.empty(resamples)
        for start in range(0, resamples, 1000):  # bounded memory: 1000 x n indices at a time
            stop = min(resamples, start + 1000)
            means[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
        low, high = (float(x) for x in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
        p = float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    else:
        raise ValueError(f"method={method!r} is not one of t, bootstrap")
    return {
        "metric": metric, "method": method, "users": n, "mean_a": float(xa.mean()), "mean_b": float(xb.mean()),
        "diff": mean, "ci_low": low, "ci_high": high, "confidence": confidence, "p_value": p,
    }  # fmt: skip


# ------------------------------------------------------------------ Student's t without scipy


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)`` (Lentz's continued fraction, as in Numerical Recipes)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side only
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def student_t_cdf(t: float, dof: float) -> float:
    """``P(T <= t)`` for Student's t with ``dof`` degrees of freedom.

    >>> round(student_t_cdf(2.228, 10), 4), round(student_t_cdf(0.0, 3), 4)
    (0.975, 0.5)
    """
    tail = 0.5 * _incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, dof: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`student_t_cdf`).

    >>> round(student_t_quantile(0.975, 10), 3), round(student_t_quantile(0.975, 1000), 3)
    (2.228, 1.962)
    """
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if student_t_cdf(mid, dof) < p else (low, mid)
    return (low + high) / 2
