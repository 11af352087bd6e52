"""Model registry: architectures register a builder under a name; config picks by name.

A builder takes the model's config section, the :class:`SparseArch` and the number of
dense features, and returns a module mapping ``(dense B x num_dense, sparse KJT)`` to
logits ``B``. New architectures register themselves; nothing else changes.
"""

from __future__ import annotations

from typing import Callable, Protocol

from torch import nn

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import ModelConfig
from torchrec_app.models.compile import compile_dense_parts
from torchrec_app.models.sparse import SparseArch


class ModelBuilder(Protocol):
    def __call__(self, config: ModelConfig, sparse_arch: SparseArch, num_dense: int) -> nn.Module: ...


MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register the decorated builder under ``name``."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name] = builder
        return builder

    return wrap


def build_ctr_model(config: ModelConfig, sparse_arch: SparseArch, num_dense: int) -> nn.Module:
    """Build the registered architecture ``config.name``.

    Every built-in architecture is registered by then: importing this module first
    imports the ``torchrec_app.models`` package, whose ``__init__`` imports the towers.
    With ``model.compile=true`` its dense parts go through ``torch.compile``
    (:func:`~torchrec_app.models.compile.compile_dense_parts`).
    """
    if config.name not in MODELS:
        raise ConfigError(f"model.name={config.name!r} is not a registered model; known: {', '.join(sorted(MODELS))}")
    tower = MODELS[config.name](config, sparse_arch, num_dense)
    if config.compile:
        compile_dense_parts(tower)
    return tower
