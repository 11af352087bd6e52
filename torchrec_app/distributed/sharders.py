"""Sharders: which sharding types TorchRec may use for our embedding tables.

TorchRec's ``EmbeddingBagCollectionSharder`` offers row-wise and table-row-wise only on
CUDA. Both run on CPU with gloo as well: the row-wise input distribution buckets ids by
row block and the output is a reduce-scatter of partial pools, all of which gloo and
FBGEMM's CPU kernels implement. :class:`AllTypesEmbeddingBagCollectionSharder` admits
them on CPU; ``tests/distributed/test_sharding_equivalence.py`` proves numerically that
every type on 2 gloo ranks trains exactly like one unsharded process.

Reduced-precision tables (``sparse.data_type``) have two limits, checked here for the
planner's constraints (:func:`table_precision_problem`) and again when a plan is applied
(:meth:`AllTypesEmbeddingBagCollectionSharder.shard`), so a plan file cannot slip past:

* **No fp16 / bf16 data-parallel tables.** A data-parallel table has one compute
  kernel, ``dense`` (FBGEMM's ``DenseTableBatchedEmbeddingBagsCodegen``): a plain
  parameter whose gradient DDP all-reduces. The fused table optimizer registered before
  sharding does not reach that replica, so it is not updated in backward but by the
  *dense* optimizer (``in_backward_optimizer_filter`` hands it to ``optim.dense`` at
  ``optim.dense_lr``), and ``torch.optim`` then works on the half-precision weights
  themselves, with half-precision state: Adagrad's (and Adam's) ``eps=1e-8`` is 0 in
  fp16, so every row the batch did not touch (gradient 0, state 0) becomes 0/0 = NaN
  after the first step, and small gradients give x/0 = inf. That was the NaN from the
  first steps of ``sparse.data_type=fp16`` on 2 ranks, whenever the planner chose
  data-parallel for some small tables (1 process or ``sharding.types=row_wise`` never
  did). The fused kernels of every other type keep the optimizer state in fp32 and only
  round the updated row to fp16, so those train; reduced-precision tables take them.
* **No bf16 tables on CPU.** FBGEMM's CPU embedding forward (fused and dense alike) has
  no bf16 kernel: ``"split_embedding_cpu_forward_2" not implemented for 'BFloat16'``,
  raised by the first forward, after planning and sharding. fp16 halves the memory the
  same way and trains on CPU.

Unpooled tables (``EmbeddingCollection``: the item table of the sequential models) get
:class:`CpuSafeEmbeddingCollectionSharder`: TorchRec's ``EmbeddingCollectionSharder``
(table-wise, column-wise, row-wise; no table-row-wise) without data-parallel on CPU,
where TorchRec 1.8's data-parallel sequence lookup returns one row per bag instead of one
per id (``split_with_sizes expects split_sizes to sum exactly to 4 ... got [6]`` for 4
rows holding 6 ids); ``tests/distributed/test_sequential_equivalence.py`` proves the
others on 2 gloo ranks and that the planner never picks data-parallel there.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import torch
from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder, ShardedEmbeddingBagCollection
from torchrec.distributed.fbgemm_qcomm_codec import CommType, QCommsConfig, get_qcomm_codecs_registry
from torchrec.distributed.types import ModuleSharder, ParameterSharding, ShardingEnv, ShardingType
from torchrec.modules.embedding_configs import DataType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from torchrec_app.config.errors import ConfigError

#: Sharding types proven on CPU/gloo by our tests, beyond TorchRec's CPU defaults.
CPU_EXTRA_SHARDING_TYPES = (ShardingType.ROW_WISE.value, ShardingType.TABLE_ROW_WISE.value)

#: Table weight types that train with the dense (data-parallel) kernel and the dense optimizer.
DATA_PARALLEL_DATA_TYPES = (DataType.FP32,)
#: Table weight types FBGEMM's CPU embedding kernels implement.
CPU_DATA_TYPES = (DataType.FP32, DataType.FP16)

#: The warning PyTorch prints when backward runs through FBGEMM's dense (data-parallel) lookup.
#: It is harmless, see :func:`_quiet_dense_lookup_warning`.
DENSE_LOOKUP_WARNING = r"fbgemm::dense_embedding_codegen_lookup_function: an autograd kernel was not registered"


def table_precision_problem(data_type: DataType, sharding_type: str | None, compute_device: str | None) -> str | None:
    """Why a table stored as ``data_type`` cannot train as ``sharding_type`` on
    ``compute_device``; None if it can. A None type or device is not checked. The reasons
    are in this module's docstring.

    >>> table_precision_problem(DataType.FP16, "row_wise", "cpu") is None
    True
    >>> print(table_precision_problem(DataType.FP16, "data_parallel", "cuda"))
    sparse.data_type=fp16 cannot be data_parallel: ...; allow it another sharding type (sharding.types, sharding.per_table) or use sparse.data_type=fp32
    >>> print(table_precision_problem(DataType.BF16, None, "cpu"))
    sparse.data_type=bf16 cannot train on cpu: ...; use sparse.data_type=fp16 (same size) or fp32 there (bf16 runs on cuda)
    """
    name = data_type.value.lower()
    if compute_device == "cpu" and data_type not in CPU_DATA_TYPES:
        return (f"sparse.data_type={name} cannot train on cpu: FBGEMM's CPU embedding kernels have no {name} version "
                f"(the first step fails inside FBGEMM); use sparse.data_type=fp16 (same size) or fp32 there ({name} runs on cuda)")
    if sharding_type == ShardingType.DATA_PARALLEL.value and data_type not in DATA_PARALLEL_DATA_TYPES:
        return (f"sparse.data_type={name} cannot be data_parallel: a data-parallel table is updated by the dense optimizer "
                f"on its {name} weights and {name} state (eps underflows to 0: NaN from the first step); "
                f"allow it another sharding type (sharding.types, sharding.per_table) or use sparse.data_type=fp32")
    return None


def check_table_precisions(
    data_types: Mapping[str, DataType], sharding_types: Mapping[str, str], compute_device: str
) -> None:
    """Raise ``ConfigError`` for the first table whose data type cannot train as planned
    (naming the table when the problem is its sharding type rather than the device)."""
    for table, data_type in data_types.items():
        problem = table_precision_problem(data_type, None, compute_device)
        if problem:
            raise ConfigError(problem)
        problem = table_precision_problem(data_type, sharding_types.get(table), None)
        if problem:
            raise ConfigError(f"table {table}: {problem}")


def _quiet_dense_lookup_warning() -> None:
    """Silence PyTorch's "an autograd kernel was not registered ... silently incorrect
    behavior" warning for FBGEMM's dense lookup, the kernel of data-parallel tables.

    It is a false alarm, established as follows. FBGEMM registers
    ``fbgemm::dense_embedding_codegen_lookup_function`` for the CPU dispatch key only (no
    Autograd kernel: ``torch._C._dispatch_has_kernel_for_dispatch_key`` says so);
    its CPU kernel applies FBGEMM's own ``torch::autograd::Function``
    (``SplitLookupFunction_Dense_Op``), so the output's ``grad_fn`` is that function's
    node, and PyTorch's autograd fallback (mode "warn") merely hooks the output to warn
    when backward passes through. The gradient itself is FBGEMM's. It equals the
    gradient of ``torch.nn.functional.embedding_bag`` on the same weights (sum and mean
    pooling, several features per table, fp32 to 1e-7, fp16 to its rounding):
    ``tests/distributed/test_sharders.py``; and end to end, the data-parallel case of
    ``tests/distributed/test_sharding_equivalence.py`` trains equal to one unsharded
    process to 1e-5.
    """
    warnings.filterwarnings("ignore", message=DENSE_LOOKUP_WARNING, category=UserWarning)


class AllTypesEmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """``EmbeddingBagCollectionSharder`` that also admits row-wise and table-row-wise on CPU,
    and refuses, before FBGEMM fails or training turns to NaN, a plan whose table data
    types cannot train as planned (see :func:`table_precision_problem`)."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = list(super().sharding_types(compute_device_type))
        if compute_device_type == "cpu":
            types += [t for t in CPU_EXTRA_SHARDING_TYPES if t not in types]
        return types

    def shard(
        self,
        module: EmbeddingBagCollection,
        params: dict[str, ParameterSharding],
        env: ShardingEnv,
        device: torch.device | None = None,
        module_fqn: str | None = None,
    ) -> ShardedEmbeddingBagCollection:
        sharding_types = {table: sharding.sharding_type for table, sharding in params.items()}
        data_types = {config.name: config.data_type for config in module.embedding_bag_configs()}
        check_table_precisions(data_types, sharding_types, device.type if device is not None else "cpu")
        if ShardingType.DATA_PARALLEL.value in sharding_types.values():
            _quiet_dense_lookup_warning()
        return super().shard(module, params, env, device, module_fqn)


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
