"""The optimizers of a sharded model and the one learning-rate schedule over all of them.

* Sharded tables are updated by the fused optimizer registered before sharding
  (:func:`torchrec_app.distributed.build.prepare_for_sharding`), inside the backward pass;
  ``DistributedModelParallel`` exposes it as ``fused_optimizer``.
* Tables the plan makes **data-parallel** get TorchRec's ``dense`` kernel: a plain
  replicated parameter whose gradient DDP all-reduces, which the fused optimizer never
  reaches. They get the *table* optimizer (``optim.sparse`` at ``optim.sparse_lr``) as an
  ordinary ``torch.optim`` optimizer, so a table trains the same whatever its sharding
  (``tests/distributed/test_sharding_equivalence.py``, data_parallel with adagrad).
* Everything else (the towers) gets the dense optimizer.

All sit in one ``CombinedOptimizer`` whose learning rates one ``torch.optim.lr_scheduler.LambdaLR``
moves together: linear warmup, then quadratic decay, as in torchrec_dlrm / MLPerf.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from torchrec_app.config.schema import OptimConfig

DENSE_OPTIMIZERS = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
#: ``optim.sparse`` as a ``torch.optim`` optimizer, for data-parallel tables.
TABLE_OPTIMIZERS = {"adagrad": torch.optim.Adagrad, "rowwise_adagrad": RowWiseAdagrad, "adam": torch.optim.Adam,
                    "sgd": torch.optim.SGD}  # fmt: skip


StepPreHook = Callable[[torch.optim.Optimizer, tuple, dict], None]


def _wrapped(params: dict[str, nn.Parameter], cls: type, lr: float, eps: float,
             step_pre_hook: StepPreHook | None) -> KeyedOptimizerWrapper:  # fmt: skip
    kwargs: dict[str, Any] = {"lr": lr} if cls is torch.optim.SGD else {"lr": lr, "eps": eps}

    def make(group: Any) -> torch.optim.Optimizer:
        optimizer = cls(group, **kwargs)
        if step_pre_hook is not None:
            optimizer.register_step_pre_hook(step_pre_hook)
        return optimizer

    return KeyedOptimizerWrapper(params, make)


def is_table_weight(name: str, tables: set[str]) -> bool:
    """Whether parameter ``name`` is the weight of one of ``tables`` (``...embedding_bags.<t>.weight``,
    ``...embeddings.<t>.weight``).

    >>> is_table_weight("model.sparse_arch.embedding_bag_collection.embedding_bags.t_C1.weight", {"t_C1"})
    True
    >>> is_table_weight("model.over_arch.model.0.weight", {"t_C1"})
    False
    """
    parts = name.split(".")
    return len(parts) >= 3 and parts[-1] == "weight" and parts[-2] in tables and parts[-3] in ("embedding_bags", "embeddings")


def build_optimizer(sharded_model: nn.Module, config: OptimConfig, data_parallel_tables: set[str] | frozenset = frozenset(),
                    dense_step_pre_hook: StepPreHook | None = None) -> CombinedOptimizer:  # fmt: skip
    """The optimizers of a ``DistributedModelParallel`` model (see the module docstring), combined.

    ``data_parallel_tables`` names the tables the plan made data-parallel;
    ``dense_step_pre_hook`` runs before each step of the towers' optimizer
    (``Optimizer.register_step_pre_hook``), when their gradients are final.
    """
    not_fused = dict(in_backward_optimizer_filter(sharded_model.named_parameters()))
    tables = {n: p for n, p in not_fused.items() if is_table_weight(n, set(data_parallel_tables))}
    towers = {n: p for n, p in not_fused.items() if n not in tables}
    optimizers: list[Any] = [sharded_model.fused_optimizer]
    if tables:
        optimizers.append(_wrapped(tables, TABLE_OPTIMIZERS[config.sparse], config.sparse_lr, config.eps, None))
    optimizers.append(_wrapped(towers, DENSE_OPTIMIZERS[config.dense], config.dense_lr, config.eps, dense_step_pre_hook))
    return CombinedOptimizer(optimizers)


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
