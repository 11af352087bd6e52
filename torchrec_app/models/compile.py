"""``model.compile=true``: the dense parts of a CTR tower through ``torch.compile`` (inductor).

Only the dense side is compiled (every child of the tower but ``sparse_arch``: dense arch,
interaction, over arch, cross network...); the tables stay with FBGEMM and the sharded
modules with TorchRec. Each part's ``forward`` is replaced by its compiled version on the
instance, so parameter names, the state dict and checkpoints are the same with and
without compilation, and TorchRec's train pipeline, which treats modules free of sharded
tables as leaves when it traces the model, never traces into them.

Inductor needs a working C++ compiler on CPU; :func:`check_inductor` compiles and runs a
one-op function at model build time, so a machine that cannot compile fails at start-up
with one :class:`~torchrec_app.config.errors.ConfigError`, not inside the first step.
"""

from __future__ import annotations

import torch
from torch import nn

from torchrec_app.config.errors import ConfigError

__all__ = ["check_inductor", "compile_dense_parts"]


def _probe(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x) + 1.0


def check_inductor() -> None:
    """Compile and run a one-op function with inductor; raise ``ConfigError`` naming the cause if it cannot."""
    try:
        result = torch.compile(_probe, backend="inductor", fullgraph=True, dynamic=False)(torch.ones(4))
    except Exception as err:  # noqa: BLE001  (any failure of the compiler stack means: not usable here)
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ConfigError(f"model.compile=true: torch.compile (inductor) cannot compile on this machine: "
                          f"{type(err).__name__}: {cause}; install a C++ compiler (g++) or set model.compile=false") from None  # fmt: skip
    if not torch.equal(result, torch.full((4,), 2.0)):
        raise ConfigError(f"model.compile=true: inductor's probe computed {result.tolist()} instead of 2.0s; set model.compile=false")


def compile_dense_parts(tower: nn.Module) -> list[str]:
    """Compile the ``forward`` of every child of ``tower`` except ``sparse_arch``; return their names.

    Static shapes (``dynamic=False``): a training run sees one batch size, and the last,
    smaller evaluation batch costs one recompilation.
    """
    check_inductor()
    compiled = []
    for name, child in tower.named_children():
        if name == "sparse_arch":
            continue
        child.forward = torch.compile(child.forward, backend="inductor", dynamic=False)
        compiled.append(name)
    return compiled
