"""Run a function on N real gloo ranks (spawned processes) and collect what each returns."""

from __future__ import annotations

import multiprocessing
import os
import traceback
from typing import Any, Callable

from torchrec_app.distributed.runtime import Runtime, free_port, init_runtime, shutdown_runtime


def _worker(fn: Callable[..., Any], rank: int, world_size: int, port: int, queue: Any, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )
    try:
        runtime: Runtime = init_runtime(timeout_s=240)
        queue.put((rank, True, fn(runtime, *args)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        queue.put((rank, False, traceback.format_exc()))
    finally:
        shutdown_runtime()


def run_on_ranks(fn: Callable[..., Any], world_size: int, *args: Any, timeout_s: float = 600) -> list[Any]:
    """Call ``fn(runtime, *args)`` on ``world_size`` gloo ranks; return results by rank.

    Raises ``AssertionError`` with the rank's traceback if any rank fails, and fails
    rather than hangs if a rank dies or the job outlives ``timeout_s``.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(fn, r, world_size, port, queue, args)) for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    try:
        for _ in range(world_size):
            rank, ok, value = queue.get(timeout=timeout_s)
            if not ok:
                raise AssertionError(f"rank {rank} failed:\n{value}")
            results[rank] = value
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return [results[r] for r in range(world_size)]
