"""What explain and suggest-dims read from a training run: the cross weight, the input
layout, the table sizes, and the resolved config.

The run's model is rebuilt on ``meta`` from its ``config.json`` and the dataset
description it trained on (the run directory's ``metadata.json``, or ``--data``), by the
model family's task — so where the cross network lives in the state dict and what the
blocks of its input ``x0`` are come from the model itself (a tower exposing
``cross_input_blocks()``, e.g. DCNv2: the dense arch, then each feature at its width,
compressed features included), not from hard-coded names. Only the dense tensors of the
cross layer are then read from the sharded DCP checkpoint
(:func:`torchrec_app.tools.export.read_unsharded`, no process group); no table is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchrec_app.config import AppConfig, ConfigError
from torchrec_app.data.metadata import METADATA_FILE, DatasetMetadata, load_metadata
from torchrec_app.data.reader import table_sizes
from torchrec_app.models import task_for
from torchrec_app.tools.explain.blocks import InputLayout
from torchrec_app.tools.explain.cross_weight import cross_kind, cross_weight, tensor_names
from torchrec_app.tools.export import model_tensor_specs, read_unsharded
from torchrec_app.training.checkpoint import resolve_checkpoint


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


def run_model_inputs(checkpoint: Path, data: str | None) -> tuple[AppConfig, DatasetMetadata]:
    """The config and dataset description ``checkpoint``'s run trained with: its run directory's
    ``config.json`` and ``metadata.json`` (``data``: read the dataset's instead)."""
    run = run_dir_of(checkpoint)
    if run is None:
        raise ConfigError(f"{checkpoint} is not inside a run directory with a config.json; pass --run DIR")
    config = load_run_config(run)
    source = data or (str(run) if (run / METADATA_FILE).is_file() else None)
    if source is None:
        raise ConfigError(f"{run} has no {METADATA_FILE} (a run from before it was recorded): pass --data DIR, "
                          "the dataset the run trained on")  # fmt: skip
    return config, load_metadata(source)


def read_trained_cross(checkpoint: Path, config: AppConfig, metadata: DatasetMetadata, layer: int = 0) -> TrainedCross:
    """Read cross layer ``layer`` of the model in ``checkpoint`` (built from ``config`` and ``metadata``)
    and the layout of its input."""
    model = task_for(config.model.name).build_model(config, metadata, "meta")
    tower_name, tower = next(((n, m) for n, m in model.named_modules() if hasattr(m, "cross_input_blocks")), ("", None))
    if tower is None:
        raise ConfigError(f"model.name={config.model.name} has no cross network to explain (explain reads models "
                          "with a DCNv2 cross layer, e.g. dcnv2)")  # fmt: skip
    prefix = f"model.{tower_name}.crossnet."  # the trainer's state dict: "model." + the module's name
    specs = model_tensor_specs(checkpoint)
    try:
        kind = cross_kind(list(specs), prefix)
    except ValueError as err:
        raise ConfigError(f"{checkpoint}: {err}") from None
    names = tensor_names(kind, prefix, layer)
    if any(n not in specs for n in names):
        raise ConfigError(f"{checkpoint}: no cross layer {layer} ({names[0]} is not in the checkpoint)")
    weight = cross_weight(read_unsharded(checkpoint, names), prefix, layer)
    blocks = tower.cross_input_blocks()
    layout = InputLayout(tuple(n for n, _ in blocks), tuple(w for _, w in blocks))
    if layout.total != weight.shape[0]:
        raise ConfigError(f"{checkpoint}: the cross layer is {weight.shape[0]} wide but the run's config builds "
                          f"{layout.total} ({dict(blocks)}); is --data the dataset this run trained on?")  # fmt: skip
    rows = table_sizes(metadata, config.data)
    return TrainedCross(
        checkpoint=checkpoint, kind=kind, layer=layer, weight=weight, layout=layout,
        table_rows={name: rows[name] for name in layout.names if name in rows}, num_dense=len(metadata.dense_features),
    )
