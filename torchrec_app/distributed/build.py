"""Wrap a meta-device model in ``DistributedModelParallel`` under a given plan."""

from __future__ import annotations

import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import ModuleSharder, ShardingEnv, ShardingPlan

from torchrec_app.distributed.runtime import Runtime
from torchrec_app.distributed.sharders import build_sharders


def shard_model(
    model: nn.Module, runtime: Runtime, plan: ShardingPlan, sharders: list[ModuleSharder[nn.Module]] | None = None
) -> DistributedModelParallel:
    """Shard ``model``'s tables by ``plan`` (model-parallel) and replicate the rest (DDP).

    Tables are materialised on ``runtime.device`` shard by shard, so no rank ever holds
    a whole table it does not own.
    """
    return DistributedModelParallel(
        module=model,
        env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=runtime.device,
        plan=plan,
        sharders=sharders if sharders is not None else build_sharders(),
    )
