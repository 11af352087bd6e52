"""The fused dot interaction gives InteractionArch's numbers: forward and both gradients."""

import pytest
import torch
from torchrec.models.dlrm import InteractionArch

from torchrec_app.models.interaction import PairwiseDotInteraction, interaction_width


def _reference_without_dense(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """``[d, triu(E E^T, 1)]``: the textbook formula (full Gram matrix, gather, cat)."""
    num_sparse = sparse.shape[1]
    rows, cols = torch.triu_indices(num_sparse, num_sparse, offset=1)
    return torch.cat([dense, torch.bmm(sparse, sparse.transpose(1, 2))[:, rows, cols]], dim=1)


def _forward_backward(module, dense, sparse, grad_out):
    dense, sparse = dense.detach().requires_grad_(), sparse.detach().requires_grad_()
    out = module(dense, sparse)
    out.backward(grad_out)
    return out.detach(), dense.grad, sparse.grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("interact_dense", [True, False])
@pytest.mark.parametrize("num_sparse,dim", [(1, 4), (2, 3), (5, 8), (26, 16)])
def test_matches_the_current_interaction(num_sparse, dim, interact_dense, dtype):
    generator = torch.Generator().manual_seed(num_sparse * 100 + dim)
    batch = 7
    dense = torch.randn(batch, dim, generator=generator, dtype=dtype)
    sparse = torch.randn(batch, num_sparse, dim, generator=generator, dtype=dtype)
    width = interaction_width(dim, num_sparse, interact_dense)
    grad_out = torch.randn(batch, width, generator=generator, dtype=dtype)
    reference = InteractionArch(num_sparse_features=num_sparse) if interact_dense else _reference_without_dense
    fused = PairwiseDotInteraction(num_sparse_features=num_sparse, interact_dense=interact_dense)

    expected = _forward_backward(reference, dense, sparse, grad_out)
    got = _forward_backward(fused, dense, sparse, grad_out)

    assert got[0].shape == (batch, width) == expected[0].shape
    for name, g, e in zip(("output", "dense grad", "sparse grad"), got, expected):
        torch.testing.assert_close(g, e, msg=lambda m: f"{name}: {m}")  # default tolerances of dtype


def test_matches_under_bf16_autocast():
    """``train.amp=bf16``: the dense arch hands over bf16, the tables fp32; gradients come back in each input's dtype."""
    generator = torch.Generator().manual_seed(0)
    dense, sparse = torch.randn(6, 8, generator=generator).bfloat16(), torch.randn(6, 4, 8, generator=generator)
    grad_out = torch.randn(6, interaction_width(8, 4), generator=generator).bfloat16()
    results = []
    for module in (InteractionArch(num_sparse_features=4), PairwiseDotInteraction(num_sparse_features=4)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(_forward_backward(module, dense, sparse, grad_out))
    for name, got, expected in zip(("output", "dense grad", "sparse grad"), results[1], results[0]):
        assert got.dtype == expected.dtype, name
        # both round to bf16 (8 bits of mantissa), summing in different orders: compare at bf16's resolution
        torch.testing.assert_close(got, expected, rtol=1.6e-2, atol=1e-2, msg=lambda m: f"{name}: {m}")


def test_column_order_is_interaction_arch_order():
    """Columns: d, then <d, e_f>, then <e_i, e_j> for i < j row by row (what the over arch's weights assume)."""
    dense = torch.tensor([[1.0, 0.0]])
    sparse = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]]])  # e_1, e_2, e_3
    out = PairwiseDotInteraction(num_sparse_features=3)(dense, sparse)
    # d | <d,e1> <d,e2> <d,e3> | <e1,e2> <e1,e3> <e2,e3>
    assert out.tolist() == [[1.0, 0.0, 1.0, 2.0, 0.0, 2.0, 3.0, 0.0]]


def test_is_a_leaf_for_torch_fx():
    """TorchRec's train pipeline traces the model with torch.fx: the interaction must trace as one call."""

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.interaction = PairwiseDotInteraction(num_sparse_features=3)

        def forward(self, dense, sparse):
            return self.interaction(dense, sparse).sum(dim=1)

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, name):  # trace into every module, as the pipeline does for hybrid ones
            return False

    graph = Tracer().trace(Head())
    calls = [n.target.__name__ for n in graph.nodes if n.op == "call_function"]
    assert "_pairwise_dot" in calls
    traced = torch.fx.GraphModule(Head(), graph)
    dense, sparse = torch.rand(4, 2), torch.rand(4, 3, 2)
    torch.testing.assert_close(traced(dense, sparse), Head()(dense, sparse))
