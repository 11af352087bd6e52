"""Multi-VAE (Liang, Krishnan, Hoffman, Jebara, "Variational Autoencoders for Collaborative Filtering", WWW 2018).

A user's binary item row ``x`` (``N`` items) is encoded to a Gaussian ``q(z | x)`` and
decoded to a multinomial over items ``pi(z) = softmax(f(z))``:

    h      = tanh(W_1^T (x / ||x||) + b_1)              B x H     (input dropout on x while training)
    mu, logvar = split(W_2 h + b_2)                     B x Z, B x Z
    z      = mu + exp(logvar / 2) * eps  (training) | mu (scoring)
    logits = W_4 tanh(W_3 z + b_3) + b_4                B x N
    loss   = -sum_i x_i log softmax(logits)_i  +  beta * KL(q(z|x) || N(0, I))     (mean over users)

with the KL weight annealed linearly, ``beta = min(anneal_cap, step / total_anneal_steps)``
(:func:`kl_weight`): the paper's "partially regularised" objective, whose cap and schedule
are the knobs that matter most in practice.

**The first layer is a TorchRec table.** ``W_1^T x`` for a binary ``x`` is the sum of the
rows of ``W_1`` of the user's items: an ``EmbeddingBagCollection`` (``t_item``, ``N + 1`` rows
of width ``H``, sum pooling) fed the user's items as a KJT, scaled by ``1 / ((1 - p) sqrt(n))``
(``n`` items before dropout, ``p`` the dropout share: dropout then normalisation as in the
paper's code). So the widest input matrix is placed by the planner like any item table and
trained by the fused optimizer; the rest is dense (DDP). The decoder's ``H x N`` output layer
is dense: every rank holds it (fine for catalogs of MovieLens size; the model is small, and
most users will run it on one process).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedTensor

from torchrec_app.config.general import MultiVaeConfig
from torchrec_app.models.task import ModelOutput


def kl_weight(step: int | torch.Tensor, anneal_cap: float, total_anneal_steps: int):
    """The KL weight ``beta`` after ``step`` updates: ``min(anneal_cap, step / total_anneal_steps)``.

    ``total_anneal_steps = 0`` means no annealing (``beta = anneal_cap`` from the first step).

    >>> [kl_weight(s, 0.2, 1000) for s in (0, 100, 200, 5000)]
    [0.0, 0.1, 0.2, 0.2]
    >>> kl_weight(0, 0.3, 0)
    0.3
    """
    if total_anneal_steps <= 0:
        return anneal_cap
    if isinstance(step, torch.Tensor):
        return torch.clamp(step.double() / total_anneal_steps, max=anneal_cap)
    return min(anneal_cap, step / total_anneal_steps)


class MultiVaeTower(nn.Module):
    """Everything of Multi-VAE after the item table (a leaf module for the pipeline's tracer): pooled
    ``B x H`` rows of the user's items -> logits, loss; it owns the annealing clock ``step``."""

    def __init__(self, num_items: int, config: MultiVaeConfig) -> None:
        super().__init__()
        self.config = config
        h, z = config.hidden_dim, config.latent_dim
        self.input_bias = nn.Parameter(torch.zeros(h))
        self.encoder = nn.Linear(h, 2 * z)
        self.decoder = nn.Sequential(nn.Linear(z, h), nn.Tanh(), nn.Linear(h, num_items + 1))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))  # updates taken: the annealing clock

    def beta(self) -> torch.Tensor:
        """The current KL weight (:func:`kl_weight` of the updates taken)."""
        return torch.as_tensor(kl_weight(self.step, self.config.anneal_cap, self.config.total_anneal_steps), dtype=torch.float32)

    def encode_decode(self, pooled: torch.Tensor, batch, training: bool):
        """``(logits B x (N + 1), mu B x Z, logvar B x Z)``; ``z`` sampled while training, ``mu`` otherwise."""
        keep = 1.0 - self.config.input_dropout if training else 1.0
        n = batch.num_items
        scale = torch.where(n > 0, 1.0 / (keep * n.clamp(min=1).sqrt()), torch.zeros_like(n))
        hidden = torch.tanh(pooled * scale[:, None] + self.input_bias)
        mu, logvar = self.encoder(hidden).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if training else mu
        logits = self.decoder(z)
        logits = torch.cat([torch.full_like(logits[:, :1], -torch.inf), logits[:, 1:]], dim=1)  # id 0 is padding
        return logits, mu, logvar

    def forward(self, pooled: KeyedTensor, batch) -> tuple[torch.Tensor, ModelOutput]:
        logits, mu, logvar = self.encode_decode(pooled["item"], batch, self.training)
        counts = torch.zeros_like(logits)
        counts.scatter_(1, batch.items.clamp(min=0), 1.0)
        counts[:, 0] = 0.0
        log_probs = torch.where(counts > 0, F.log_softmax(logits, dim=1), torch.zeros_like(logits))
        neg_ll = -(log_probs * counts).sum(dim=1)
        kl = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1.0).sum(dim=1)
        beta = self.beta().to(logits.device)
        weights = batch.weights
        real = weights.sum().clamp(min=1.0)
        loss = ((neg_ll + beta * kl) * weights).sum() / real
        if self.training:
            self.step += 1
        losses = {"nll": ((neg_ll * weights).sum() / real).detach(), "kl": ((kl * weights).sum() / real).detach(), "beta": beta}
        return loss, ModelOutput(loss=loss.detach(), weights=weights, losses=losses)


class MultiVae(nn.Module):
    """Multi-VAE as the loop's trainable unit: item ``EmbeddingBagCollection`` + :class:`MultiVaeTower`.

    ``forward(batch) -> (loss, ModelOutput)`` (a :class:`~torchrec_app.data.user_items.UserItemsBatch`;
    beta grows with every training forward); ``score(batch) -> B x (N + 1)`` (``-inf`` at id 0).

    Args:
        num_items: ``N`` (ids ``1..N``; 0 pads).
        config: the ``multivae`` section (widths, dropout share, annealing).
        device: of the item table: ``meta`` to be sharded (the trainer), or a real device.

    >>> import pyarrow as pa
    >>> from torchrec_app.data.user_items import UserItemsBatcher
    >>> model = MultiVae(9, MultiVaeConfig(hidden_dim=8, latent_dim=4, total_anneal_steps=10), device="cpu")
    >>> rows = pa.table({"user": pa.array([0, 1], pa.int32()), "items": pa.array([[1, 2, 3], [4, 5]], pa.list_(pa.int32())),
    ...                  "targets": pa.array([[], []], pa.list_(pa.int32()))})
    >>> loss, out = model(UserItemsBatcher()(rows, 3))
    >>> loss.shape, out.weights.tolist(), model.tower.step.item(), model.score(UserItemsBatcher()(rows, 3)).shape
    (torch.Size([]), [1.0, 1.0, 0.0], 1, torch.Size([3, 10]))
    """

    def __init__(self, num_items: int, config: MultiVaeConfig, device: torch.device | str = "meta") -> None:
        super().__init__()
        self.embeddings = EmbeddingBagCollection(
            tables=[EmbeddingBagConfig(name="t_item", embedding_dim=config.hidden_dim, num_embeddings=num_items + 1,
                                       feature_names=["item"], pooling=PoolingType.SUM)],
            device=torch.device(device),
        )  # fmt: skip
        self.tower = MultiVaeTower(num_items, config)

    def forward(self, batch) -> tuple[torch.Tensor, ModelOutput]:
        return self.tower(self.embeddings(batch.features), batch)

    def score(self, batch) -> torch.Tensor:
        """``B x (N + 1)`` scores: logits decoded from ``z = mu`` of the input items (no dropout)."""
        logits, _, _ = self.tower.encode_decode(self.embeddings(batch.features)["item"], batch, training=False)
        return logits
