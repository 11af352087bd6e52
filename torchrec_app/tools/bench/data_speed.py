"""Data-side benchmark: generate, preprocess (ours vs torchrec's npy_preproc_criteo), read.

    python -m torchrec_app.tools.bench.data_speed --rows 1000000

Prints rows per CPU-second of preprocessing (``resource.getrusage`` of this process and
its children, so worker processes count) for both id strategies, the same figure for
``python -m torchrec.datasets.scripts.npy_preproc_criteo`` run on the same train TSV
(named ``day_0`` as it expects) and each strategy's ratio to it, and the reader's samples
per second per process (wall clock, training mode: shuffle buffer and prefetch thread), and the
CPU milliseconds per batch the trainer's process spends on reading with the thread reader and
with ``data.reader_process`` (:func:`trainer_cpu_per_batch`).
The load average is printed with the figures: on a shared machine CPU-seconds grow with
other load, so compare figures from one run, or repeat (``--repeat``) and keep the best.
No asserts: figures only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

from torchrec_app.config.data import GeneratorConfig, PreprocessConfig, ReaderConfig
from torchrec_app.data.generate import generate_dataset
from torchrec_app.data.preprocess import preprocess_dataset
from torchrec_app.data.reader import read_batches
from torchrec_app.data.splits import explicit_sources


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn):
    cpu, wall = cpu_seconds(), time.perf_counter()
    result = fn()
    return result, cpu_seconds() - cpu, time.perf_counter() - wall


def bench_preprocess(text_dir: str, out_dir: str, config: PreprocessConfig) -> tuple[int, float, float]:
    """(rows, CPU seconds, wall seconds) of preprocessing train/valid/test."""
    shutil.rmtree(out_dir, ignore_errors=True)
    sources = explicit_sources({s: [os.path.join(text_dir, f"{s}.txt")] for s in ("train", "valid", "test")})
    meta, cpu, wall = _timed(lambda: preprocess_dataset(out_dir, sources, config, log=lambda *a: None))
    return sum(meta.split_rows.values()), cpu, wall


def bench_npy_preproc(text_dir: str, work: str) -> tuple[int, float, float]:
    """(rows, CPU seconds, wall seconds) of torchrec's npy_preproc_criteo on train.txt."""
    input_dir, output_dir = os.path.join(work, "npy_in"), os.path.join(work, "npy_out")
    os.makedirs(input_dir, exist_ok=True)
    os.makedirs(output_dir, exist_ok=True)
    day0 = os.path.join(input_dir, "day_0")
    if os.path.lexists(day0):
        os.remove(day0)
    os.symlink(os.path.join(text_dir, "train.txt"), day0)
    with open(day0, "rb") as f:
        rows = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    command = [sys.executable, "-m", "torchrec.datasets.scripts.npy_preproc_criteo", "--input_dir", input_dir,
               "--output_dir", output_dir, "--dataset_name", "criteo_1tb"]  # fmt: skip
    _, cpu, wall = _timed(lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL))
    return rows, cpu, wall


def measure_reader(data: str | os.PathLike, batch_size: int, config: ReaderConfig, batches: int | None = None,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Samples/s (and CPU seconds) of one process reading train batches, nothing else running.

    Training mode (shuffle, prefetch thread), rank 0 of a world of one; ``batches`` bounds
    the read (``None``: one whole epoch), so it also suits Criteo 1TB.
    """
    stream = read_batches(str(data), "train", batch_size=batch_size, rank=0, world_size=1, config=config,
                          shuffle=True, seed=seed)  # fmt: skip
    samples, cpu, wall = _timed(lambda: sum(b.num_real_rows for b in itertools.islice(stream, batches)))
    return {"batch_size": batch_size, "batches": batches if batches is not None else len(stream), "samples": samples,
            "wall_seconds": wall, "cpu_seconds": cpu, "samples_per_second": samples / wall if wall > 0 else 0.0}  # fmt: skip


def trainer_cpu_per_batch(data: str | os.PathLike, batch_size: int, config: ReaderConfig, batches: int = 50,
                          seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """CPU milliseconds per batch spent *in the consuming (trainer) process*, and in a reader process if any.

    Reads ``batches`` train batches through :class:`~torchrec_app.data.reader.TrainBatches`
    (rank 0 of 2) as the trainer does. With the thread reader the decoding is charged to the
    consumer; with ``config.reader_process`` only receiving the shared-memory batches is, and
    the decoding is charged to the child (counted once it is joined). CPU time, unlike
    samples/s, barely depends on what else the machine runs.
    """
    from torchrec_app.data.reader import TrainBatches

    stream = TrainBatches(read_batches(str(data), "train", batch_size=batch_size, rank=0, world_size=2, config=config,
                                       shuffle=True, seed=seed))  # fmt: skip
    stream.wait_ready()
    pid = stream.process.pid if stream.process is not None else None
    own, child, wall = _cpu_seconds_of(os.getpid()), _cpu_seconds_of(pid), time.perf_counter()
    for _ in stream.take(batches):
        pass
    wall = time.perf_counter() - wall
    own, child = _cpu_seconds_of(os.getpid()) - own, _cpu_seconds_of(pid) - child
    stream.close()
    return {"consumer_cpu_ms_per_batch": 1000 * own / batches, "reader_process_cpu_ms_per_batch": 1000 * child / batches,
            "wall_ms_per_batch": 1000 * wall / batches}  # fmt: skip


def _cpu_seconds_of(pid: int | None) -> float:
    """User + system CPU seconds of a live process, all its threads (Linux ``/proc/PID/stat``); 0 for None."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (8:1:1 train/valid/test)")
    parser.add_argument("--workdir", default=None,
                        help="where to write, kept after (generated text is reused); default: a temporary directory, removed after")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=2048, help="reader batch size")
    parser.add_argument("--workers", type=int, default=0, help="preprocess worker processes (0: all cores)")
    parser.add_argument("--skip-npy", action="store_true", help="do not run torchrec's npy_preproc_criteo")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each preprocess measurement; the best is printed")
    args = parser.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="torchrec_app_bench_")
    try:
        text = os.path.join(work, f"text-{args.rows}")
        if os.path.exists(os.path.join(text, "truth.json")):  # written last: a complete earlier generation (--workdir)
            print(f"generate: reusing {text}")
        else:
            _, cpu, wall = _timed(lambda: generate_dataset(text, GeneratorConfig(rows=args.rows)))
            size = sum(os.path.getsize(os.path.join(text, f"{s}.txt")) for s in ("train", "valid", "test"))
            print(f"generate: {args.rows:,} rows ({size / 2**20:.0f} MiB) in {wall:.1f}s wall, {cpu:.1f} CPU-s")
        base = PreprocessConfig(workers=args.workers)
        ours = {}
        for name, config in (("hash", replace(base, id_strategy="hash", hash_size=40_000_000)), ("vocab", base)):
            runs = [bench_preprocess(text, os.path.join(work, f"parquet_{name}"), config) for _ in range(args.repeat)]
            rows, cpu, wall = min(runs, key=lambda r: r[1])
            ours[name] = rows / cpu
            print(f"preprocess ({name} ids): {rows:,} rows in {wall:.2f}s wall, {cpu:.2f} CPU-s -> {rows / cpu:,.0f} rows/CPU-s "
                  f"({_load()})")  # fmt: skip
        if not args.skip_npy:
            rows, cpu, wall = bench_npy_preproc(text, work)
            print(f"torchrec npy_preproc_criteo: {rows:,} rows in {wall:.2f}s wall, {cpu:.2f} CPU-s -> {rows / cpu:,.0f} rows/CPU-s "
                  f"({_load()})")  # fmt: skip
            print("ours / npy_preproc_criteo per CPU-second: " + ", ".join(f"{k} ids {v / (rows / cpu):.1f}x" for k, v in ours.items()))
        data = os.path.join(work, "parquet_vocab")
        for prefetch in (4, 0):
            config = ReaderConfig(prefetch_batches=prefetch, shuffle_buffer_rows=65536)
            r = measure_reader(data, args.batch_size, config)
            print(f"reader (train, shuffle, prefetch={prefetch}, batch {args.batch_size}): {r['samples']:,} samples in "
                  f"{r['wall_seconds']:.2f}s -> {r['samples_per_second']:,.0f} samples/s per process ({r['cpu_seconds']:.2f} CPU-s)")  # fmt: skip
        for process in (False, True):
            config = ReaderConfig(prefetch_batches=4, shuffle_buffer_rows=65536, reader_process=process)
            r = trainer_cpu_per_batch(data, args.batch_size, config)
            print(f"reader_process={str(process).lower()}: trainer-process CPU {r['consumer_cpu_ms_per_batch']:.1f} ms/batch, "
                  f"reader-process CPU {r['reader_process_cpu_ms_per_batch']:.1f} ms/batch ({_load()})")  # fmt: skip
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
