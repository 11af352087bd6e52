"""SASRec, BERT4Rec, GRU4Rec: what each position sees, cloze masking, losses, scoring, pretrained weights."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.sequences import RankingEvalConfig, SequenceModelConfig
from torchrec_app.data.sequences.batches import ItemSide, iter_batches
from torchrec_app.metrics.ranking import rank_full_scores
from torchrec_app.models.sequential.encoders import BERT4Rec, cloze_mask
from torchrec_app.models.sequential.model import batcher_for, build_sequential_model
from torchrec_app.models.sequential.pretrain import build_pretraining_model, load_pretrained
from torchrec_app.models.sequential.scoring import NextItemEvaluator

N = 30
CONFIG = SequenceModelConfig(max_len=6, embedding_dim=8, num_blocks=1, num_heads=2, dropout=0.0, loss="full", num_negatives=5)


def rows(items: list[list[int]], targets: list[int] | None = None) -> pa.Table:
    return pa.table({"user": pa.array(list(range(len(items))), pa.int32()),
                     "items": pa.array(items, pa.list_(pa.int32())),
                     "target": pa.array(targets or [0] * len(items), pa.int32())})


def test_cloze_mask_rate_padding_and_determinism():
    lengths = torch.randint(0, 51, (2000,))
    users = torch.arange(2000)
    mask = cloze_mask(lengths, 50, 0.2, seed=3, step=torch.tensor(7), users=users)
    real = torch.arange(50)[None, :] < lengths[:, None]
    assert not (mask & ~real).any(), "padding positions are never masked"
    assert (mask.sum(1) >= 1)[lengths > 0].all(), "every non-empty sequence trains on at least one position"
    assert abs(mask[real].float().mean().item() - 0.2) < 0.02
    assert torch.equal(mask, cloze_mask(lengths, 50, 0.2, seed=3, step=torch.tensor(7), users=users))  # resumable
    assert not torch.equal(mask, cloze_mask(lengths, 50, 0.2, seed=3, step=torch.tensor(8), users=users))  # new each step


def test_bert4rec_never_sees_a_masked_item():
    """The encoder's output is the same whatever item sits at a masked position."""
    encoder = BERT4Rec(CONFIG).eval()
    x = torch.randn(4, 6, 8)
    lengths = torch.tensor([6, 4, 2, 1])
    masked = torch.zeros(4, 6, dtype=torch.bool)
    masked[0, 2] = masked[1, 3] = masked[2, 0] = True
    other = x.clone()
    other[masked] = torch.randn(int(masked.sum()), 8)
    assert torch.allclose(encoder(x, lengths, masked), encoder(other, lengths, masked), atol=1e-6)
    unmasked_change = x.clone()
    unmasked_change[0, 1] = torch.randn(8)
    assert not torch.allclose(encoder(x, lengths, masked), encoder(unmasked_change, lengths, masked))


def test_bert4rec_trains_on_masked_positions_and_scores_at_an_appended_mask():
    torch.manual_seed(0)
    model = build_sequential_model("bert4rec", CONFIG, N, device="cpu")
    seen = {}
    model.tower.encoder.register_forward_pre_hook(lambda module, args: seen.update(masked=args[2].clone(), lengths=args[1]))
    batch = batcher_for("bert4rec", CONFIG, N)(rows([[1, 2, 3, 4, 5, 6], [7, 8, 9]]), 3)
    model.train()
    loss, _ = model(batch)
    assert loss.item() > 0 and seen["masked"].any(dim=1)[:2].all() and not seen["masked"][2].any()
    model.eval()
    evaluation = batcher_for("bert4rec", CONFIG, N)(rows([[1, 2, 3, 4, 5, 6, 7], [9]], targets=[10, 11]), 2)
    assert evaluation.lengths.tolist() == [5, 1]  # the history keeps max_len - 1 items: room for the mask
    model.user_vectors(evaluation)
    assert seen["masked"].tolist() == [[False] * 5 + [True], [False, True] + [False] * 4]
    assert seen["lengths"].tolist() == [6, 2]


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_causal_models_do_not_look_ahead(name):
    torch.manual_seed(0)
    model = build_sequential_model(name, CONFIG, N, device="cpu").eval()
    batcher = batcher_for(name, CONFIG, N)
    a = batcher(rows([[1, 2, 3, 4, 5]], targets=[9]), 1)
    b = batcher(rows([[1, 2, 3, 17, 18]], targets=[9]), 1)
    x_a = model.tower.inputs(model.embeddings(a.features), a)[1]
    x_b = model.tower.inputs(model.embeddings(b.features), b)[1]
    h_a = model.tower.encoder(x_a[:, :6], a.lengths)
    h_b = model.tower.encoder(x_b[:, :6], b.lengths)
    assert torch.allclose(h_a[:, :3], h_b[:, :3], atol=1e-6) and not torch.allclose(h_a[:, 3], h_b[:, 3])


@pytest.mark.parametrize("name,loss", [("sasrec", "full"), ("sasrec", "sampled"), ("sasrec", "in_batch"),
                                       ("bert4rec", "full"), ("gru4rec", "sampled")])
def test_a_few_steps_lower_the_loss(name, loss):
    torch.manual_seed(0)
    config = SequenceModelConfig(max_len=6, embedding_dim=8, num_blocks=1, num_heads=2, dropout=0.0, loss=loss, num_negatives=5)
    model = build_sequential_model(name, config, N, device="cpu")
    batch = batcher_for(name, config, N)(rows([[i % N + 1 for i in range(s, s + 6)] for s in range(8)]), 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        loss_value, output = model(batch)
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_evaluator_ranks_the_whole_catalog_with_seen_items_masked():
    torch.manual_seed(0)
    model = build_sequential_model("sasrec", CONFIG, N, device="cpu").eval()
    batcher = batcher_for("sasrec", CONFIG, N)
    table = rows([[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12]], targets=[4, 12, 13])
    for mask_seen in (True, False):
        evaluator = NextItemEvaluator(RankingEvalConfig(ks=[1, 5], mask_seen=mask_seen, save_top_k=4, item_block=7))
        for batch in iter_batches(table, batcher, 2):
            evaluator.update(model, batch)
        per_user = evaluator.metrics.per_user_table()
        with torch.no_grad():
            batch = batcher(table, 3)
            scores = model.user_vectors(batch) @ model.embeddings.embeddings["t_item"].weight.t()
        seen = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12]] if mask_seen else None
        ranks, top, _ = rank_full_scores(scores, torch.tensor([[4], [12], [13]]), seen, k=4, min_item=1)
        assert per_user.column("ranks").to_pylist() == ranks.tolist()
        assert per_user.column("top_k").to_pylist() == top.tolist()
        if mask_seen:  # user 1's history (4..11) is out of its list; user 0's target 4 stays in its ranking
            assert not set(top[1].tolist()) & set(range(4, 12))
        metrics = evaluator.compute()
        assert metrics["users"] == metrics["rows"] == 3 and 0 <= metrics["ndcg@5"] <= 1


def test_pretrained_tables_and_encoder_load_into_the_fine_tuned_model(tmp_path):
    config = SequenceModelConfig(max_len=6, embedding_dim=8, num_blocks=1, num_heads=2, side_info=True, backbone="sasrec")
    torch.manual_seed(1)
    pretrained = build_pretraining_model(config, N, genre_slots=2, side_sizes=(5, 4), device="cpu")
    path = tmp_path / "pretrained.pt"
    torch.save(pretrained.state_dict(), path)
    torch.manual_seed(2)
    model = build_sequential_model("sasrec", config, N, genre_slots=2, side_sizes=(5, 4), device="cpu")
    loaded = load_pretrained(model, str(path))
    assert {"embeddings.embeddings.t_item.weight", "embeddings.embeddings.t_genre.weight",
            "embeddings.embeddings.t_year.weight"} <= set(loaded)
    source = pretrained.state_dict()
    for name, value in model.state_dict().items():
        if name.startswith(("embeddings.", "tower.encoder.")):
            assert torch.equal(value, source[name]), name
    other = build_sequential_model("sasrec", SequenceModelConfig(max_len=6, embedding_dim=4, num_heads=2), N, device="cpu")
    with pytest.raises(ConfigError, match="none of its tables matches"):
        load_pretrained(other, str(path))


def test_s3rec_objectives_train_from_genres():
    config = SequenceModelConfig(max_len=6, embedding_dim=8, num_blocks=1, num_heads=2, dropout=0.0, side_info=True,
                                 backbone="sasrec", num_negatives=5, mask_prob=0.3)
    torch.manual_seed(0)
    model = build_pretraining_model(config, N, genre_slots=2, side_sizes=(5, 4), device="cpu")
    rng = np.random.default_rng(0)
    side = ItemSide(genre_ids=np.c_[rng.integers(1, 5, N + 1), np.zeros(N + 1, int)], year_ids=rng.integers(0, 4, N + 1))
    batcher = batcher_for("sasrec", config, N, side, pretrain=True, num_genres=4)
    batch = batcher(rows([[i % N + 1 for i in range(s, s + 6)] for s in range(8)]), 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(15):
        loss, output = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first or {k: v.item() for k, v in output.losses.items()}
    last = {k: v.item() for k, v in output.losses.items()}
    assert set(last) == {"aap", "mip", "map"} and all(last[k] < first[k] for k in last), (first, last)
