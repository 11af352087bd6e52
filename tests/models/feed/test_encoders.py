"""History encoders on jagged input: rows are independent, padding is never read, empty histories are defined,
and the recurrent encoders read the history oldest to newest exactly like an unpadded LSTM / GRU."""

from __future__ import annotations

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from torchrec_app.config.feed import FeedModelConfig
from torchrec_app.models.feed.encoders import build_history_encoder, truncate

D, H, MAX = 4, 6, 5
ENCODERS = ["mean", "lstm", "gru", "din", "transformer"]


def _encoder(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = FeedModelConfig(encoder=name, item_dim=D, num_heads=2, max_history=MAX, attention_dims=[8], num_layers=1)
    return build_history_encoder(config, H).eval()


def _jagged(rows: list[torch.Tensor]) -> JaggedTensor:
    return JaggedTensor(values=torch.cat(rows) if rows else torch.zeros(0, D), lengths=torch.tensor([len(r) for r in rows]))


@pytest.mark.parametrize("name", ENCODERS)
def test_a_row_depends_on_its_own_history_only(name):
    encoder = _encoder(name)
    generator = torch.Generator().manual_seed(1)
    candidates = torch.randn(4, D, generator=generator)
    histories = [torch.randn(n, D, generator=generator) for n in (3, 0, 5, 1)]
    with torch.no_grad():
        together = encoder(candidates, _jagged(histories))
        alone = torch.cat([encoder(candidates[i : i + 1], _jagged([histories[i]])) for i in range(4)])
        # other rows with other lengths (and a longer batch) do not change row 0
        others = [histories[0], torch.randn(5, D, generator=generator), torch.zeros(0, D)]
        changed = encoder(torch.cat([candidates[:1], torch.randn(2, D, generator=generator)]), _jagged(others))
    assert together.shape == (4, H)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(changed[0], together[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ENCODERS)
def test_empty_histories_are_defined(name):
    encoder = _encoder(name)
    candidates = torch.randn(3, D)
    with torch.no_grad():
        out = encoder(candidates, _jagged([torch.zeros(0, D)] * 3))
    assert torch.isfinite(out).all()
    if name == "transformer":  # the candidate attends to itself: a function of the candidate only
        with torch.no_grad():
            assert torch.allclose(out[0], encoder(candidates[:1], _jagged([torch.zeros(0, D)]))[0], atol=1e-6)
        assert not torch.allclose(out[0], out[1])
    elif name in ("lstm", "gru"):
        assert out.abs().max() == 0
    else:  # mean, din: an empty sum is the zero vector, projected to H (the projection's bias)
        with torch.no_grad():
            expected = encoder.projection(torch.zeros(1, D))
        torch.testing.assert_close(out, expected.expand(3, H))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_encoder_reads_oldest_to_newest_without_padding(cell):
    encoder = _encoder(cell)
    history = torch.randn(4, D)  # newest first, as FeedBatch stores it
    with torch.no_grad():
        packed = encoder(torch.zeros(2, D), _jagged([history, history[:2]]))
        for row, items in enumerate([history, history[:2]]):
            _, state = encoder.rnn(items.flip(0)[None])  # oldest first, no padding at all
            hidden = state[0] if cell == "lstm" else state
            torch.testing.assert_close(packed[row], hidden[-1, 0], atol=1e-6, rtol=1e-5)


def test_din_attends_to_the_items_like_the_candidate():
    """With an attention unit that scores h . c, the output leans towards the history item most like the candidate."""
    encoder = _encoder("din")
    with torch.no_grad():
        for module in encoder.attention.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.zero_()
                module.bias.zero_()
        first = encoder.attention[0]._mlp[0]._linear  # the MLP's first layer reads [h, c, h - c, h * c]
        first.weight[0, 3 * D :] = 10.0  # unit 0 = 10 * sum(h * c)
        encoder.attention[1].weight[0, 0] = 1.0
        history = torch.eye(D)[:3]
        out = encoder(torch.eye(D)[1:2], _jagged([history]))
        weights = torch.linalg.lstsq(encoder.projection.weight, (out[0] - encoder.projection.bias)[:, None]).solution[:, 0]
    assert weights.argmax().item() == 1 and weights[1] > 0.99


def test_truncate_keeps_the_newest_items():
    jt = truncate(_jagged([torch.arange(4.0)[:, None].expand(4, D), torch.zeros(0, D)]), 2)
    assert jt.lengths().tolist() == [2, 0]
    assert jt.values()[:, 0].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("name", ENCODERS)
def test_gradients_reach_history_and_candidate(name):
    encoder = _encoder(name).train()
    values = torch.randn(4, D, requires_grad=True)
    candidates = torch.randn(2, D, requires_grad=True)
    encoder(candidates, JaggedTensor(values=values, lengths=torch.tensor([3, 1]))).sum().backward()
    assert values.grad.abs().sum() > 0
    if name in ("din", "transformer"):  # target-aware encoders read the candidate
        assert candidates.grad.abs().sum() > 0
