"""Full-catalog scoring of next-item models whose item table is sharded, and their evaluator.

No rank ever holds the whole item table, during training (with the sampled or in-batch
loss) or here. For one evaluation batch of ``B`` users per rank on ``W`` ranks:

1. every rank computes its users' vectors ``u`` (``B x D``; the history lookups go through
   the sharded ``EmbeddingCollection`` as in training);
2. the vectors, targets and seen items of all ranks are all-gathered (``W B x D``: users
   are few, items many, so users travel and items stay);
3. each rank scores all ``W B`` users against the rows it holds — its row-wise shard
   ``[r0, r1)``, the whole table if it owns it table-wise, nothing if it owns none, or a
   ``1/W`` slice of a data-parallel replica — in blocks of ``item_block`` rows with the
   global ids ``r0 + i``, and keeps the targets' scores it finds (one rank owns each target);
4. the targets' scores are summed across ranks (all-reduce), then each rank counts, per
   user, its items that beat the target (:class:`~torchrec_app.metrics.ranking.BlockRanker`:
   score, ties by lower id, seen items masked) and keeps its local top-K;
5. counts are summed across ranks (all-reduce: the exact rank of every target) and the
   local top-K lists all-gathered and merged; each rank keeps its own users' results.

Memory per rank: ``W B x item_block`` scores; traffic: ``W B (D + K)`` numbers per rank
per batch, independent of the catalog size. Column-wise shards hold partial dot products
and are rejected with an error naming the table (plan ``t_item`` row-wise, table-wise or
data-parallel).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.sequences import RankingEvalConfig
from torchrec_app.data.sequences.batches import SequenceBatch
from torchrec_app.metrics.ranking import BlockRanker, RankingMetrics, top_k_by_score_then_id
from torchrec_app.models.sequential.model import ITEM_TABLE, SequentialRecommender

ITEM_WEIGHT = f"embeddings.{ITEM_TABLE}.weight"


def unwrap_recommender(model: nn.Module) -> SequentialRecommender:
    """The :class:`SequentialRecommender` inside ``model`` (``DistributedModelParallel`` / DDP wrappers or itself)."""
    seen = 0
    while not isinstance(model, SequentialRecommender):
        inner = getattr(model, "module", None)
        if inner is None or seen > 4:
            raise TypeError(f"{type(model).__name__} does not wrap a SequentialRecommender")
        model, seen = inner, seen + 1
    return model


def _world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_item_rows(embeddings: nn.Module) -> list[tuple[int, torch.Tensor]]:
    """``[(first global row, rows x D weights), ...]`` of the item table this rank scores.

    Every row is scored by exactly one rank: shards by their owner; an unsharded (or
    data-parallel, replicated) table is split into ``W`` contiguous row ranges.
    """
    weight = embeddings.state_dict()[ITEM_WEIGHT]
    rank, world = _world()
    if isinstance(weight, ShardedTensor):
        width = weight.metadata().size[1]
        blocks = []
        for shard in weight.local_shards():
            (row, column), (_, columns) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
            if column != 0 or columns != width:
                raise ConfigError(
                    f"table {ITEM_TABLE} is sharded by columns (rank {rank} holds columns {column}..{column + columns - 1}); "
                    f"full-catalog scoring needs whole rows: set sharding.per_table={ITEM_TABLE}:row_wise|table_wise|data_parallel"
                )
            blocks.append((int(row), shard.tensor))
        return blocks
    rows = weight.shape[0]
    first, last = rows * rank // world, rows * (rank + 1) // world
    return [(first, weight[first:last])] if last > first else []


def _gather_rows(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """All ranks' equal-shape tensors concatenated along dim 0, in rank order."""
    if world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def seen_matrix(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``B x S`` seen ids from jagged ``values`` / ``lengths``, padded with -1.

    >>> seen_matrix(torch.tensor([4, 5, 6]), torch.tensor([2, 0, 1])).tolist()
    [[4, 5], [-1, -1], [6, -1]]
    """
    rows = lengths.shape[0]
    width = int(lengths.max()) if rows else 0
    out = torch.full((rows, width), -1, dtype=torch.long, device=values.device)
    if width:
        offsets = torch.cumsum(lengths, 0) - lengths
        column = torch.arange(values.numel(), device=values.device) - torch.repeat_interleave(offsets, lengths)
        out[torch.repeat_interleave(torch.arange(rows, device=values.device), lengths), column] = values.long()
    return out


def rank_against_item_rows(
    users: torch.Tensor,
    targets: torch.Tensor,
    seen: torch.Tensor | None,
    blocks: list[tuple[int, torch.Tensor]],
    k: int,
    item_block: int = 65536,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ranks (``B``) and top-K ids (``B x K``) of this rank's users over the whole catalog (collective).

    Args:
        users: ``B x D`` user vectors (``B`` equal on every rank).
        targets: ``B`` target ids (0 for padding rows: their results are meaningless).
        seen: ``B x S`` items to mask per user (-1 pads), or None.
        blocks: this rank's item rows, from :func:`local_item_rows`.
        k: top-K length (0: none).
    """
    rank, world = _world()
    rows = users.shape[0]
    all_users = _gather_rows(users.float(), world)
    all_targets = _gather_rows(targets.long(), world)
    all_seen = seen
    if seen is not None and world > 1:
        width = torch.tensor([seen.shape[1]], device=seen.device)
        widths = _gather_rows(width, world)
        padded = torch.full((rows, int(widths.max())), -1, dtype=torch.long, device=seen.device)
        padded[:, : seen.shape[1]] = seen
        all_seen = _gather_rows(padded, world)
    chunks = [(first + start, weights[start : start + item_block]) for first, weights in blocks
              for start in range(0, weights.shape[0], item_block)]
    cache = {}
    target_scores = torch.zeros(all_targets.shape[0], dtype=torch.float32, device=users.device)
    for index, (first, weights) in enumerate(chunks):
        scores = all_users @ weights.to(all_users.dtype).t()
        if len(chunks) == 1:
            cache[index] = scores
        inside = (all_targets >= first) & (all_targets < first + weights.shape[0])
        target_scores[inside] = scores[inside, all_targets[inside] - first]
    if world > 1:
        dist.all_reduce(target_scores)
    ranker = BlockRanker(all_targets[:, None], target_scores[:, None], all_seen, k=k, min_item=1)
    for index, (first, weights) in enumerate(chunks):
        scores = cache.pop(index) if index in cache else all_users @ weights.to(all_users.dtype).t()
        ranker.add_block(scores, first)
    better = ranker.better[:, 0].clone()
    top_scores, top_ids = ranker.top_scores, ranker.top_ids
    if k:
        pad = k - top_ids.shape[1]
        top_scores = torch.nn.functional.pad(top_scores, (0, pad), value=-math.inf)
        top_ids = torch.nn.functional.pad(top_ids, (0, pad), value=-1)
    if world > 1:
        dist.all_reduce(better)
        if k:
            all_scores = [torch.empty_like(top_scores) for _ in range(world)]
            all_ids = [torch.empty_like(top_ids) for _ in range(world)]
            dist.all_gather(all_scores, top_scores.contiguous())
            dist.all_gather(all_ids, top_ids.contiguous())
            top_scores, top_ids = top_k_by_score_then_id(torch.cat(all_scores, 1), torch.cat(all_ids, 1), k)
    mine = slice(rank * rows, (rank + 1) * rows)
    return better[mine] + 1, top_ids[mine] if k else torch.empty(rows, 0, dtype=torch.long, device=users.device)


class NextItemEvaluator:
    """The task's evaluator: full-catalog ranks of each evaluation row's target (see the module docstring).

    ``update(model, batch)`` is a collective (every rank calls it for each of its equally many
    batches); ``compute()`` returns Recall@K, NDCG@K, MRR and ``users`` over every rank's rows;
    ``save_details(path)`` saves one row per user (:class:`~torchrec_app.metrics.ranking.RankingMetrics`;
    the validator writes ``<run>/details/valid.parquet`` and ``test.parquet``).
    """

    def __init__(self, config: RankingEvalConfig) -> None:
        self.config = config
        self.metrics = RankingMetrics(config.ks)
        self._blocks: list[tuple[int, torch.Tensor]] | None = None

    def update(self, model: nn.Module, batch: SequenceBatch) -> None:
        unit = unwrap_recommender(model)
        if self._blocks is None:  # the weights do not change during one evaluation
            self._blocks = local_item_rows(unit.embeddings)
        with torch.no_grad():
            users = unit.user_vectors(batch)
            seen = seen_matrix(batch.seen_values, batch.seen_lengths) if self.config.mask_seen else None
            ranks, top = rank_against_item_rows(users, batch.targets, seen, self._blocks, self.config.save_top_k, self.config.item_block)
        real = batch.weights > 0
        self.metrics.add(batch.users[real], batch.targets[real][:, None], ranks[real][:, None], top[real])

    def compute(self) -> dict[str, float]:
        """Recall@K, NDCG@K, MRR over every rank's users, ``users`` and ``rows`` (the same count)."""
        metrics = self.metrics.compute()
        return {**metrics, "rows": metrics["users"]}

    def save_details(self, path: Any) -> None:
        """Per-user results (user, target, rank, metrics, top-K) as Parquet; rank 0 writes (call on every rank)."""
        self.metrics.write_per_user(path)
