"""MaskNet: shapes (serial and parallel, per-feature widths), the per-field norm, and learning."""

import pytest
import torch

from tests.batches import random_batch
from tests.models.test_dcnv3 import FEATURES, SIZES, learn_planted_cross
from torchrec_app.config import resolve_config
from torchrec_app.models.ctr import build_model
from torchrec_app.models.towers.masknet import FieldLayerNorm, MaskBlock


def _model(*overrides):
    config = resolve_config("tiny", ["model.name=masknet", "model.masknet.block_dims=16,8",
                                     "model.masknet.num_blocks=2", "model.masknet.block_dim=8", *overrides])
    return build_model(config, 4, FEATURES, SIZES, device="cpu")


@pytest.mark.parametrize("structure", ["serial", "parallel"])
@pytest.mark.parametrize("dims", ["", "sparse.dims=C1:16,C3:3"])
def test_shapes_with_per_feature_widths(structure, dims):
    torch.manual_seed(0)
    model = _model(f"model.masknet.structure={structure}", "model.masknet.reduction_ratio=2", *([dims] if dims else []))
    arch = model.model
    batch = random_batch(FEATURES, 4, SIZES, 8, torch.Generator().manual_seed(0))
    assert arch.input_dim == 8 + sum(arch.sparse_arch.feature_dims)
    loss, out = model(batch)
    assert out.predictions["label"].shape == (8,) and loss.ndim == 0
    loss.backward()
    assert all(p.grad is not None for p in arch.blocks.parameters())
    mask_hidden = arch.blocks[0].mask[0].out_features
    assert mask_hidden == 2 * arch.input_dim  # reduction ratio x the width it masks


def test_field_layer_norm_matches_one_layer_norm_per_field():
    widths = [8, 16, 3]
    norm = FieldLayerNorm(widths)
    with torch.no_grad():
        norm.weight.uniform_()
        norm.bias.uniform_()
    x = torch.randn(5, sum(widths)) * 3 + 1
    pieces, start = [], 0
    for w in widths:
        sl = slice(start, start + w)
        pieces.append(torch.nn.functional.layer_norm(x[:, sl], (w,), norm.weight[sl], norm.bias[sl]))
        start += w
    assert torch.allclose(norm(x), torch.cat(pieces, dim=1), atol=1e-5)


def test_mask_block_is_ln_of_masked_projection():
    torch.manual_seed(0)
    block = MaskBlock(6, 4, 3)
    v_emb, v_in = torch.randn(5, 6), torch.randn(5, 4)
    mask = block.mask(v_emb)
    expected = torch.relu(block.hidden[1](block.hidden[0](mask * v_in)))
    assert torch.allclose(block(v_emb, v_in), expected)


@pytest.mark.parametrize("structure", ["serial", "parallel"])
def test_learns_a_planted_cross(structure):
    torch.manual_seed(0)
    before, after = learn_planted_cross(_model(f"model.masknet.structure={structure}"))
    assert after > 0.75 and after > before + 0.15, (before, after)
