"""DCNv3: shapes, the field-halves reshape, the Tri-BCE loss, and that it learns a planted cross."""

from dataclasses import replace

import pytest
import torch

from tests.batches import random_batch
from torchrec_app.config import resolve_config
from torchrec_app.metrics.binary import roc_auc
from torchrec_app.models.ctr import weighted_bce
from torchrec_app.models.towers.dcnv3 import MaskedCrossNet, field_halves_order

FEATURES = ["C1", "C2", "C3"]
SIZES = {"C1": 30, "C2": 20, "C3": 10}


def _model(*overrides):
    from torchrec_app.models.ctr import build_model

    config = resolve_config("tiny", ["model.name=dcnv3", "model.dcnv3.num_deep_layers=2",
                                     "model.dcnv3.num_shallow_layers=2", *overrides])
    return build_model(config, 4, FEATURES, SIZES, device="cpu")


def _batch(rows=8, seed=0):
    return random_batch(FEATURES, 4, SIZES, rows, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dims", ["", "sparse.dims=C1:16,C3:3"])  # even d; odd d (8 + 16 + 8 + 3)
def test_shapes_with_per_feature_widths(dims):
    torch.manual_seed(0)
    model = _model(*([dims] if dims else []))
    arch = model.model
    out = arch(_batch().dense_features, _batch().sparse_features)
    assert out.logits.shape == (8,) and set(out.aux_logits) == {"ecn", "lcn"}
    assert torch.allclose(out.logits, (out.aux_logits["ecn"] + out.aux_logits["lcn"]) / 2)
    loss, step = model(_batch())
    assert step.predictions["label"].shape == (8,) and loss.ndim == 0
    loss.backward()
    assert all(p.grad is not None for p in [*arch.ecn.parameters(), *arch.lcn.parameters()])


def test_field_halves_pairs_each_fields_halves_with_one_cross_unit():
    widths = [4, 2, 6]
    order = field_halves_order(widths)
    field = torch.repeat_interleave(torch.arange(3), torch.tensor(widths))[order]
    half = sum(widths) // 2
    assert torch.equal(field[:half], field[half:])  # column j and j + d/2 come from one field
    assert sorted(order.tolist()) == list(range(sum(widths)))


def test_layer_update_rules():
    """ECN multiplies by its own input, LCN by x0 (one layer, no dropout: x1 = a * (c + b) + x0)."""
    torch.manual_seed(0)
    x0 = torch.randn(5, 6)
    for exponential in (True, False):
        net = MaskedCrossNet(6, 1, exponential, dropout=0.0)
        h = net.weights[0](x0)
        c = torch.cat([h, h * torch.relu(net.norms[0](h))], dim=1)
        x1 = x0 * (c + net.biases[0]) + x0
        assert torch.allclose(net(x0), net.logit(x1).squeeze(-1), atol=1e-6)
    net = MaskedCrossNet(6, 2, True, dropout=0.0)
    x = x0
    for _ in range(2):  # ECN layer 2 reads layer 1's output, not x0
        h = net.weights[_](x)
        x = x * (torch.cat([h, h * torch.relu(net.norms[_](h))], dim=1) + net.biases[_]) + x
    assert torch.allclose(net(x0), net.logit(x).squeeze(-1), atol=1e-5)


def test_tri_bce_adds_detached_branch_terms_and_ignores_padding():
    torch.manual_seed(0)
    model = _model()
    model.eval()  # no dropout
    batch = replace(_batch(), weights=torch.tensor([1.0] * 6 + [0.0] * 2))
    out = model.model(batch.dense_features, batch.sparse_features)
    main = weighted_bce(out.logits, batch.labels, batch.weights)
    expected = main.clone()
    for logits in out.aux_logits.values():
        branch = weighted_bce(logits, batch.labels, batch.weights)
        expected = expected + torch.clamp(branch - main, min=0) * branch
    loss, step = model(batch)
    assert torch.allclose(loss, expected) and loss >= main
    assert torch.equal(step.predictions["label"], out.logits.detach())
    flipped = replace(batch, labels=torch.cat([batch.labels[:6], 1 - batch.labels[6:]]))
    assert torch.allclose(model(flipped)[0], loss)  # padding labels are ignored


def test_learns_a_planted_cross():
    """AUC rises on data whose label is a C1 x C2 interaction (the trainer's run is in test_trainer)."""
    torch.manual_seed(0)
    before, after = learn_planted_cross(_model("model.dcnv3.deep_dropout=0", "model.dcnv3.shallow_dropout=0"))
    assert after > 0.75 and after > before + 0.15, (before, after)


def learn_planted_cross(model, steps=60, rows=256):
    """Test AUC of ``model`` before and after ``steps`` Adam steps on :func:`_planted` data."""
    generator = torch.Generator().manual_seed(1)
    test = _planted(random_batch(FEATURES, 4, SIZES, 2000, generator, max_ids_per_row=1))
    train = [_planted(random_batch(FEATURES, 4, SIZES, rows, generator, max_ids_per_row=1)) for _ in range(8)]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.eval()
    before = _auc(model(test)[1].predictions["label"], test.labels)
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        model(train[step % len(train)])[0].backward()
        optimizer.step()
    model.eval()
    return before, _auc(model(test)[1].predictions["label"], test.labels)


def _auc(logits, labels):
    return roc_auc(logits.detach().numpy(), labels.numpy())


def _planted(batch):
    """Label = 1 where the C1 and C2 ids (one or none per row) have the same parity."""
    kjt = batch.sparse_features.to_dict()
    ids = {}
    for name in ("C1", "C2"):
        jt = kjt[name]
        first = torch.full((batch.labels.numel(),), -1)
        has = jt.lengths() > 0
        first[has] = jt.values()[jt.offsets()[:-1][has]]
        ids[name] = first
    labels = ((ids["C1"] % 2) == (ids["C2"] % 2)) & (ids["C1"] >= 0) & (ids["C2"] >= 0)
    return replace(batch, labels=labels.float())
