"""The W read from each torchrec cross net is the matrix its first layer applies."""

from __future__ import annotations

import pytest
import torch
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet, LowRankMixtureCrossNet

from torchrec_app.tools.explain.cross_weight import cross_kind, cross_weight


def _first_layer_w_times(net: torch.nn.Module, x0: torch.Tensor) -> torch.Tensor:
    """Recover ``W x0`` from one cross layer: ``x1 = x0 * (W x0 + b) + x0`` with ``b = 0``."""
    return (net(x0.unsqueeze(0))[0] - x0) / x0


def test_full_and_low_rank_weights_reproduce_the_layer():
    torch.manual_seed(0)
    x0 = torch.rand(7) + 0.5
    for net in (CrossNet(7, 1), LowRankCrossNet(7, 1, low_rank=3)):
        w = cross_weight(net.state_dict())
        torch.testing.assert_close(w.float() @ x0, _first_layer_w_times(net, x0).detach(), rtol=1e-4, atol=1e-5)


def test_mixture_proxy_is_the_layer_where_relu_passes_and_gates_are_uniform():
    torch.manual_seed(0)
    net = LowRankMixtureCrossNet(6, 1, num_experts=2, low_rank=3)
    with torch.no_grad():  # make every ReLU pass and both gates equal: the proxy is then exact
        for p in (net.V_kernels[0], net.C_kernels[0]):
            p.abs_()
        for gate in net.gates:
            gate.weight.zero_()
    x0 = torch.rand(6) + 0.5
    w = cross_weight(net.state_dict())
    assert cross_kind(net.state_dict()) == "mixture"
    torch.testing.assert_close(w.float() @ x0, _first_layer_w_times(net, x0).detach(), rtol=1e-4, atol=1e-5)


def test_a_model_without_a_cross_net_is_named():
    with pytest.raises(ValueError, match="no DCNv2 cross net.*dcnv2 models only"):
        cross_weight({"over_arch.weight": torch.ones(2, 2)}, "crossnet.")
    with pytest.raises(ValueError, match="cross layer 3 not found.*layers \\[0, 1\\]"):
        cross_weight(CrossNet(4, 2).state_dict(), layer=3)
