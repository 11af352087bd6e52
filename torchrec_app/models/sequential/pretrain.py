"""S3Rec-style self-supervised pretraining from side information, and loading its weights to fine-tune.

S3Rec (Zhou et al. 2020, https://arxiv.org/abs/2008.07873) pretrains a bidirectional
transformer's item and attribute embeddings with mutual-information objectives, then
fine-tunes SASRec from it. Here the attributes are the item's genres; the backbone is
the SASRec encoder run without its causal mask, or BERT4Rec's (``sequence.backbone``).
One encoder pass over a cloze-masked sequence (a masked position's whole input — item,
genres, year — becomes a learned ``[mask]`` vector) trains, per position ``t`` with
output ``h_t`` and all genre embeddings ``A`` (``G x D``)::

    AAP  (unmasked t)  BCE( (W_aap h_t) A^T , genres of item t )        weight aap_weight (0.2)
    MIP  (masked t)    softmax over {e_item(t)} + S sampled negatives of (W_mip h_t) . e   mip_weight (1)
    MAP  (masked t)    BCE( (W_map h_t) A^T , genres of item t )        weight map_weight (1)

(S3Rec's fourth objective, segment prediction, is left out.) Scoring for evaluation during
pretraining reads ``W_mip h`` at a ``[mask]`` appended after the history.

Fine-tuning: export the pretraining run (``torchrec-app export --run DIR --out FILE``) and
train the backbone with ``sequence.side_info=true sequence.pretrained_from=FILE``:
:func:`load_pretrained` copies every tensor whose name and shape match — the item, genre
and year tables and the encoder — into the sharded model, each rank into its own shards.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.sequences import SequenceModelConfig
from torchrec_app.data.sequences.batches import GENRE_CATALOG, NEGATIVE, ItemSide, SequenceBatch
from torchrec_app.models.sequential.encoders import cloze_mask
from torchrec_app.models.sequential.losses import sampled_softmax_loss
from torchrec_app.models.sequential.model import NextItemTower, SequentialRecommender, batcher_for, build_item_tables, padded
from torchrec_app.models.task import ModelOutput


class S3RecTower(NextItemTower):
    """The pretraining objectives over a backbone encoder (see the module docstring)."""

    def __init__(self, config: SequenceModelConfig, num_items: int, genre_slots: int) -> None:
        super().__init__(config.backbone, config, num_items, genre_slots, side_info=True)
        d = config.embedding_dim
        self.causal = False  # pretraining reads both directions, whatever the backbone
        self.width = config.max_len
        self.mask_embedding = nn.Parameter(torch.randn(d) * 0.02) if config.backbone == "sasrec" else None
        self.aap = nn.Linear(d, d, bias=False)
        self.mip = nn.Linear(d, d, bias=False)
        self.map = nn.Linear(d, d, bias=False)

    def _encode_masked(self, x: torch.Tensor, lengths: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        if self.mask_embedding is None:  # bert4rec backbone: it replaces masked inputs itself
            return self.encoder.output(self.encoder(x, lengths, masked))
        x = torch.where(masked[:, :, None], self.mask_embedding.to(x.dtype)[None, None, :], x)
        return self.encoder(x, lengths, causal=False)

    def _genre_targets(self, embeddings: dict[str, JaggedTensor], batch: SequenceBatch, genres: int) -> torch.Tensor:
        """``B x W x G`` multi-hot genres of each position's item."""
        out = torch.zeros(batch.items.shape[0], self.width, genres + 1, device=batch.items.device)
        for key in self.genre_keys:
            ids = padded(JaggedTensor(batch.features[key].values().float()[:, None], lengths=embeddings[key].lengths()),
                         self.width)[:, :, 0].long()
            out.scatter_(2, ids[:, :, None], 1.0)
        return out[:, :, 1:]  # genre 0 is "none"

    def forward(self, embeddings: dict[str, JaggedTensor], batch: SequenceBatch) -> tuple[torch.Tensor, ModelOutput]:
        e, x = self.inputs(embeddings, batch)
        lengths = batch.lengths
        if self.training:
            self.mask_step += 1
        masked = cloze_mask(lengths, self.width, self.config.mask_prob, self.config.mask_seed, self.mask_step, batch.users)
        hidden = self._encode_masked(x, lengths, masked)
        real = torch.arange(self.width, device=x.device)[None, :] < lengths[:, None]
        attributes = embeddings[GENRE_CATALOG].values()  # G x D (training batches)
        genres = self._genre_targets(embeddings, batch, attributes.shape[0])
        unmasked = real & ~masked
        aap = self._attribute_loss(self.aap(hidden[unmasked]), attributes, genres[unmasked], hidden)
        map_ = self._attribute_loss(self.map(hidden[masked]), attributes, genres[masked], hidden)
        mip = sampled_softmax_loss(self.mip(hidden[masked]), e[masked], batch.items[masked], embeddings[NEGATIVE].values(),
                                   batch.features[NEGATIVE].values())  # fmt: skip
        c = self.config
        loss = c.aap_weight * aap + c.mip_weight * mip + c.map_weight * map_
        return loss, ModelOutput(loss=loss.detach(), weights=batch.weights,
                                 losses={"aap": aap.detach(), "mip": mip.detach(), "map": map_.detach()})

    @staticmethod
    def _attribute_loss(projected: torch.Tensor, attributes: torch.Tensor, targets: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        logits = projected @ attributes.t()
        losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=1)
        return losses.sum() / max(1, losses.shape[0]) + 0.0 * anchor.sum()

    def user_vectors(self, embeddings: dict[str, JaggedTensor], batch: SequenceBatch) -> torch.Tensor:
        _, x = self.inputs(embeddings, batch)
        lengths = batch.lengths
        at = lengths.clamp(max=self.width - 1)
        masked = torch.arange(self.width, device=x.device)[None, :] == at[:, None]
        hidden = self._encode_masked(x, lengths + 1, masked)
        return self.mip(hidden[torch.arange(x.shape[0], device=x.device), at])


def build_pretraining_model(config: SequenceModelConfig, num_items: int, genre_slots: int, side_sizes: tuple[int, int],
                            device: torch.device | str = "meta") -> SequentialRecommender:
    """The S3Rec pretraining model: the fine-tuned model's tables (item, genre, year) and encoder, plus heads."""
    if genre_slots < 1:
        raise ConfigError("model.name=s3rec pretrains from item genres, but the dataset has none "
                          "(preprocess it with its movies file: items.parquet lists no genres)")
    side = ItemSide(genre_ids=np.zeros((1, genre_slots), np.int64), year_ids=np.zeros(1, np.int64))
    keys = batcher_for(config.backbone, config, num_items, side, pretrain=True, num_genres=side_sizes[0] - 1).keys
    tables = build_item_tables(num_items, config.embedding_dim, keys, side_sizes)
    embeddings = EmbeddingCollection(tables=tables, device=torch.device(device))
    return SequentialRecommender(embeddings, S3RecTower(config, num_items, genre_slots))


def read_pretrained(path: str) -> dict[str, torch.Tensor]:
    """Tensors written by ``torchrec-app export`` (one file, or a ``--per-tensor`` directory)."""
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, "index.json")) as f:
                index = json.load(f)
            return {name: torch.load(os.path.join(path, file), weights_only=True) for name, file in index.items()}
        return torch.load(path, weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise ConfigError(f"sequence.pretrained_from={path}: cannot read exported tensors ({err}); write them with "
                          "`torchrec-app export --run PRETRAIN_RUN --out FILE`") from None


def load_pretrained(model: nn.Module, path: str) -> list[str]:
    """Copy the tensors of ``path`` whose name and shape match into ``model`` (sharded or not); return their names.

    Each rank fills only the shards it holds. Raises ``ConfigError`` if no table matches
    (a file from another model or catalog).
    """
    pretrained = read_pretrained(path)
    loaded = []
    with torch.no_grad():
        for name, value in model.state_dict().items():
            source = pretrained.get(name)
            if source is None or name.endswith("mask_step"):
                continue
            if hasattr(value, "local_shards"):
                if tuple(source.shape) != tuple(value.size()):
                    continue
                for shard in value.local_shards():
                    (r, c), (h, w) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                    shard.tensor.copy_(source[r:r + h, c:c + w])
            elif tuple(source.shape) == tuple(value.shape):
                value.copy_(source)
            else:
                continue
            loaded.append(name)
    tables = [n for n in loaded if n.startswith("embeddings.")]
    if not tables:
        raise ConfigError(f"sequence.pretrained_from={path}: none of its tables matches this model's "
                          f"(it has {sorted(n for n in pretrained if n.startswith('embeddings.'))}); pretrain on the same dataset "
                          "with the same sequence.embedding_dim")
    return loaded
