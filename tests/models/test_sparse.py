"""Pooled embeddings back in feature order: the values and gradients of split-by-key-and-cat."""

import torch
from torchrec.sparse.jagged_tensor import KeyedTensor

from torchrec_app.models.sparse import pooled_in_feature_order


def test_shard_order_is_put_back_in_feature_order_with_the_same_gradients():
    widths = {"a": 4, "b": 2, "c": 8, "d": 4}
    shard_order = ["c", "a", "d", "b"]  # as a sharded collection returns them
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(5, sum(widths.values()), generator=generator)
    grad_out = torch.randn(5, sum(widths.values()), generator=generator)
    results = []
    for how in ("cat", "fused"):
        leaf = values.clone().requires_grad_()
        kt = KeyedTensor(keys=shard_order, length_per_key=[widths[k] for k in shard_order], values=leaf)
        if how == "cat":
            by_name = kt.to_dict()
            out = torch.cat([by_name[name] for name in widths], dim=1)
        else:
            out = pooled_in_feature_order(kt, list(widths))
        out.backward(grad_out)
        results.append((out.detach(), leaf.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
