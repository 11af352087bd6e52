"""Recipes and dotted overrides: what users type on the command line."""

import pytest

from torchrec_app.cli import main as cli_main
from torchrec_app.config import RECIPES, ConfigError, resolve_config


def test_every_recipe_builds_and_names_itself():
    assert {"tiny", "default", "criteo_kaggle_dlrm", "criteo_kaggle_dcnv2", "criteo_1tb_dcnv2_mlperf"} <= set(RECIPES)
    for name in RECIPES:
        assert resolve_config(name, []).recipe == name


def test_mlperf_recipe_has_the_mlperf_dcnv2_shape():
    config = resolve_config("criteo_1tb_dcnv2_mlperf", [])
    assert config.sparse.embedding_dim == 128
    assert config.model.dense_arch == [512, 256, 128]
    assert config.model.over_arch == [1024, 1024, 512, 256, 1]
    assert (config.model.cross.num_layers, config.model.cross.low_rank) == (3, 512)
    assert config.optim.sparse == "adagrad" and config.optim.dense == "adagrad"


def test_overrides_are_parsed_by_field_type():
    config = resolve_config("tiny", [
        "train.batch_size=128", "model.over_arch=32,16,1", "model.cross.kind=mixture",
        "sparse.dims=C1:16,C2:4", "train.pipeline=false", "optim.dense_lr=0.5",
    ])
    assert config.train.batch_size == 128
    assert config.model.over_arch == [32, 16, 1]
    assert config.model.cross.kind == "mixture"
    assert config.sparse.dims == {"C1": 16, "C2": 4}
    assert config.train.pipeline is False
    assert config.optim.dense_lr == 0.5


@pytest.mark.parametrize("override,message", [
    ("train.batchsize=3", "unknown config key 'train.batchsize'"),
    ("nosuch.key=3", "'nosuch' is not one of"),
    ("train.batch_size=abc", "train.batch_size: expected int, got 'abc'"),
    ("train.batch_size=0", "train.batch_size must be > 0"),
    ("model.cross.kind=diagonal", "model.cross.kind='diagonal' is not one of full, low_rank, mixture"),
    ("model.over_arch=64,2", "model.over_arch must end in 1"),
    ("sharding.types=row_wise,diagonal", "sharding.types='diagonal' is not one of"),
    ("model=3", "model is a section"),
    ("train.batch_size", "expected section.key=value"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config("tiny", [override])


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; known recipes: .*criteo_kaggle_dlrm"):
        resolve_config("nope", [])


def test_cli_reports_config_errors_with_exit_code_2(capsys):
    assert cli_main(["show-config", "--recipe", "tiny", "train.epochs=-1"]) == 2
    assert "error: train.epochs must be > 0" in capsys.readouterr().err


def test_show_config_prints_the_resolved_config(capsys):
    assert cli_main(["show-config", "--recipe", "tiny", "train.batch_size=7"]) == 0
    assert '"batch_size": 7' in capsys.readouterr().out
