"""What the feed model's table widths cost in its dense tower (``suggest-dims`` on ``model.name=feed``).

The feed tower (:class:`~torchrec_app.models.feed.model.FeedTower`) is built from the run's config
with the proposed widths of its tables: the pooled features (``sparse.dims``) and the item table
(``sparse.dims["item"]``, which every history encoder reads), and run on one sample under
``FlopCounterMode``, each history full (``model.feed.max_history`` items), so the count is the
worst case a sample can cost. PyTorch's FLOP counter does not see inside the fused LSTM
kernel, so an LSTM's matmuls are added by formula (``2 x 4H x (in + H)`` per step and layer);
the tower runs in training mode (dropout off at 0), where the transformer's matmuls are visible
too (its inference fast path is one fused kernel). The history blocks of the cross layer's input keep their width
(``model.feed.history_dim``): they are encoder outputs, not tables.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchrec.sparse.jagged_tensor import JaggedTensor

from torchrec_app.config import AppConfig
from torchrec_app.data.feed.batch import ACTIONS, CANDIDATE, history_key
from torchrec_app.models.feed.model import FeedTower, has_any_head
from torchrec_app.tools.explain.cost import TowerCost


def feed_tower_cost(config: AppConfig, num_dense: int, dims: Mapping[str, int]) -> TowerCost:
    """Parameters and forward FLOPs per sample of the feed tower with table widths ``dims``
    (pooled features and ``item``; ``item`` missing: the run's item width).

    >>> from torchrec_app.config import build_recipe
    >>> config = build_recipe("feed_tiny")
    >>> narrow, wide = (feed_tower_cost(config, 3, {"user": 8, "item": w}) for w in (8, 16))
    >>> wide.flops > narrow.flops and wide.params > narrow.params
    True
    """
    feed = config.model.feed
    item_dim = int(dims.get(CANDIDATE, config.sparse.dims.get(CANDIDATE, feed.item_dim)))
    pooled = [(f, int(d)) for f, d in dims.items() if f != CANDIDATE]
    with torch.device("cpu"):
        tower = FeedTower(feed, config.model.cross, config.model.dense_arch, num_dense, pooled, item_dim, ACTIONS,
                          has_any_head(feed, 1.0)).train()  # fmt: skip
    params = sum(p.numel() for p in tower.parameters())
    length = feed.max_history
    sequences = {CANDIDATE: JaggedTensor(values=torch.zeros(1, item_dim), lengths=torch.ones(1, dtype=torch.long))}
    sequences.update({history_key(a): JaggedTensor(values=torch.zeros(length, item_dim), lengths=torch.tensor([length]))
                      for a in ACTIONS})  # fmt: skip
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        tower.logits(torch.zeros(1, num_dense), torch.zeros(1, sum(d for _, d in pooled)), sequences)
    hidden = [m for m in tower.modules() if isinstance(m, torch.nn.LSTM)]
    return TowerCost(params=params, flops=int(counter.get_total_flops()) + sum(lstm_flops(m, length) for m in hidden))


def lstm_flops(lstm: torch.nn.LSTM, steps: int) -> int:
    """Multiply-add FLOPs of ``lstm`` over ``steps`` steps of one sequence: ``2 x 4H x (in + H)`` per step and layer.

    >>> lstm_flops(torch.nn.LSTM(8, 4, num_layers=2), 10)  # 2*16*(8+4)*10 + 2*16*(4+4)*10
    6400
    """
    h = lstm.hidden_size
    inputs = [lstm.input_size] + [h] * (lstm.num_layers - 1)
    return sum(2 * 4 * h * (i + h) * steps for i in inputs)
