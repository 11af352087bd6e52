"""Next-item losses over ``P`` prediction positions: hidden ``h`` (``P x D``) against item embeddings.

A position's logit for item ``j`` is ``h . e_j`` (the item table is shared by input and
output). Each loss is the mean over the ``P`` positions (0 when ``P = 0``, still attached
to the graph so every rank runs the same backward):

* :func:`full_softmax_loss` — cross-entropy over the whole catalog ``e_1..e_N``. Exact, and
  what the published full-ranking results train with, but every rank needs every item's
  embedding each step (``N x D``), so it is for catalogs that fit.
* :func:`sampled_softmax_loss` — cross-entropy over the target and ``S`` shared uniform
  negatives (a negative equal to the target is removed). Uniform sampling needs no logQ
  correction (constant), so this is an unbiased-in-ranking approximation of the full softmax.
* :func:`in_batch_softmax_loss` — cross-entropy over the distinct target items of the batch
  (each position's own target is its positive). Negatives are popularity-sampled and not
  logQ-corrected, which biases against popular items (Yi et al. 2019); cheap and common.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _mean(losses: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    return losses.sum() / max(1, losses.shape[0]) + 0.0 * anchor.sum()


def full_softmax_loss(h: torch.Tensor, targets: torch.Tensor, catalog: torch.Tensor) -> torch.Tensor:
    """``h``: ``P x D``; ``targets``: ``P`` item ids in ``1..N``; ``catalog``: ``N x D`` embeddings of items ``1..N``.

    >>> h = torch.tensor([[1.0, 0.0]]); catalog = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    >>> round(full_softmax_loss(h, torch.tensor([1]), catalog).item(), 4)  # -log(e^2 / (e^2 + 1))
    0.1269
    """
    logits = h @ catalog.t()
    return _mean(F.cross_entropy(logits, targets - 1, reduction="none"), h)


def sampled_softmax_loss(h: torch.Tensor, target_embeddings: torch.Tensor, targets: torch.Tensor,
                         negatives: torch.Tensor, negative_ids: torch.Tensor) -> torch.Tensor:
    """``h``, ``target_embeddings``: ``P x D``; ``targets``: ``P``; ``negatives``: ``S x D`` with ids ``negative_ids``.

    >>> h = torch.tensor([[1.0, 0.0]]); pos = torch.tensor([[2.0, 0.0]])
    >>> negs = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # the second negative is the target itself: dropped
    >>> round(sampled_softmax_loss(h, pos, torch.tensor([5]), negs, torch.tensor([3, 5])).item(), 4)
    0.1269
    """
    positive = (h * target_embeddings).sum(dim=-1, keepdim=True)
    negative = (h @ negatives.t()).masked_fill(negative_ids[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([positive, negative], dim=1)
    return _mean(F.cross_entropy(logits, torch.zeros_like(targets), reduction="none"), h)


def in_batch_softmax_loss(h: torch.Tensor, target_embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``h``, ``target_embeddings``: ``P x D``; ``targets``: ``P``. Candidates: the distinct targets.

    >>> h = torch.tensor([[1.0, 0.0], [0.0, 1.0]]); e = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    >>> round(in_batch_softmax_loss(h, e, torch.tensor([4, 9])).item(), 4)  # mean of 0.1269 and log 2
    0.41
    """
    unique, inverse = torch.unique(targets, return_inverse=True)
    positions = torch.arange(targets.shape[0], device=targets.device)
    first = torch.full((unique.shape[0],), targets.shape[0], device=targets.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    logits = h @ target_embeddings[first].t()
    return _mean(F.cross_entropy(logits, inverse, reduction="none"), h)
