"""Sharders: which sharding types TorchRec may use for our embedding tables.

TorchRec's ``EmbeddingBagCollectionSharder`` offers row-wise and table-row-wise only on
CUDA. Both run on CPU with gloo as well: the row-wise input distribution buckets ids by
row block and the output is a reduce-scatter of partial pools, all of which gloo and
FBGEMM's CPU kernels implement. :class:`AllTypesEmbeddingBagCollectionSharder` admits
them on CPU; ``tests/distributed/test_sharding_equivalence.py`` proves numerically that
every type on 2 gloo ranks trains exactly like one unsharded process.

Unpooled tables (``EmbeddingCollection``: the item table of the sequential models) get
:class:`CpuSafeEmbeddingCollectionSharder`: TorchRec's ``EmbeddingCollectionSharder``
(table-wise, column-wise, row-wise; no table-row-wise) without data-parallel on CPU,
where TorchRec 1.8's data-parallel sequence lookup returns one row per bag instead of one
per id (``split_with_sizes expects split_sizes to sum exactly to 4 ... got [6]`` for 4
rows holding 6 ids); ``tests/distributed/test_sequential_equivalence.py`` proves the
others on 2 gloo ranks and that the planner never picks data-parallel there.
"""

from __future__ import annotations

from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.fbgemm_qcomm_codec import CommType, QCommsConfig, get_qcomm_codecs_registry
from torchrec.distributed.types import ModuleSharder, ShardingType

#: Sharding types proven on CPU/gloo by our tests, beyond TorchRec's CPU defaults.
CPU_EXTRA_SHARDING_TYPES = (ShardingType.ROW_WISE.value, ShardingType.TABLE_ROW_WISE.value)


class AllTypesEmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """``EmbeddingBagCollectionSharder`` that also admits row-wise and table-row-wise on CPU."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = list(super().sharding_types(compute_device_type))
        if compute_device_type == "cpu":
            types += [t for t in CPU_EXTRA_SHARDING_TYPES if t not in types]
        return types


class CpuSafeEmbeddingCollectionSharder(EmbeddingCollectionSharder):
    """``EmbeddingCollectionSharder`` without data-parallel on CPU (broken there in TorchRec 1.8, see above)."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = list(super().sharding_types(compute_device_type))
        if compute_device_type == "cpu":
            types = [t for t in types if t != ShardingType.DATA_PARALLEL.value]
        return types


def build_sharders(qcomms_forward: str = "", qcomms_backward: str = "") -> list[ModuleSharder[nn.Module]]:
    """The sharders the planner and ``DistributedModelParallel`` use: pooled tables first, then unpooled.

    ``qcomms_forward`` / ``qcomms_backward`` (``fp16``, ``bf16``; empty = fp32) quantize
    the embedding all-to-alls and reduce-scatters with FBGEMM's codecs
    (``QCommsConfig``), halving the bytes on the wire at some precision cost.
    """
    registry = None
    if qcomms_forward not in ("", "fp32") or qcomms_backward not in ("", "fp32"):
        registry = get_qcomm_codecs_registry(QCommsConfig(
            forward_precision=CommType(qcomms_forward or "fp32"), backward_precision=CommType(qcomms_backward or "fp32")))
    return [AllTypesEmbeddingBagCollectionSharder(qcomm_codecs_registry=registry),
            CpuSafeEmbeddingCollectionSharder(qcomm_codecs_registry=registry)]
