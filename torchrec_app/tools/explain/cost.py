"""What the embedding widths cost: dense-tower parameters and FLOPs per sample, and table parameters.

The dense tower (dense arch, cross net, over/deep arch) is built from the model config
exactly as training builds it (the model registry, with 1-row tables) and run on one
sample under ``torch.utils.flop_counter.FlopCounterMode``, so the count follows the
model code: ``2 m n k`` per matmul (multiply and add), elementwise work not counted.
For DCNv2 the tower's input width is ``N = d + sum e_i``; a full-rank cross layer costs
``2 N^2`` FLOPs and ``N^2`` parameters, a low-rank one ``4 N r`` and ``2 N r``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config import AppConfig
from torchrec_app.models.ctr import build_model


@dataclass(frozen=True, slots=True)
class TowerCost:
    """Dense-tower size of one model shape."""

    params: int
    """Parameters outside the embedding tables."""
    flops: int
    """Forward FLOPs per sample (a training step costs about 3x)."""


def dense_tower_cost(config: AppConfig, num_dense: int, dims: Mapping[str, int]) -> TowerCost:
    """Parameters and forward FLOPs per sample of ``config``'s dense tower with table widths ``dims``.

    >>> from torchrec_app.config import build_recipe
    >>> config = replace(build_recipe("tiny"), model=replace(build_recipe("tiny").model, cross=replace(
    ...     build_recipe("tiny").model.cross, kind="full", num_layers=1)))
    >>> narrow, wide = (dense_tower_cost(config, 4, {"a": w, "b": 8}) for w in (8, 16))
    >>> wide.params - narrow.params  # the cross kernel 32^2 - 24^2 (+8 bias) and over-arch inputs 16 x 8
    584
    """
    sparse = replace(config.sparse, dims=dict(dims))
    features = list(dims)
    with torch.device("cpu"):
        tower = build_model(replace(config, sparse=sparse), num_dense, features, {f: 1 for f in features}, "cpu").model
    params = sum(p.numel() for name, p in tower.named_parameters() if not name.startswith("sparse_arch."))
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=features, values=torch.zeros(0, dtype=torch.long),
                                              lengths=torch.zeros(len(features), dtype=torch.long))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        tower(torch.zeros(1, num_dense), kjt)
    return TowerCost(params=params, flops=int(counter.get_total_flops()))


def table_params(rows: Mapping[str, int], dims: Mapping[str, int]) -> int:
    """Embedding parameters ``sum_i rows_i e_i``.

    >>> table_params({"a": 100, "b": 10}, {"a": 8, "b": 4})
    840
    """
    return sum(int(rows[f]) * int(dims[f]) for f in dims)
