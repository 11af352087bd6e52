"""The block split follows DCNv2's input layout; the two block scores behave as documented."""

from __future__ import annotations

import pytest
import torch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_app.config.schema import CrossConfig, SparseConfig
from torchrec_app.models.sparse import SparseArch, build_tables
from torchrec_app.models.towers.dcnv2 import DCNv2
from torchrec_app.tools.explain.blocks import InputLayout, block_scores, rank_crosses, rank_features, split_blocks

FEATURES, DIMS = ["C1", "C2", "C3"], {"C1": 8, "C2": 4, "C3": 12}


@pytest.fixture
def model() -> DCNv2:
    torch.manual_seed(0)
    tables = build_tables(SparseConfig(embedding_dim=4, dims=DIMS), FEATURES, {f: 10 for f in FEATURES})
    return DCNv2(SparseArch(EmbeddingBagCollection(tables=tables)), 3, [8, 6], [8, 1],
                 CrossConfig(kind="full", num_layers=1), "stacked")


def test_block_split_matches_the_input_layout_for_unequal_widths(model):
    arch = model.sparse_arch
    layout = InputLayout.of(6, arch.feature_names, arch.feature_dims)
    assert layout.names == ("dense", "C1", "C2", "C3") and layout.widths == (6, 8, 4, 12)
    assert layout.total == model.input_dim == 30
    # x0's columns of C2 are C2's pooled embedding
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=FEATURES, values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 1, 1]))
    x0 = torch.cat([model.dense_arch(torch.rand(1, 3)), arch(kjt)], dim=1)[0]
    expected = arch.embedding_bag_collection(kjt).to_dict()["C2"][0]
    assert torch.equal(x0[layout.slice("C2")], expected)
    # block (i, j) is how input block j moves output block i: W x0 restricted to i's rows
    w = model.crossnet.kernels[0].detach()
    blocks = split_blocks(w, layout)
    for i, out_name in enumerate(layout.names):
        for j, in_name in enumerate(layout.names):
            assert blocks[i][j].shape == (layout.widths[i], layout.widths[j])
            only_j = torch.zeros_like(x0)
            only_j[layout.slice(in_name)] = x0[layout.slice(in_name)]
            torch.testing.assert_close((w @ only_j)[layout.slice(out_name)], blocks[i][j] @ x0[layout.slice(in_name)])


def test_split_names_a_weight_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"cross weight is \(5, 5\).*N = 6"):
        split_blocks(torch.ones(5, 5), InputLayout.of(2, ["a"], [4]))


def test_all_ones_weight_normalized_equal_plain_grows_with_width():
    layout = InputLayout.of(4, ["w2", "w4", "w8", "w16"], [2, 4, 8, 16])
    scores = block_scores(torch.ones(layout.total, layout.total), layout)
    assert torch.allclose(scores.normalized, torch.ones(5, 5, dtype=torch.float64))
    widths = torch.tensor(layout.widths, dtype=torch.float64)
    assert torch.allclose(scores.plain, torch.sqrt(torch.outer(widths, widths)))
    features = {r.names[0]: r for r in rank_features(scores)}
    assert all(abs(r.normalized - 1.0) < 1e-12 for r in features.values())
    plain = [features[n].plain for n in ("w2", "w4", "w8", "w16")]
    assert plain == sorted(plain) and plain[0] < plain[-1]
    crosses = rank_crosses(scores)
    assert all(abs(r.normalized - 1.0) < 1e-12 for r in crosses)
    by_plain = sorted(crosses, key=lambda r: -r.plain)
    assert by_plain[0].names == ("w8", "w16")  # widest pair has the largest plain norm, same per-dim weight


def test_normalized_score_finds_a_narrow_strong_cross_the_plain_norm_misses():
    layout = InputLayout.of(2, ["narrow_a", "narrow_b", "wide_a", "wide_b"], [2, 2, 32, 32])
    w = torch.full((layout.total, layout.total), 0.1)
    w[layout.slice("narrow_a"), layout.slice("narrow_b")] = 1.0  # strong per dimension
    w[layout.slice("wide_a"), layout.slice("wide_b")] = 0.2  # weak, but 256x the entries
    scores = block_scores(w, layout)
    crosses = rank_crosses(scores)
    assert crosses[0].names == ("narrow_a", "narrow_b")
    assert max(crosses, key=lambda r: r.plain).names == ("wide_a", "wide_b")
