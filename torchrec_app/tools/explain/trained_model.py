"""What explain and suggest-dims read from a training run: the cross weight, the input
layout, the table sizes, and the resolved config.

Only the dense tensors of the cross layer are read from the sharded DCP checkpoint
(:func:`torchrec_app.tools.export.read_unsharded`, no process group); the tables' widths and
rows come from the checkpoint's metadata, so no table is loaded. The feature order of
``x0`` is the dataset's ``sparse_features`` order (``metadata.json``, via ``--data``) or,
without it, the Criteo column order ``C1..C26``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from torchrec_app.config import AppConfig, ConfigError
from torchrec_app.data.criteo_format import SPARSE_FEATURES
from torchrec_app.tools.explain.blocks import InputLayout
from torchrec_app.tools.explain.cross_weight import cross_kind, cross_weight, tensor_names
from torchrec_app.tools.export import model_tensor_specs, read_unsharded
from torchrec_app.training.checkpoint import resolve_checkpoint

TOWER = "model.model."
CROSS_PREFIX = TOWER + "crossnet."
DENSE_INPUT = TOWER + "dense_arch.model._mlp.0._linear.weight"
_TABLE = re.compile(r"^model\.model\.sparse_arch\.embedding_bag_collection\.embedding_bags\.t_(.+)\.weight$")


def find_checkpoint(run: str | None, checkpoint: str | None, verify_checksums: bool = True) -> Path:
    """``checkpoint`` if given, else the newest checkpoint of run directory ``run``; a damaged
    one is refused (:func:`torchrec_app.training.checkpoint.resolve_checkpoint`)."""
    return resolve_checkpoint(run, checkpoint, verify_checksums)


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory holding ``checkpoint`` (``<run>/checkpoints/step_N``), if it has a config.json."""
    run = Path(checkpoint).resolve().parent.parent
    return run if (run / "config.json").is_file() else None


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild dataclass ``cls`` from ``dataclasses.asdict`` output (a run's ``config.json``).

    >>> from torchrec_app.config import build_recipe
    >>> tiny = build_recipe("tiny")
    >>> config_from_dict(AppConfig, dataclasses.asdict(tiny)) == tiny
    True
    """
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kind = hints[f.name]
        values[f.name] = config_from_dict(kind, data[f.name]) if dataclasses.is_dataclass(kind) else data[f.name]
    return cls(**values)


def load_run_config(run_dir: Path) -> AppConfig:
    """The resolved config a run trained with (its ``config.json``)."""
    path = Path(run_dir) / "config.json"
    try:
        return config_from_dict(AppConfig, json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{path}: cannot read the run's config ({err})") from None


@dataclass(frozen=True, slots=True)
class TrainedCross:
    """A trained DCNv2's cross layer and the facts about its input that explain needs."""

    checkpoint: Path
    kind: str
    """full, low_rank or mixture."""
    layer: int
    weight: torch.Tensor
    """``W`` of the layer, ``N x N`` (see :mod:`torchrec_app.tools.explain.cross_weight`)."""
    layout: InputLayout
    table_rows: dict[str, int]
    """Rows of each feature's table."""
    num_dense: int
    """Dense input features (the dense arch's input width)."""


def order_features(tables: Sequence[str], order: Sequence[str] | None) -> list[str]:
    """The tables' features in model order: ``order`` (the dataset's), else Criteo's ``C1..C26``.

    >>> order_features(["C10", "C2", "C1"], None)
    ['C1', 'C2', 'C10']
    """
    reference = list(order) if order else SPARSE_FEATURES
    unknown = sorted(set(tables) - set(reference))
    if unknown or (order and set(reference) != set(tables)):
        raise ConfigError(
            f"the checkpoint's tables {sorted(tables)} do not match the feature order {list(reference)}; "
            "pass --data DIR (the dataset the run trained on) so its metadata.json gives the order"
        )
    return [f for f in reference if f in set(tables)]


def read_trained_cross(checkpoint: Path, features: Sequence[str] | None = None, layer: int = 0) -> TrainedCross:
    """Read cross layer ``layer`` of the DCNv2 in ``checkpoint`` and its input layout."""
    specs = model_tensor_specs(checkpoint)
    tables = {m.group(1): tuple(spec.size) for name, spec in specs.items() if (m := _TABLE.match(name))}
    try:
        kind = cross_kind(list(specs), CROSS_PREFIX)
    except ValueError as err:
        raise ConfigError(f"{checkpoint}: {err}") from None
    names = tensor_names(kind, CROSS_PREFIX, layer)
    if any(n not in specs for n in names):
        raise ConfigError(f"{checkpoint}: no cross layer {layer} ({names[0]} is not in the checkpoint)")
    weight = cross_weight(read_unsharded(checkpoint, names), CROSS_PREFIX, layer)
    order = order_features(list(tables), features)
    widths = [int(tables[f][1]) for f in order]
    dense_width = weight.shape[0] - sum(widths)
    if dense_width <= 0:
        raise ConfigError(f"{checkpoint}: cross width {weight.shape[0]} <= sum of table widths {sum(widths)}")
    num_dense = int(specs[DENSE_INPUT].size[1]) if DENSE_INPUT in specs else 0
    return TrainedCross(
        checkpoint=checkpoint, kind=kind, layer=layer, weight=weight,
        layout=InputLayout.of(dense_width, order, widths),
        table_rows={f: int(tables[f][0]) for f in order}, num_dense=num_dense,
    )
