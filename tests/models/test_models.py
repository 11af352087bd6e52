"""Model shapes and per-table widths (no process group needed)."""

from dataclasses import replace

import pytest
import torch

from tests.batches import random_batch
from torchrec_app.config import ConfigError, resolve_config
from torchrec_app.distributed.planning import build_constraints
from torchrec_app.models.ctr import build_model
from torchrec_app.models.sparse import build_tables

FEATURES = ["C1", "C2", "C3"]
SIZES = {"C1": 30, "C2": 20, "C3": 10}


def _batch(rows=8):
    return random_batch(FEATURES, 4, SIZES, rows, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["full", "low_rank", "mixture"])
@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_dcnv2_with_per_feature_widths(kind, structure):
    config = resolve_config("tiny", [f"model.cross.kind={kind}", f"model.structure={structure}", "sparse.dims=C1:16,C3:4"])
    model = build_model(config, 4, FEATURES, SIZES, device="cpu")
    arch = model.model
    assert arch.sparse_arch.feature_dims == [16, 8, 4]
    assert arch.input_dim == config.model.dense_arch[-1] + 16 + 8 + 4
    loss, out = model(_batch())
    assert out.predictions["label"].shape == (8,) and loss.ndim == 0
    loss.backward()
    assert all(p.grad is not None for p in arch.crossnet.parameters())


def test_dlrm_dot_interaction_shapes():
    config = resolve_config("tiny", ["model.name=dlrm", "model.dense_arch=16,8"])
    model = build_model(config, 4, FEATURES, SIZES, device="cpu")
    loss, out = model(_batch())
    assert out.predictions["label"].shape == (8,)


def test_dlrm_rejects_per_feature_widths():
    config = resolve_config("tiny", ["model.name=dlrm", "sparse.dims=C1:16"])
    with pytest.raises(ConfigError, match="one embedding width"):
        build_model(config, 4, FEATURES, SIZES, device="cpu")


def test_padding_rows_do_not_count_in_the_loss():
    config = resolve_config("tiny", [])
    model = build_model(config, 4, FEATURES, SIZES, device="cpu")
    batch = _batch()
    loss_all, _ = model(batch)
    half = replace(batch, weights=torch.tensor([1.0] * 4 + [0.0] * 4))
    flipped = replace(half, labels=torch.cat([batch.labels[:4], 1 - batch.labels[4:]]))
    assert torch.allclose(model(half)[0], model(flipped)[0])  # padding labels are ignored
    assert not torch.allclose(model(half)[0], loss_all)


def test_unknown_model_name():
    config = resolve_config("tiny", ["model.name=transformer"])
    with pytest.raises(ConfigError, match="model.name='transformer' is not a registered model; known: dcnv2, dcnv3, dlrm, dnn, masknet"):
        build_model(config, 4, FEATURES, SIZES, device="cpu")


def test_dims_for_a_missing_feature():
    config = resolve_config("tiny", ["sparse.dims=C9:8"])
    with pytest.raises(ConfigError, match=r"sparse.dims names features that do not exist: \['C9'\]"):
        build_model(config, 4, FEATURES, SIZES, device="cpu")


def test_table_constraint_naming_a_missing_table():
    config = resolve_config("tiny", ["sharding.per_table=t_C9:row_wise"])
    tables = build_tables(config.sparse, FEATURES, SIZES)
    with pytest.raises(ConfigError, match=r"sharding.per_table names tables that do not exist: \['t_C9'\]"):
        build_constraints(config.sharding, tables, "cpu")


def test_sharding_type_the_device_cannot_run():
    config = resolve_config("tiny", ["sharding.types=grid_shard"])
    tables = build_tables(config.sparse, FEATURES, SIZES)
    with pytest.raises(ConfigError, match="cannot run on cpu; supported there: .*row_wise"):
        build_constraints(config.sharding, tables, "cpu")


def test_dnn_baseline_takes_per_feature_widths():
    config = resolve_config("tiny", ["model.name=dnn", "sparse.dims=C1:16"])
    model = build_model(config, 4, FEATURES, SIZES, device="cpu")
    assert model.model.sparse_arch.feature_dims == [16, 8, 8]
    loss, out = model(_batch())
    assert out.predictions["label"].shape == (8,) and torch.isfinite(loss)
