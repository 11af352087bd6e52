"""The feed model: losses per objective over real rows, weights and importance, the any head, the cross
layer's blocks, configuration errors, the task's evaluator, and that the history encoder learns a
history-only effect that the model without history cannot."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from tests.models.feed.batches import INPUTS, feed_batch, random_rows
from torchrec_app.config.errors import ConfigError
from torchrec_app.config.feed import FeedModelConfig
from torchrec_app.config.schema import AppConfig, CrossConfig, ModelConfig, SparseConfig
from torchrec_app.data.feed.batch import ACTIONS, OBJECTIVES
from torchrec_app.data.metadata import DatasetMetadata
from torchrec_app.metrics.binary import binary_metrics
from torchrec_app.models import task_for
from torchrec_app.models.feed.model import build_feed_model, feed_inputs


def _model(seed: int = 0, sparse: SparseConfig | None = None, inputs=INPUTS, **feed) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = ModelConfig(
        name="feed",
        dense_arch=[8],
        cross=CrossConfig(num_layers=1, low_rank=8),
        feed=FeedModelConfig(**{"encoder": "mean", "item_dim": 4, "max_history": 6, "tower_dims": [8], **feed}),
    )
    return build_feed_model(config, sparse or SparseConfig(embedding_dim=4), inputs, "cpu")


def test_losses_are_per_objective_bce_over_real_rows_combined_by_static_weights():
    model = _model(loss_weights={"chat": 3.0, "report": 0.0})
    rows = random_rows(6, seed=1)
    loss, output = model(feed_batch(rows + [{"item": None}, {"item": None}]))  # two padding rows
    assert list(output.predictions) == list(OBJECTIVES)
    for k, objective in enumerate(OBJECTIVES):
        labels = torch.tensor([row["labels"][k] for row in rows], dtype=torch.float32)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(output.predictions[objective][:6], labels)
        torch.testing.assert_close(output.losses[objective], expected)
        assert torch.equal(output.labels[objective][:6], labels)
    combined = sum(w * output.losses[o] for o, w in zip(OBJECTIVES, (1.0, 1.0, 3.0, 1.0, 0.0)))
    torch.testing.assert_close(loss.detach(), combined)
    unpadded, _ = model(feed_batch(rows))  # padding rows change nothing
    torch.testing.assert_close(loss, unpadded)


def test_importance_weighs_a_row_like_repeating_it():
    model = _model()
    rows = random_rows(4, seed=2)
    twice, _ = model(feed_batch([{**rows[0], "importance": 2.0}, *rows[1:]]))
    repeated, _ = model(feed_batch([rows[0], *rows]))
    torch.testing.assert_close(twice, repeated)


def test_objective_subset_and_any_head():
    rows = random_rows(8, seed=3)
    model = _model(objectives=["hide", "click"], any_head="on")
    loss, output = model(feed_batch(rows))
    assert list(output.predictions) == ["click", "hide", "any"]
    assert output.labels["hide"].tolist() == [float(r["labels"][3]) for r in rows]
    assert output.labels["any"].tolist() == [float(max(r["labels"])) for r in rows]
    assert not _model().tower.any_head
    downsampled = replace(INPUTS, negative_keep_rate=0.25)
    assert _model(inputs=downsampled).tower.any_head, "any_head=auto adds the head when the data was downsampled"
    assert not _model(inputs=downsampled, any_head="off").tower.any_head


@pytest.mark.parametrize("encoder", ["none", "lstm"])
def test_cross_input_blocks_describe_the_cross_layer_input(encoder):
    model = _model(encoder=encoder, history_dim=5, sparse=SparseConfig(embedding_dim=4, dims={"keywords": 12, "item": 8}))
    blocks = model.tower.cross_input_blocks()
    expected = [("dense", 8), ("user", 4), ("category", 4), ("keywords", 12), ("item", 8)]
    if encoder != "none":
        expected += [(f"hist_{a}", 5) for a in ACTIONS]
    assert blocks == expected
    assert model.tower.crossnet.V_kernels[0].shape[1] == sum(w for _, w in blocks)  # LowRankCrossNet reads x0 of that width
    assert [c.embedding_dim for c in model.item_embeddings.embedding_configs()] == [8]  # sparse.dims["item"] sizes t_item


@pytest.mark.parametrize("multitask", ["mmoe", "ple"])
def test_expert_heads_train(multitask):
    model = _model(multitask=multitask, num_experts=2, task_experts=1, expert_dims=[8])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = feed_batch(random_rows(16, seed=4))
    first = None
    for _ in range(5):
        optimizer.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first


def test_configuration_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"model.feed.objectives names \['like'\]"):
        _model(objectives=["like"])
    with pytest.raises(ConfigError, match=r"sparse.dims names \['hist_click'\].*model.feed.history_dim"):
        _model(sparse=SparseConfig(dims={"hist_click": 8}))
    with pytest.raises(ConfigError, match=r"model.feed.weighting='magic' is not one of .*static"):
        _model(weighting="magic")
    with pytest.raises(ConfigError, match=r"model.feed.loss_weights names \['chat'\]"):
        _model(objectives=["click"], loss_weights={"chat": 2.0})
    with pytest.raises(ValueError, match="model.feed.encoder='rnn' is not one of"):
        FeedModelConfig(encoder="rnn")
    feed_metadata = DatasetMetadata(
        kind="feed", dense_features=["d"], sparse_features=["user", "item"], num_embeddings={"user": 3, "item": 5}
    )
    with pytest.raises(ConfigError, match="data.max_ind_range=100 caps Criteo ids"):
        feed_inputs(feed_metadata, replace(AppConfig().data, max_ind_range=100))
    with pytest.raises(ConfigError, match="num_embeddings.item"):
        feed_inputs(
            DatasetMetadata(kind="feed", dense_features=["d"], sparse_features=["user"], num_embeddings={"user": 3}), AppConfig().data
        )


def test_feed_task_scores_every_objective_and_monitors_mean_auc():
    metadata = DatasetMetadata(
        kind="feed",
        dense_features=["d0", "d1", "d2"],
        sparse_features=["user", "category", "keywords"],
        num_embeddings={"user": 20, "category": 6, "keywords": 40, "item": 50},
        extra={"sampling": {"negative_keep_rate": 1.0}},  # not downsampled: the evaluator scores the raw logits
    )
    config = AppConfig(
        model=ModelConfig(name="feed", dense_arch=[8], feed=FeedModelConfig(item_dim=4, tower_dims=[4])),
        sparse=SparseConfig(embedding_dim=4),
    )
    task = task_for("feed")
    assert (task.data_kind, task.monitor, task.higher_is_better) == ("feed", "auc", True)
    model = task.build_model(config, metadata, "cpu").eval()
    assert "any" not in model.tower.heads_names
    downsampled = replace(metadata, extra={"sampling": {"negative_keep_rate": 0.5}})
    assert task.build_model(config, downsampled, "meta").tower.heads_names[-1] == "any", "a keep rate < 1 adds the any head"
    evaluator = task.make_evaluator(config, metadata)
    batches = [feed_batch(random_rows(8, seed=s) + [{"item": None}]) for s in (5, 6)]
    with torch.no_grad():
        for batch in batches:
            evaluator.update(model, batch)
        outputs = [model(b)[1] for b in batches]
    metrics = evaluator.compute()
    real = torch.cat([o.weights for o in outputs]) > 0
    for objective in OBJECTIVES:
        logits = torch.cat([o.predictions[objective] for o in outputs])[real].numpy()
        labels = torch.cat([o.labels[objective] for o in outputs])[real].numpy()
        for name, value in binary_metrics(logits, labels).items():
            assert metrics[f"{objective}/{name}"] == pytest.approx(value, nan_ok=True)
    scored = [metrics[f"{o}/auc"] for o in OBJECTIVES if metrics[f"{o}/auc"] == metrics[f"{o}/auc"]]  # not NaN
    assert scored and metrics["auc"] == pytest.approx(sum(scored) / len(scored))
    assert metrics["rows"] == 16
    facts = task.describe(config, downsampled)
    assert facts["item_table_parameters"] == 50 * 4 and facts["any_head"] is True


def _history_rows(count: int, seed: int) -> list[dict]:
    """Planted: click = 1 exactly when the candidate is in the click history (an effect only history reveals)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        history = rng.sample(range(1, 50), 4)
        clicked = rng.random() < 0.5
        item = rng.choice(history) if clicked else rng.choice([i for i in range(1, 50) if i not in history])
        rows.append(
            {
                "dense": [0.0, 0.0, 0.0],
                "pooled": {"user": [0], "category": [0], "keywords": []},
                "item": item,
                "history": {"click": history},
                "labels": [int(clicked), 0, 0, 0, 0],
            }
        )
    return rows


def _click_auc_after_training(encoder: str) -> float:
    model = _model(seed=0, encoder=encoder, objectives=["click"], item_dim=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    train = [feed_batch(_history_rows(64, seed=s)) for s in range(8)]
    for _ in range(8):
        for batch in train:
            optimizer.zero_grad()
            model(batch)[0].backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        _, output = model(feed_batch(_history_rows(400, seed=100)))
    return binary_metrics(output.predictions["click"].numpy(), output.labels["click"].numpy())["auc"]


def test_history_encoder_learns_an_effect_only_history_reveals():
    with_history, without = _click_auc_after_training("din"), _click_auc_after_training("none")
    print(f"click AUC with history {with_history:.3f}, without {without:.3f}")
    assert with_history > 0.85, with_history
    assert without < 0.6, without
