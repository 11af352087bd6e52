"""Training never ends quietly in NaN: non-finite losses and dense gradients are caught.

Per step, without a device sync: the loss and the dense gradients (checked just before
the dense optimizer steps, with the same fused kernel ``torch.amp.GradScaler`` uses) are
tested for non-finite values on the device, and the first step where one appeared is
kept in a tensor. :meth:`NonFiniteGuard.check` reads it — all ranks together, through
one all-reduce — at every log interval and before every validation and checkpoint, so a
non-finite step is never validated, never becomes the best state and never reaches a
checkpoint: the run stops with :class:`TrainingDiverged` naming the step and the first
non-finite tensor, and the newest checkpoint is the last good one.

Tables are updated inside the backward pass by FBGEMM, so their gradients never exist as
tensors; a non-finite table update shows up as a non-finite loss on the next step.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

NO_STEP = math.inf


class TrainingDiverged(RuntimeError):
    """A loss or gradient became non-finite; the message names the step and the tensor."""


class NonFiniteGuard:
    """Watches the loss of each step and the gradients the dense optimizer is about to apply.

    Register :meth:`check_gradients` as the dense optimizer's step pre-hook
    (:func:`torchrec_app.training.optimizers.build_optimizer` takes it).

    Args:
        model: the trained model (to name parameters in the error).
        device: where the flags live (the training device, so checks need no copy).
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self._first_bad = torch.full((2,), NO_STEP, dtype=torch.float64, device=device)  # (loss, gradient)
        self._found = torch.zeros(1, device=device)
        self._inv_scale = torch.ones(1, device=device)
        self._step = 0

    def check_gradients(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        """Step pre-hook: flag the step if any gradient ``optimizer`` is about to apply is non-finite."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        self._found.zero_()
        torch._amp_foreach_non_finite_check_and_unscale_(grads, self._found, self._inv_scale)
        bad = self._found.double().squeeze(0) > 0
        self._first_bad[1] = torch.where(bad & (self._first_bad[1] == NO_STEP), float(self._step + 1), self._first_bad[1])

    def observe(self, step: int, loss: torch.Tensor) -> None:
        """Record step ``step``'s loss (and number the gradient check of the next step)."""
        bad = ~torch.isfinite(loss.detach().double())
        self._first_bad[0] = torch.where(bad & (self._first_bad[0] == NO_STEP), float(step), self._first_bad[0])
        self._step = step

    def check(self) -> None:
        """Raise :class:`TrainingDiverged` on every rank if any rank saw a non-finite value (collective)."""
        first = self._first_bad.clone()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        loss_step, grad_step = first.tolist()
        if loss_step == NO_STEP and grad_step == NO_STEP:
            return
        if grad_step <= loss_step:
            what = f"a dense gradient became non-finite at step {int(grad_step)}"
        else:
            what = f"the loss became non-finite at step {int(loss_step)}"
        raise TrainingDiverged(f"{what}; first non-finite tensor: {self.first_non_finite_tensor()}; "
                               "no checkpoint or best state was saved after it (lower the learning rates, "
                               "check the input data, or use fp32 tables)")  # fmt: skip

    def first_non_finite_tensor(self) -> str:
        """Name of the first parameter (or gradient) holding a non-finite value, on this rank."""
        for name, param in self.model.named_parameters():
            if param.grad is not None and not torch.isfinite(param.grad).all():
                return f"{name} (gradient)"
            if not torch.isfinite(param.detach()).all():
                return name
        return "none left on this rank's parameters (the loss itself)"
