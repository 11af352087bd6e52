"""Objective weighting: how the feed model's ``T`` per-objective losses become the one trained loss.

The backward-pass lever of the home-feed ranker (docs/BENCHMARKS.md, "Home-feed ranker:
training-time levers"). A weighting is an ``nn.Module`` inside the model (the hook of
:mod:`torchrec_app.models.feed.losses`, ``model.feed.weighting``) that maps the per-objective
losses to a scalar::

    loss = weighting(losses)          # losses: T (one mean BCE per objective), loss: scalar

* ``static`` (:class:`~torchrec_app.models.feed.losses.StaticWeighting`): ``sum_k lambda_k L_k``
  with fixed ``lambda_k`` (``model.feed.loss_weights``, missing = 1). The baseline; no state.
* ``uncertainty`` (:class:`UncertaintyWeighting`, Kendall, Gal & Cipolla, CVPR 2018,
  https://arxiv.org/abs/1705.07115, eq. 10 for classification):
  ``sum_k exp(-s_k) L_k + s_k / 2`` with one learnable log-variance ``s_k = log sigma_k^2``
  per objective. The ``s_k`` are ordinary parameters of the model, so the trainer's dense
  optimizer updates them (and DDP averages their gradients) like any tower weight; at the
  stationary point ``exp(-s_k) = 1 / (2 L_k)``: each objective is weighted by its inverse
  loss scale, so the rare objectives (small BCE) get larger weights.
* ``dwa`` (:class:`DynamicWeightAverage`, Liu, Johns & Davison, CVPR 2019,
  https://arxiv.org/abs/1803.10704, eq. 7): ``sum_k lambda_k(t) L_k`` with
  ``lambda_k(t) = T exp(w_k(t-1) / tau) / sum_i exp(w_i(t-1) / tau)``,
  ``w_k(t-1) = L_k(t-1) / L_k(t-2)``, where ``L_k(t)`` is objective ``k``'s mean loss over
  period ``t`` (the paper's epoch; here ``period`` training steps, averaged over every
  rank) and ``lambda = 1`` for the first two periods. An objective whose loss falls more
  slowly than the others' gets more weight. Weights are fixed within a period and
  identical on every rank.

Every weighting keeps its state in ``state_dict`` (parameters and persistent buffers), so a
checkpoint resumes it exactly. It is called as a submodule without sharded tables, which
TorchRec's pipeline tracer treats as a leaf: its forward may branch on values.

This module registers ``uncertainty`` and ``dwa`` in
:data:`~torchrec_app.models.feed.losses.WEIGHTINGS` when imported (``torchrec_app.models.feed`` does).

Example::

    >>> from torchrec_app.models.feed.losses import build_weighting
    >>> w = build_weighting(FeedModelConfig(weighting="dwa", dwa_period=10), ["click", "chat"])
    >>> type(w).__name__, w.weights_by_objective()
    ('DynamicWeightAverage', {'click': 1.0, 'chat': 1.0})
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.feed import FeedModelConfig
from torchrec_app.models.feed.losses import register_weighting


class ObjectiveWeighting(nn.Module):
    """Base class: ``forward(losses, shared=None) -> scalar`` over the losses named in :attr:`objectives`.

    ``losses`` is the model's ``{name: scalar}`` (:func:`~torchrec_app.models.feed.losses.objective_losses`:
    the objectives, then ``any`` when the model has that head) or a ``T`` tensor in
    :attr:`objectives` order; ``shared`` (the heads' common input) is not used by these schemes.
    """

    def __init__(self, objectives: Sequence[str]) -> None:
        super().__init__()
        if not objectives:
            raise ConfigError("objective weighting needs at least one objective")
        self.objectives = tuple(objectives)

    def weights(self) -> torch.Tensor:
        """``T``: the current weight of each objective's loss (detached; for logging and tests)."""
        raise NotImplementedError

    def weights_by_objective(self) -> dict[str, float]:
        """:meth:`weights` as ``{objective: weight}`` (summary.json, metrics.jsonl)."""
        return {name: float(w) for name, w in zip(self.objectives, self.weights().tolist())}

    def stacked(self, losses: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """``T``: ``losses`` in :attr:`objectives` order."""
        if isinstance(losses, dict):
            if set(losses) != set(self.objectives):
                raise ValueError(f"{type(self).__name__}: expected the losses of {list(self.objectives)}, got {sorted(losses)}")
            losses = torch.stack([losses[name] for name in self.objectives])
        if losses.shape != (len(self.objectives),):
            raise ValueError(f"{type(self).__name__}: expected {len(self.objectives)} losses "
                             f"({', '.join(self.objectives)}), got shape {tuple(losses.shape)}")  # fmt: skip
        return losses


class UncertaintyWeighting(ObjectiveWeighting):
    """Homoscedastic-uncertainty weighting (Kendall et al. 2018) with learnable log-variances.

    ``loss = sum_k exp(-s_k) L_k + s_k / 2`` (classification form of the paper's eq. 10 with
    ``s_k = log sigma_k^2``). The gradient in ``s_k`` is ``-exp(-s_k) L_k + 1/2``, zero at
    ``exp(-s_k) = 1 / (2 L_k)``: the learned weight of each objective tends to its inverse
    loss scale. ``s`` (parameter ``log_variance``, ``T``) starts at ``init_log_variance``
    and is trained by the dense optimizer with the towers.

    Example::

        >>> w = UncertaintyWeighting(("click", "chat"))
        >>> round(float(w(torch.tensor([0.5, 0.1])).detach()), 6)  # s = 0: the plain sum
        0.6
        >>> sorted(name for name, _ in w.named_parameters())
        ['log_variance']
    """

    def __init__(self, objectives: Sequence[str], init_log_variance: float = 0.0) -> None:
        super().__init__(objectives)
        self.init_log_variance = float(init_log_variance)
        self.log_variance = nn.Parameter(torch.full((len(self.objectives),), self.init_log_variance))

    def reset_parameters(self) -> None:
        """Back to ``s_k = init_log_variance`` (also what materializing from ``meta`` calls)."""
        with torch.no_grad():
            self.log_variance.fill_(self.init_log_variance)

    def forward(self, losses: dict[str, torch.Tensor] | torch.Tensor, shared: torch.Tensor | None = None) -> torch.Tensor:
        """``losses``: ``T`` -> scalar ``sum_k exp(-s_k) L_k + s_k / 2``."""
        losses = self.stacked(losses)
        s = self.log_variance.to(losses.dtype)
        return (torch.exp(-s) * losses + 0.5 * s).sum()

    def weights(self) -> torch.Tensor:
        return torch.exp(-self.log_variance.detach())


class DynamicWeightAverage(ObjectiveWeighting):
    """Dynamic Weight Average (Liu et al. 2019): weights from each objective's rate of descent.

    Every training forward adds the (detached) losses to the current period; after
    ``period`` steps the period's mean losses (averaged over ranks with one all-reduce of
    ``T`` floats, when a process group is up) become ``L(t-1)``, and the weights of the next
    period are ``T * softmax(L(t-1) / L(t-2) / temperature)``. The first two periods use
    weight 1. Evaluation-mode forwards neither accumulate nor update.

    Args:
        objectives: the ``T`` objective names, in the order of the losses.
        period: training steps per DWA period (the paper uses an epoch).
        temperature: ``tau``; larger is closer to equal weights (the paper uses 2).

    State (persistent buffers, in checkpoints): ``weight`` (``T``), ``period_loss_sum``
    (``T``), ``period_steps``, ``previous_losses`` (``2 x T``: ``L(t-1)``, ``L(t-2)``) and
    ``periods_done``.

    Example::

        >>> w = DynamicWeightAverage(("a", "b"), period=1, temperature=1.0)
        >>> for losses in ([1.0, 1.0], [0.5, 1.0], [0.25, 1.0]):
        ...     _ = w(torch.tensor(losses))
        >>> [round(x, 4) for x in w.weights().tolist()]  # a halves each period, b stays: b gets more weight
        [0.7551, 1.2449]
    """

    def __init__(self, objectives: Sequence[str], period: int = 50, temperature: float = 2.0) -> None:
        super().__init__(objectives)
        if period < 1 or temperature <= 0:
            raise ConfigError(f"DWA needs period >= 1 and temperature > 0, got period={period}, temperature={temperature}")
        self.period = int(period)
        self.temperature = float(temperature)
        count = len(self.objectives)
        self.register_buffer("weight", torch.ones(count))
        self.register_buffer("period_loss_sum", torch.zeros(count, dtype=torch.float64))
        self.register_buffer("period_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("previous_losses", torch.zeros(2, count, dtype=torch.float64))
        self.register_buffer("periods_done", torch.zeros((), dtype=torch.long))

    def reset_parameters(self) -> None:
        """Back to the first period (weights 1, no history)."""
        self.weight.fill_(1.0)
        self.period_loss_sum.zero_()
        self.period_steps.zero_()
        self.previous_losses.zero_()
        self.periods_done.zero_()

    def forward(self, losses: dict[str, torch.Tensor] | torch.Tensor, shared: torch.Tensor | None = None) -> torch.Tensor:
        """``losses``: ``T`` -> scalar ``sum_k lambda_k(t) L_k``; in training mode, also records ``losses``."""
        losses = self.stacked(losses)
        # a copy: the period's end updates ``weight`` in place, after this graph was built on it
        loss = (self.weight.to(losses.dtype, copy=True) * losses).sum()
        if self.training:
            with torch.no_grad():
                self.period_loss_sum += losses.detach().to(self.period_loss_sum.dtype)
                self.period_steps += 1
                if int(self.period_steps) >= self.period:
                    self._end_period()
        return loss

    @torch.no_grad()
    def _end_period(self) -> None:
        mean = self.period_loss_sum / self.period_steps
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(mean)  # every rank gets the same weights
            mean /= dist.get_world_size()
        self.previous_losses[1] = self.previous_losses[0]
        self.previous_losses[0] = mean
        self.periods_done += 1
        self.period_loss_sum.zero_()
        self.period_steps.zero_()
        if int(self.periods_done) >= 2:
            self.weight.copy_(dwa_weights(self.previous_losses[0], self.previous_losses[1], self.temperature).to(self.weight.dtype))

    def weights(self) -> torch.Tensor:
        return self.weight.detach().clone()


def dwa_weights(last: torch.Tensor, before_last: torch.Tensor, temperature: float) -> torch.Tensor:
    """DWA's eq. 7: ``T * softmax((last / before_last) / temperature)`` over the ``T`` objectives.

    >>> [round(w, 4) for w in dwa_weights(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 1.0]), 2.0).tolist()]
    [0.8756, 1.1244]
    """
    ratio = last / before_last.clamp(min=torch.finfo(before_last.dtype).tiny)
    return len(last) * torch.softmax(ratio / temperature, dim=0)


def _no_static_weights(config: FeedModelConfig) -> None:
    if any(w != 1.0 for w in config.loss_weights.values()):
        raise ConfigError(f"model.feed.loss_weights={config.loss_weights} applies to model.feed.weighting=static only; "
                          f"weighting={config.weighting} learns its weights: remove loss_weights")  # fmt: skip


def build_uncertainty(config: FeedModelConfig, names: list[str]) -> UncertaintyWeighting:
    """``model.feed.weighting=uncertainty`` over the losses ``names``."""
    _no_static_weights(config)
    return UncertaintyWeighting(names)


def build_dwa(config: FeedModelConfig, names: list[str]) -> DynamicWeightAverage:
    """``model.feed.weighting=dwa`` over the losses ``names`` (``model.feed.dwa_period``, ``dwa_temperature``)."""
    _no_static_weights(config)
    return DynamicWeightAverage(names, period=config.dwa_period, temperature=config.dwa_temperature)


register_weighting("uncertainty", build_uncertainty)
register_weighting("dwa", build_dwa)
