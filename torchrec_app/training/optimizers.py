"""Optimizers: fused table optimizers applied in backward, a dense optimizer, one schedule.

The tables' optimizer is registered with ``apply_optimizer_in_backward`` *before*
sharding, so ``DistributedModelParallel`` fuses it into FBGEMM's table-batched kernels
(the update happens inside the backward pass, and no table gradient is materialised).
The dense parameters get an ordinary optimizer. Both sit in one ``CombinedOptimizer``,
whose learning rates :class:`LRSchedule` moves together (warmup, then polynomial decay).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import OptimConfig

_SPARSE = {
    "adagrad": torch.optim.Adagrad,
    "rowwise_adagrad": RowWiseAdagrad,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}
_DENSE = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def _kwargs(name: str, lr: float, eps: float) -> dict[str, Any]:
    return {"lr": lr} if name == "sgd" else {"lr": lr, "eps": eps}


#: Table optimizers FBGEMM's CPU kernels implement; Adam is CUDA-only there.
CPU_SPARSE_OPTIMIZERS = ("adagrad", "rowwise_adagrad", "sgd")


def check_sparse_optimizer(config: OptimConfig, device_type: str) -> None:
    """Fail at start-up, not inside FBGEMM, when the table optimizer cannot run on the device.

    >>> check_sparse_optimizer(OptimConfig(sparse="adam"), "cpu")
    Traceback (most recent call last):
    ...
    torchrec_app.config.errors.ConfigError: optim.sparse=adam has no FBGEMM kernel on cpu; use one of adagrad, rowwise_adagrad, sgd there (adam runs on cuda)
    """
    if device_type == "cpu" and config.sparse not in CPU_SPARSE_OPTIMIZERS:
        raise ConfigError(
            f"optim.sparse={config.sparse} has no FBGEMM kernel on cpu; use one of "
            f"{', '.join(CPU_SPARSE_OPTIMIZERS)} there ({config.sparse} runs on cuda)"
        )


def apply_sparse_optimizer(embedding_module: nn.Module, config: OptimConfig) -> None:
    """Register the fused table optimizer on ``embedding_module``'s tables (before sharding)."""
    apply_optimizer_in_backward(
        _SPARSE[config.sparse], embedding_module.parameters(), _kwargs(config.sparse, config.sparse_lr, config.eps)
    )


def build_dense_optimizer(model: nn.Module, config: OptimConfig) -> KeyedOptimizerWrapper:
    """The dense optimizer over every parameter not updated in backward."""
    dense_params = dict(in_backward_optimizer_filter(model.named_parameters()))
    cls = _DENSE[config.dense]
    kwargs = _kwargs(config.dense, config.dense_lr, config.eps)
    return KeyedOptimizerWrapper(dense_params, lambda params: cls(params, **kwargs))


def build_optimizer(sharded_model: nn.Module, config: OptimConfig) -> CombinedOptimizer:
    """Fused (table) and dense optimizers of a ``DistributedModelParallel`` model, combined."""
    return CombinedOptimizer([sharded_model.fused_optimizer, build_dense_optimizer(sharded_model, config)])


class LRSchedule:
    """Scales every param group's base learning rate: linear warmup, then quadratic decay.

    ``factor(step)`` is 1 between warmup and ``decay_start``; from there it falls as
    ``(1 - (step - decay_start) / decay_steps) ** 2`` to 0, as in torchrec_dlrm/MLPerf.

    >>> from torchrec_app.config.schema import OptimConfig
    >>> s = LRSchedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0),
    ...                OptimConfig(warmup_steps=4, decay_start=10, decay_steps=10))
    >>> [round(s.factor(i), 3) for i in (0, 2, 4, 10, 15, 20, 30)]
    [0.25, 0.75, 1.0, 1.0, 0.25, 0.0, 0.0]
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: OptimConfig) -> None:
        self.optimizer = optimizer
        self.config = config
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.step_count = 0
        self._apply()

    def factor(self, step: int) -> float:
        c = self.config
        if c.warmup_steps and step < c.warmup_steps:
            return (step + 1) / c.warmup_steps
        if c.decay_start and step >= c.decay_start:
            return max(0.0, 1.0 - (step - c.decay_start) / c.decay_steps) ** 2
        return 1.0

    def _apply(self) -> None:
        factor = self.factor(self.step_count)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self) -> None:
        """Advance one training step."""
        self.step_count += 1
        self._apply()

    @property
    def last_lr(self) -> float:
        """The current learning rate of the first param group."""
        return self.optimizer.param_groups[0]["lr"]
