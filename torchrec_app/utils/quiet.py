"""The one place where known-harmless library warnings are silenced, each with the reason.

A run prints what matters to its user (progress, validations, the result); TorchRec,
FBGEMM and torch print a few dozen lines per rank that do not apply to how this app
uses them. :func:`silence_known_warnings` filters exactly those below — by category and
message — so an unknown warning still shows. ``--verbose`` (or ``TORCHREC_APP_VERBOSE=1``)
shows everything.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownWarning:
    """A library message that is harmless here, and why."""

    message: str
    """Regular expression: ``warnings`` match it at the start of the message, log records anywhere in it."""
    reason: str
    category: type[Warning] | None = None
    """A ``warnings`` category; ``None`` for a ``logging`` record (any TorchRec logger)."""


KNOWN = [
    KnownWarning(r"\s*\S*\s*Failed to import: fbgemm_gpu\.split_embedding_codegen_lookup_invokers\.lookup_\w*ssd",
                 "the CPU build of FBGEMM has no SSD-offload kernels; we never use SSD tables", DeprecationWarning),
    KnownWarning(r"\s*\S*\s*The Python module fbgemm_gpu\.split_table_batched_embeddings_ops is now DEPRECATED",
                 "TorchRec imports FBGEMM's old module path; same kernels", DeprecationWarning),
    KnownWarning(r"The topology was constructed directly rather than via TopologyFactory",
                 "we build Topology from explicit world size, device and memory (checked by our config) on purpose"),
    KnownWarning(r"There is a known issue with TorchRec's dense tensor size calculation in dry run",
                 "planning on meta: the dense towers here are tiny next to the tables the reservation plans around"),
    KnownWarning(r"Sharding spec not found",
                 "DMP logs it for modules it leaves unsharded (the dense towers, replicated by DDP)"),
    KnownWarning(r"caching params will be ignored",
                 "the planner passes cache parameters to kernels that have no cache (fused, in memory)"),
    KnownWarning(r"Please use DTensor instead|ShardedTensor will be deprecated",
                 "TorchRec 1.8 still shards tables as ShardedTensor; we read them through its API",
                 (DeprecationWarning, FutureWarning, UserWarning)),  # type: ignore[arg-type]
    KnownWarning(r"`broadcast_buffers` is deprecated",
                 "TorchRec 1.8 builds its DDP wrappers with the old argument; our models have no buffers to sync",
                 FutureWarning),
    KnownWarning(r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated",
                 "TorchRec's own collectives call the old names of the same ops", FutureWarning),
    KnownWarning(r"is_fx_tracing will return true for both fx\.symbolic_trace and torch\.export",
                 "TrainPipelineSparseDist traces the model with torch.fx; we never export"),
    KnownWarning(r"This API is deprecated\. Please use Pytorch Distributed's _apply_optimizer_in_backward",
                 "TorchRec's documented way to register fused table optimizers; the suggested API is private",
                 DeprecationWarning),
    KnownWarning(r"An autograd kernel was not registered to the Autograd key\(s\) but we are trying to backprop",
                 "FBGEMM's dense-lookup op differentiates through its own autograd function; gradients proven "
                 "equal to embedding_bag's (tests/distributed/test_sharders.py)", UserWarning),
]


def verbose_requested(argv: list[str] | None = None) -> bool:
    """``--verbose`` on the command line or ``TORCHREC_APP_VERBOSE`` set to a true value."""
    return (argv is not None and "--verbose" in argv) or os.environ.get("TORCHREC_APP_VERBOSE", "") not in ("", "0")


class _DropKnown(logging.Filter):
    def __init__(self, patterns: list[re.Pattern]) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


def silence_known_warnings() -> None:
    """Install the filters for :data:`KNOWN` (idempotent)."""
    for known in KNOWN:
        if known.category is None:
            continue
        categories = known.category if isinstance(known.category, tuple) else (known.category,)
        for category in categories:
            warnings.filterwarnings("ignore", message=known.message, category=category)
    drop = _DropKnown([re.compile(k.message) for k in KNOWN if k.category is None])
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(drop)


#: Where TorchRec logs the messages above (a logger's filter sees only records logged on it;
#: "" is the root logger, which ``logging.warning(...)`` calls in TorchRec's planner use).
LOGGERS = ("", "torch.fx._symbolic_trace", "torchrec.distributed.planner.types", "torchrec.distributed.planner.storage_reservations",
           "torchrec.distributed.planner.planners", "torchrec.distributed.utils")
