"""Run TorchRec's planner and keep what it chose, instead of letting it go to logging.

``EmbeddingShardingPlanner`` reports through ``Stats`` objects: on success it passes
the chosen ``ShardingOption`` s (each shard with its rank, storage and perf estimate),
on failure the last proposal it tried. TorchRec's ``EmbeddingStats`` turns that into a
table it only writes to ``logging`` at INFO. :class:`RecordingStats` keeps the
arguments and that table, so the inspector can report both; everything else TorchRec
logs while planning (warnings about dry runs and the like) is kept aside in
``PlannerRun.messages`` rather than printed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from torch import nn
from torchrec.distributed.planner.stats import EmbeddingStats
from torchrec.distributed.planner.types import (
    ParameterConstraints,
    PlannerError,
    ShardingOption,
    Stats,
    Storage,
    Topology,
)
from torchrec.distributed.types import ShardingPlan

from torchrec_app.distributed.planning import STORAGE_MARGIN, build_planner, build_storage_reservation
from torchrec_app.distributed.sharders import build_sharders

STATS_LOGGER = "torchrec.distributed.planner.stats"


@dataclass
class PlannerRun:
    """What one planning run produced (on failure: ``plan`` is None, ``options`` the last proposal)."""

    topology: Topology
    batch_size: int
    plan: ShardingPlan | None
    options: list[ShardingOption]
    """Chosen sharding option per table, shards with rank, storage and perf."""
    available: list[Storage]
    """Per rank: storage left for tables after the planner's reservation (empty if it failed there)."""
    reserved: Storage
    """Per rank: storage reserved for dense parameters (x6 for optimizer and DDP) and input batches."""
    stats_table: list[str]
    """TorchRec's planner statistics table, one line each."""
    seconds: float
    num_proposals: int = 0
    num_plans: int = 0
    messages: list[str] = field(default_factory=list)
    """Warnings TorchRec logged while planning (deduplicated)."""


class PlanDoesNotFit(Exception):
    """The planner found no plan; ``run`` holds what it tried, ``error`` its message."""

    def __init__(self, run: PlannerRun, error: PlannerError) -> None:
        super().__init__(str(error))
        self.run = run
        self.error = error


class RecordingStats(Stats):
    """A planner ``Stats`` that keeps its inputs and TorchRec's own stats table.

    The table is TorchRec's ``EmbeddingStats`` output, captured from its logger.
    """

    def __init__(self) -> None:
        self.logged: dict[str, Any] | None = None
        self.table: list[str] = []

    def log(self, **kwargs: Any) -> None:  # the planner passes everything by keyword
        self.logged = kwargs
        handler = _ListHandler()
        stats_logger = logging.getLogger(STATS_LOGGER)
        with _attached(stats_logger, handler):
            try:
                EmbeddingStats().log(**kwargs)
            except Exception as err:  # noqa: BLE001 - its table is a nicety; the plan is what matters
                handler.lines.append(f"(TorchRec's stats table failed: {err!r})")
        self.table = handler.lines


class _ListHandler(logging.Handler):
    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _attached(logger: logging.Logger, handler: logging.Handler) -> Iterator[None]:
    """Route ``logger``'s INFO+ records to ``handler`` only, for the duration."""
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class _Keep(logging.Filter):
    """Logger filter that keeps WARNING+ messages in ``sink`` and lets nothing through."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__()
        self.sink = sink

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.sink.append(record.getMessage())
        return False


@contextlib.contextmanager
def quiet_torchrec() -> Iterator[list[str]]:
    """Keep the warnings logged meanwhile out of stderr, collecting them (deduplicated)
    into the yielded list: TorchRec's ``torchrec.*`` loggers and the root logger, which
    TorchRec's planner also calls directly (``logging.warning``)."""
    sink: list[str] = []
    keep = _Keep(sink)
    handler = logging.Handler(logging.WARNING)
    handler.addFilter(keep)
    root, torchrec_logger = logging.getLogger(), logging.getLogger("torchrec")
    saved_propagate = torchrec_logger.propagate
    torchrec_logger.addHandler(handler)
    torchrec_logger.propagate = False
    root.addFilter(keep)
    messages: list[str] = []
    try:
        yield messages
    finally:
        root.removeFilter(keep)
        torchrec_logger.removeHandler(handler)
        torchrec_logger.propagate = saved_propagate
        messages.extend(dict.fromkeys(sink))


def reserved_for_model(topology: Topology, reserved: Topology | None, margin: float) -> Storage:
    """What the storage reservation set aside per device for the dense parameters and input
    batches: the topology's storage less the HBM margin, minus what it left for tables
    (read from the public ``last_reserved_topology``)."""
    if reserved is None or not topology.devices:
        return Storage(0, 0)
    before, after = topology.devices[0].storage, reserved.devices[0].storage
    return Storage(hbm=int((1 - margin) * before.hbm) - after.hbm, ddr=before.ddr - after.ddr)


def run_planner(
    model: nn.Module,
    topology: Topology,
    batch_size: int,
    constraints: dict[str, ParameterConstraints] | None = None,
) -> PlannerRun:
    """Plan ``model`` (tables on ``meta``) for ``topology`` locally: no process group, no GPU.

    Uses the same planner as training (:func:`~torchrec_app.distributed.planning.build_planner`).
    Raises :class:`PlanDoesNotFit` when no plan fits, carrying the last proposal.
    """
    recorder = RecordingStats()
    reservation = build_storage_reservation()
    planner = build_planner(topology, batch_size, constraints, stats=[recorder], storage_reservation=reservation)
    start = time.perf_counter()
    error: PlannerError | None = None
    plan: ShardingPlan | None = None
    with quiet_torchrec() as messages:
        try:
            plan = planner.plan(model, build_sharders())
        except PlannerError as err:
            error = err
    seconds = time.perf_counter() - start
    logged = recorder.logged or {}
    reserved_topology = reservation.last_reserved_topology
    run = PlannerRun(
        topology=topology,
        batch_size=batch_size,
        plan=plan,
        options=list(logged.get("best_plan") or []),
        available=[d.storage for d in reserved_topology.devices] if reserved_topology is not None else [],
        reserved=reserved_for_model(topology, reserved_topology, STORAGE_MARGIN),
        stats_table=recorder.table,
        seconds=seconds,
        num_proposals=int(logged.get("num_proposals", 0)),
        num_plans=int(logged.get("num_plans", 0)),
        messages=messages,
    )
    if error is not None:
        raise PlanDoesNotFit(run, error)
    return run
