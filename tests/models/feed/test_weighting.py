"""Objective weighting schemes behave as their papers say, on toy problems (torchrec_app.models.feed.weighting)."""

from __future__ import annotations

import pytest
import torch

from tests.multiprocess import run_on_ranks
from torchrec_app.config.errors import ConfigError
from torchrec_app.config.feed import FeedModelConfig
from torchrec_app.models.feed.losses import build_weighting as build_from_config
from torchrec_app.models.feed.weighting import DynamicWeightAverage, dwa_weights

OBJECTIVES = ["click", "watch", "chat"]


def build_weighting(name: str, names: list[str], loss_weights: dict[str, float] | None = None, **options):
    """The weighting ``model.feed.weighting=name`` builds, through the model's hook."""
    return build_from_config(FeedModelConfig(weighting=name, loss_weights=loss_weights or {}, **options), names)


def test_static_is_the_weighted_sum_and_has_no_state() -> None:
    weighting = build_weighting("static", OBJECTIVES, {"chat": 3.0, "watch": 0.5})
    losses = torch.tensor([0.6, 0.4, 0.05], requires_grad=True)
    loss = weighting(dict(zip(OBJECTIVES, losses)))
    assert float(loss.detach()) == pytest.approx(0.6 + 0.5 * 0.4 + 3.0 * 0.05)
    loss.backward()
    assert losses.grad.tolist() == pytest.approx([1.0, 0.5, 3.0])
    assert list(weighting.parameters()) == [] and weighting.state_dict() == {}
    with pytest.raises(ConfigError, match=r"loss_weights names \['hide'\]"):
        build_weighting("static", OBJECTIVES, {"hide": 2.0})
    with pytest.raises(ConfigError, match="model.feed.weighting='gradnorm' is not one of"):
        build_weighting("gradnorm", OBJECTIVES)


def test_uncertainty_weights_converge_to_inverse_loss_scales() -> None:
    """Kendall et al.: at the optimum of sum exp(-s) L + s/2 in s, the weight exp(-s) is 1 / (2 L)."""
    torch.manual_seed(0)
    # A shared linear model fit to three regression targets whose noise differs 100x in scale:
    # each objective's loss tends to its noise variance, and its learned weight to 1 / (2 variance).
    noise_var = torch.tensor([1.0, 0.1, 0.01])
    x = torch.randn(4096, 4)
    true_w = torch.randn(4, 3)
    y = x @ true_w + torch.randn(4096, 3) * noise_var.sqrt()
    model = torch.nn.Linear(4, 3)
    weighting = build_weighting("uncertainty", OBJECTIVES)
    optimizer = torch.optim.Adam([*model.parameters(), *weighting.parameters()], lr=0.1)
    for _ in range(600):
        losses = ((model(x) - y) ** 2).mean(dim=0)
        optimizer.zero_grad()
        weighting(dict(zip(OBJECTIVES, losses))).backward()
        optimizer.step()
    final = ((model(x) - y) ** 2).mean(dim=0).detach()
    assert final.tolist() == pytest.approx(noise_var.tolist(), rel=0.1)
    assert weighting.weights().tolist() == pytest.approx((1 / (2 * final)).tolist(), rel=0.05)
    # the parameters are what the trainer's optimizer and checkpoints see
    assert set(weighting.state_dict()) == {"log_variance"}
    with pytest.raises(ConfigError, match="applies to model.feed.weighting=static only"):
        build_weighting("uncertainty", OBJECTIVES, {"chat": 2.0})
    with pytest.raises(ValueError, match="expected the losses of"):
        weighting({"click": torch.tensor(1.0)})


def test_dwa_weights_follow_the_loss_ratio_formula_and_resume() -> None:
    """Liu et al. eq. 7: lambda_k(t) = T softmax_k(L_k(t-1) / L_k(t-2) / tau), weight 1 for t = 1, 2."""
    period, tau = 3, 2.0
    weighting = build_weighting("dwa", OBJECTIVES, dwa_period=period, dwa_temperature=tau)
    generator = torch.Generator().manual_seed(1)
    period_means, seen = [], []
    for t in range(5):
        steps = torch.rand(period, 3, generator=generator) * torch.tensor([1.0, 0.5, 0.1]) * 0.7**t
        if t == 2:  # resume mid-training from a checkpoint of the state: the copy must continue identically
            copy = DynamicWeightAverage(OBJECTIVES, period=period, temperature=tau)
            copy.load_state_dict(weighting.state_dict())
            weighting = copy
        for losses in steps:
            seen.append(weighting.weights())
            losses = losses.clone().requires_grad_()
            weighting(dict(zip(OBJECTIVES, losses))).backward()  # also at a period's end, which updates the weights
            assert torch.equal(losses.grad, seen[-1])
        period_means.append(steps.double().mean(dim=0))
    for t in range(5):
        used = seen[t * period : (t + 1) * period]
        expected = torch.ones(3) if t < 2 else dwa_weights(period_means[t - 1], period_means[t - 2], tau).float()
        for w in used:  # fixed within a period
            assert torch.allclose(w, expected, atol=1e-6)
        assert float(used[0].sum()) == pytest.approx(3.0)
    # the objective whose loss fell least in the last period gets the most weight
    ratio = period_means[-1] / period_means[-2]
    assert int(weighting.weights().argmax()) == int(ratio.argmax())
    # evaluation-mode forwards change nothing
    state = {k: v.clone() for k, v in weighting.state_dict().items()}
    weighting.eval()
    weighting(torch.ones(3))
    assert all(torch.equal(state[k], v) for k, v in weighting.state_dict().items())


def _dwa_on_rank(runtime, period: int) -> list[float]:
    """Each rank sees different losses; the weights after two periods must be the same everywhere."""
    weighting = DynamicWeightAverage(OBJECTIVES, period=period)
    scale = torch.tensor([1.0, 2.0, 3.0]) if runtime.rank == 0 else torch.tensor([3.0, 1.0, 0.5])
    for t in range(3 * period):
        weighting(scale * 0.5 ** (t // period))
    return weighting.weights().tolist()


def test_dwa_weights_are_identical_on_every_rank() -> None:
    per_rank = run_on_ranks(_dwa_on_rank, 2, 2)
    assert per_rank[0] == per_rank[1]
    # the global mean losses are (2, 1.5, 1.75) * 0.5^t on both ranks: ratios all 1/2 -> equal weights
    assert per_rank[0] == pytest.approx([1.0, 1.0, 1.0])
