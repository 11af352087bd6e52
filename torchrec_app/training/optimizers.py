"""The dense optimizer and the one learning-rate schedule over all parameters.

Tables are updated by the fused optimizer registered before sharding
(:func:`torchrec_app.distributed.build.prepare_for_sharding`); ``DistributedModelParallel``
exposes it as ``fused_optimizer``. The dense parameters get an ordinary optimizer, and
both sit in one ``CombinedOptimizer`` whose learning rates one ``torch.optim.lr_scheduler.LambdaLR``
moves together: linear warmup, then quadratic decay, as in torchrec_dlrm / MLPerf.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from torchrec_app.config.schema import OptimConfig

DENSE_OPTIMIZERS = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


StepPreHook = Callable[[torch.optim.Optimizer, tuple, dict], None]


def build_dense_optimizer(model: nn.Module, config: OptimConfig, step_pre_hook: StepPreHook | None = None) -> KeyedOptimizerWrapper:
    """The dense optimizer over every parameter not updated in backward; ``step_pre_hook`` runs
    before each of its steps (``Optimizer.register_step_pre_hook``), when the gradients are final."""
    dense_params = dict(in_backward_optimizer_filter(model.named_parameters()))
    cls = DENSE_OPTIMIZERS[config.dense]
    kwargs: dict[str, Any] = {"lr": config.dense_lr} if config.dense == "sgd" else {"lr": config.dense_lr, "eps": config.eps}

    def make(params: Any) -> torch.optim.Optimizer:
        optimizer = cls(params, **kwargs)
        if step_pre_hook is not None:
            optimizer.register_step_pre_hook(step_pre_hook)
        return optimizer

    return KeyedOptimizerWrapper(dense_params, make)


def build_optimizer(sharded_model: nn.Module, config: OptimConfig, dense_step_pre_hook: StepPreHook | None = None) -> CombinedOptimizer:
    """Fused (table) and dense optimizers of a ``DistributedModelParallel`` model, combined."""
    dense = build_dense_optimizer(sharded_model, config, dense_step_pre_hook)
    return CombinedOptimizer([sharded_model.fused_optimizer, dense])


def lr_factor(config: OptimConfig) -> Callable[[int], float]:
    """The schedule's multiplier of every base learning rate at step ``s`` (0-based).

    Linear warmup ``(s + 1) / warmup_steps``; 1 until ``decay_start``; then
    ``(1 - (s - decay_start) / decay_steps) ** 2`` down to 0.

    >>> f = lr_factor(OptimConfig(warmup_steps=4, decay_start=10, decay_steps=10))
    >>> [round(f(s), 3) for s in (0, 2, 4, 10, 15, 20, 30)]
    [0.25, 0.75, 1.0, 1.0, 0.25, 0.0, 0.0]
    """

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.decay_start and step >= config.decay_start:
            return max(0.0, 1.0 - (step - config.decay_start) / config.decay_steps) ** 2
        return 1.0

    return factor


def build_lr_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig) -> LambdaLR:
    """``LambdaLR`` over every param group of ``optimizer`` with :func:`lr_factor`; ``state_dict`` /
    ``load_state_dict`` carry its position through checkpoints.

    >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched = build_lr_scheduler(opt, OptimConfig(warmup_steps=2))
    >>> lrs = [opt.param_groups[0]["lr"]]
    >>> for _ in range(3):
    ...     opt.step(); sched.step(); lrs.append(opt.param_groups[0]["lr"])
    >>> lrs
    [0.5, 1.0, 1.0, 1.0]
    """
    return LambdaLR(optimizer, lr_factor(config))
