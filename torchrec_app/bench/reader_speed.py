"""The reader's own speed: samples/s of one process reading training batches, nothing else running.

Same procedure as the data helper's :func:`torchrec_app.data.benchmark.bench_reader`
(training mode: shuffle buffer and prefetch thread, wall clock, its ``cpu_seconds``), but
bounded to ``batches`` batches so that it also suits Criteo 1TB.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from torchrec_app.data.benchmark import cpu_seconds
from torchrec_app.data.config import ReaderConfig
from torchrec_app.data.reader import read_batches


def measure_reader(data: Path, batch_size: int, config: ReaderConfig, batches: int, seed: int = 0) -> dict[str, Any]:
    """Samples/s (and CPU seconds) of reading ``batches`` train batches as rank 0 of a world of one."""
    stream = read_batches(str(data), "train", batch_size=batch_size, rank=0, world_size=1, config=config,
                          shuffle=True, seed=seed)  # fmt: skip
    cpu, start = cpu_seconds(), time.perf_counter()
    samples = sum(batch.num_real_rows for batch in itertools.islice(stream, batches))
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"batch_size": batch_size, "batches": batches, "samples": samples, "wall_seconds": wall,
            "cpu_seconds": cpu, "samples_per_second": samples / wall if wall > 0 else 0.0}  # fmt: skip
