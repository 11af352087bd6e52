"""Multi-task heads of the feed model: one logit per objective from the shared representation.

The input is the shared bottom ``z`` (``B x N``: the DCNv2 cross network's output over every
feature block, :mod:`torchrec_app.models.feed.model`); each head returns ``B x K`` logits, one
column per objective in order.

* :class:`SharedBottomHeads` — one MLP tower per objective over ``z`` (Caruana 1997).
* :class:`MMoEHeads` — Ma et al. 2018 (https://dl.acm.org/doi/10.1145/3219819.3220007): ``E``
  expert MLPs over ``z``; objective ``k`` reads ``sum_e softmax(G_k z)_e expert_e(z)`` through its
  tower. Objectives that share causes share experts; the gates let rare ones pick their own mix.
* :class:`PLEHeads` — one CGC level of PLE (Tang et al. 2020,
  https://dl.acm.org/doi/10.1145/3383313.3412236): shared experts plus ``T`` experts per objective;
  objective ``k``'s gate mixes the shared experts and its own only (less negative transfer).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.mlp import MLP

from torchrec_app.config.feed import FeedModelConfig


def _tower(in_dim: int, dims: list[int], dropout: float) -> nn.Module:
    """``in_dim -> dims -> 1`` (ReLU MLP, dropout after it, a linear logit)."""
    return nn.Sequential(MLP(in_dim, dims, activation="relu"), nn.Dropout(dropout), nn.Linear(dims[-1], 1))


def _expert(in_dim: int, dims: list[int], dropout: float) -> nn.Module:
    return nn.Sequential(MLP(in_dim, dims, activation="relu"), nn.Dropout(dropout))


class SharedBottomHeads(nn.Module):
    """One tower per objective over the shared bottom.

    Example::

        >>> heads = SharedBottomHeads(FeedModelConfig(tower_dims=[8]), in_dim=6, num_objectives=3)
        >>> heads(torch.randn(4, 6)).shape
        torch.Size([4, 3])
    """

    def __init__(self, config: FeedModelConfig, in_dim: int, num_objectives: int) -> None:
        super().__init__()
        self.towers = nn.ModuleList(_tower(in_dim, config.tower_dims, config.dropout) for _ in range(num_objectives))

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        """``B x N`` -> ``B x K`` logits."""
        return torch.cat([tower(shared) for tower in self.towers], dim=1)


class MMoEHeads(nn.Module):
    """Multi-gate mixture of experts: ``E`` experts, one softmax gate and one tower per objective.

    Example::

        >>> heads = MMoEHeads(FeedModelConfig(num_experts=3, expert_dims=[8], tower_dims=[4]), in_dim=6, num_objectives=2)
        >>> heads(torch.randn(5, 6)).shape, heads.gate_weights(torch.randn(5, 6)).shape
        (torch.Size([5, 2]), torch.Size([5, 2, 3]))
    """

    def __init__(self, config: FeedModelConfig, in_dim: int, num_objectives: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(_expert(in_dim, config.expert_dims, config.dropout) for _ in range(config.num_experts))
        self.gates = nn.Linear(in_dim, num_objectives * config.num_experts)
        self.num_objectives, self.num_experts = num_objectives, config.num_experts
        self.towers = nn.ModuleList(_tower(config.expert_dims[-1], config.tower_dims, config.dropout) for _ in range(num_objectives))

    def gate_weights(self, shared: torch.Tensor) -> torch.Tensor:
        """``B x K x E``: each objective's mixture of experts (rows sum to 1)."""
        return torch.softmax(self.gates(shared).view(-1, self.num_objectives, self.num_experts), dim=-1)

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        """``B x N`` -> ``B x K`` logits."""
        experts = torch.stack([expert(shared) for expert in self.experts], dim=1)  # B x E x H
        mixed = torch.bmm(self.gate_weights(shared), experts)  # B x K x H
        return torch.cat([tower(mixed[:, k]) for k, tower in enumerate(self.towers)], dim=1)


class PLEHeads(nn.Module):
    """One CGC level: ``S`` shared experts and ``T`` per objective; objective ``k`` gates over its ``S + T``.

    Example::

        >>> heads = PLEHeads(FeedModelConfig(num_experts=2, task_experts=1, expert_dims=[8], tower_dims=[4]), 6, 3)
        >>> heads(torch.randn(5, 6)).shape
        torch.Size([5, 3])
    """

    def __init__(self, config: FeedModelConfig, in_dim: int, num_objectives: int) -> None:
        super().__init__()
        make = lambda: _expert(in_dim, config.expert_dims, config.dropout)  # noqa: E731
        self.shared_experts = nn.ModuleList(make() for _ in range(config.num_experts))
        self.task_experts = nn.ModuleList(nn.ModuleList(make() for _ in range(config.task_experts)) for _ in range(num_objectives))
        self.gates = nn.ModuleList(nn.Linear(in_dim, config.num_experts + config.task_experts) for _ in range(num_objectives))
        self.towers = nn.ModuleList(_tower(config.expert_dims[-1], config.tower_dims, config.dropout) for _ in range(num_objectives))

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        """``B x N`` -> ``B x K`` logits."""
        common = [expert(shared) for expert in self.shared_experts]
        logits = []
        for own, gate, tower in zip(self.task_experts, self.gates, self.towers):
            experts = torch.stack(common + [expert(shared) for expert in own], dim=1)  # B x (S + T) x H
            weights = torch.softmax(gate(shared), dim=-1)[:, None, :]  # B x 1 x (S + T)
            logits.append(tower(torch.bmm(weights, experts)[:, 0]))
        return torch.cat(logits, dim=1)


#: ``model.feed.multitask`` -> heads
MULTITASK_HEADS: dict[str, type[nn.Module]] = {"shared_bottom": SharedBottomHeads, "mmoe": MMoEHeads, "ple": PLEHeads}
