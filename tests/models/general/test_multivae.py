"""Multi-VAE: the KL annealing schedule, the multinomial likelihood, training in the one loop."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch

from tests.general_data import make_general_datasets
from torchrec_app.cli import main as cli_main
from torchrec_app.config.general import MultiVaeConfig
from torchrec_app.data.user_items import UserItemsBatcher
from torchrec_app.models.general.multivae import MultiVae, kl_weight


def test_kl_weight_grows_linearly_to_the_cap_and_stays_there():
    assert [kl_weight(s, 0.2, 100) for s in (0, 10, 20, 50, 10_000)] == [0.0, 0.1, 0.2, 0.2, 0.2]
    assert [kl_weight(s, 1.0, 4) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert kl_weight(0, 0.35, 0) == 0.35  # no annealing
    assert float(kl_weight(torch.tensor(30), 0.2, 100)) == pytest.approx(0.2)


def _rows(items, targets=None):
    targets = targets or [[] for _ in items]
    return pa.table({"user": pa.array(range(len(items)), pa.int32()), "items": pa.array(items, pa.list_(pa.int32())),
                     "targets": pa.array(targets, pa.list_(pa.int32()))})  # fmt: skip


def test_the_model_anneals_per_training_step_and_keeps_its_clock_in_the_state():
    torch.manual_seed(0)
    config = MultiVaeConfig(hidden_dim=8, latent_dim=4, input_dropout=0.0, anneal_cap=0.3, total_anneal_steps=4)
    model = MultiVae(12, config, device="cpu")
    batch = UserItemsBatcher()(_rows([[1, 2, 3], [4, 5], [6]]), 4)
    betas = []
    for _ in range(6):
        _, output = model(batch)
        betas.append(round(float(output.losses["beta"]), 6))
    assert betas == [0.0, 0.25, 0.3, 0.3, 0.3, 0.3]
    model.eval()
    model(batch)  # evaluation does not advance the schedule
    assert int(model.tower.step) == 6 and int(model.state_dict()["tower.step"]) == 6


def test_loss_is_the_multinomial_likelihood_plus_beta_kl_over_real_users():
    torch.manual_seed(0)
    model = MultiVae(9, MultiVaeConfig(hidden_dim=8, latent_dim=4, input_dropout=0.0, total_anneal_steps=0, anneal_cap=0.5), device="cpu")
    model.eval()  # z = mu: deterministic
    batch = UserItemsBatcher()(_rows([[1, 2, 3], [4, 5]]), 3)
    loss, output = model(batch)
    logits = model.score(batch)
    log_probs = torch.log_softmax(logits, dim=1)
    nll = -torch.stack([log_probs[0, [1, 2, 3]].sum(), log_probs[1, [4, 5]].sum()])
    assert torch.isinf(logits[:, 0]).all() and output.weights.tolist() == [1.0, 1.0, 0.0]
    assert float(output.losses["nll"]) == pytest.approx(float(nll.mean()), rel=1e-5)
    assert float(loss) == pytest.approx(float(output.losses["nll"] + 0.5 * output.losses["kl"]), rel=1e-5)


def test_input_dropout_drops_training_items_only_and_new_ones_each_time():
    batcher = UserItemsBatcher(input_dropout=0.5, seed=1)
    rows = _rows([list(range(1, 41))])
    first, second = batcher(rows, 1), batcher(rows, 1)
    kept = [b.features["item"].values().tolist() for b in (first, second)]
    assert 8 < len(kept[0]) < 32 and kept[0] != kept[1]
    assert first.num_items.tolist() == [40.0] and first.items.shape == (1, 40)  # the likelihood counts every item
    evaluation = batcher(_rows([list(range(1, 41))], [[42]]), 1)
    assert evaluation.features["item"].values().tolist() == list(range(1, 41))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return make_general_datasets(tmp_path_factory.mktemp("multivae"))


def test_train_recipe_multivae_runs_in_the_loop_and_learns(datasets, tmp_path):
    run = tmp_path / "multivae"
    assert cli_main(["train", "--recipe", "multivae", "--data", str(datasets["general"]), "--out", str(run),
                     "multivae.hidden_dim=32", "multivae.latent_dim=8", "multivae.total_anneal_steps=20",
                     "train.epochs=12", "train.batch_size=32", "train.progress_bar=false"]) == 0  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "general" and summary["monitor"] == "ndcg@10" and summary["test_users"] == 160
    assert (run / "details" / "valid.parquet").exists() and (run / "details" / "test.parquet").exists()
    assert (run / "plan.txt").read_text().count("t_item") >= 1  # the item table went through the planner
    history = summary["history"]
    assert history[-1]["valid_ndcg@10"] > history[0]["valid_ndcg@10"]
