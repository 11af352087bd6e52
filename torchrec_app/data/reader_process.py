"""The train batches prepared in a separate process, handed over in shared memory (``data.reader_process``).

With the default background *thread*, decoding Parquet and building each batch (pyarrow,
numpy, KJT construction) runs in the trainer's own process: it holds the GIL the training
step needs, and pyarrow's thread pools add more runnable threads on a machine whose cores
the trainers already fill. :class:`ReaderProcess` moves that work into one child process
per rank:

* the child builds the same :class:`~torchrec_app.data.reader.SplitReader` from the
  same arguments and yields exactly the batches ``SplitReader.batches(epoch, start)``
  yields, in the same order (one producer, one FIFO queue), so a resumed run stays
  bit-identical;
* batches cross over ``torch.multiprocessing`` queues: their tensors move to shared
  memory and only file descriptors are pickled (the route ``torch.utils.data.DataLoader``
  workers use); at most ``data.prefetch_batches`` wait in the queue;
* the child runs single-threaded (``torch.set_num_threads(1)``, pyarrow's CPU and I/O
  pools at 1 thread) at ``os.nice(data.reader_nice)``, so it fills the cores' idle time
  rather than taking the trainer's;
* it is *persistent*: started (``spawn``) when the reader is made, so its start-up
  (imports: seconds) overlaps the trainer's own set-up and is waited for before training
  starts (:meth:`ReaderProcess.wait_ready`); it starts preparing epoch 0 from batch 0 at
  once; a later ``batches(epoch, start)`` (next epoch, or a resume) is a *seek*: the
  request carries a new generation number, the child abandons the old one, and stale
  batches still in the queue are dropped;
* an error in the child is re-raised in the trainer with the child's traceback; a child
  that dies (killed, out of memory) raises naming its exit code; :meth:`close` (the
  trainer calls it at the end and on error; also run at garbage collection and at
  interpreter exit) stops and joins it, so no zombie is left; a child whose trainer was
  killed outright (SIGKILL) notices within a second (its parent changed) and exits.

Not a ``DataLoader``: a DataLoader's iterable worker cannot be told where to resume
without re-spawning it, and a spawn costs seconds of imports per epoch.
"""

from __future__ import annotations

import os
import queue
import time
import traceback
import weakref
from typing import Any, Iterator

import torch.multiprocessing as torch_mp

#: Seconds between liveness checks while the trainer waits for a batch.
_POLL_SECONDS = 1.0
#: Seconds a closing child gets before it is terminated.
_JOIN_SECONDS = 5.0


class ReaderProcessError(RuntimeError):
    """The reader process failed or died; the message carries its traceback or exit code."""


class ReaderProcess:
    """One child process that serves ``SplitReader.batches(epoch, start)`` of a reader built from ``reader_args``.

    Args:
        reader_class: the reader's class (:class:`~torchrec_app.data.reader.SplitReader`), passed in rather
            than imported here so the two modules do not import each other; pickled by name into the child.
        reader_args: keyword arguments of :class:`~torchrec_app.data.reader.SplitReader`
            (picklable: a custom ``batch_maker`` must be, e.g. a dataclass instance).
        depth: batches waiting in the queue at most (>= 1).
        nice: niceness increment of the child (``os.nice``; 0: same priority as the trainer).
        first: ``(epoch, start)`` to start preparing at once (None: wait for the first request).
    """

    def __init__(self, reader_class: type, reader_args: dict[str, Any], depth: int, nice: int = 0, first: tuple[int, int] | None = (0, 0)) -> None:
        context = torch_mp.get_context("spawn")
        self._requests = context.Queue()
        self._batches = context.Queue(maxsize=max(1, depth))
        self._generation = context.Value("q", 0)
        self._issued: tuple[int, int, int] | None = None  # (generation, epoch, start) requested, nothing taken yet
        self._process = context.Process(target=_serve, args=(reader_class, reader_args, self._requests, self._batches, self._generation, nice),
                                        name=f"reader-{reader_args.get('split', '')}-rank{reader_args.get('rank', 0)}", daemon=True)  # fmt: skip
        self._process.start()
        self._finalizer = weakref.finalize(self, _stop, self._process, self._requests, self._batches, self._generation)
        if first is not None:
            self._request(*first)

    def wait_ready(self, timeout_s: float = 600.0) -> float:
        """Block until the child has started and built its reader (imports, metadata, batch maker);
        return the seconds waited. Lets a caller count the start-up as set-up, not as reading.
        Call it at most once, before the first :meth:`batches`."""
        waited, start = 0.0, time.perf_counter()
        while True:
            try:
                tag, kind, payload = self._batches.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                waited = time.perf_counter() - start
                if not self._process.is_alive() or waited > timeout_s:
                    raise ReaderProcessError(f"the reader process (pid {self._process.pid}) did not start within {waited:.0f}s "
                                             f"(exit code {self._process.exitcode})") from None  # fmt: skip
                continue
            if tag == 0 and kind == "ready":
                return time.perf_counter() - start
            if tag == 0 and kind == "error":
                raise ReaderProcessError(f"the reader process failed to start:\n{payload}")

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _request(self, epoch: int, start: int) -> int:
        with self._generation.get_lock():
            self._generation.value += 1
            generation = self._generation.value
        self._requests.put(("batches", generation, epoch, start))
        self._issued = (generation, epoch, start)
        return generation

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """``SplitReader.batches(epoch, start)``, prepared in the child. One live iterator at a time:
        starting another one ends this one (it raises if used again)."""
        if not self._finalizer.alive:
            raise ReaderProcessError("the reader process was closed")
        if self._issued is not None and self._issued[1:] == (epoch, start):
            generation = self._issued[0]  # already being prepared (the first request, made at start-up)
        else:
            generation = self._request(epoch, start)
        self._issued = None
        return self._receive(generation)

    def _receive(self, generation: int) -> Iterator[Any]:
        while True:
            if self._generation.value != generation:
                raise ReaderProcessError("this batch iterator was replaced by a newer batches() call on the same reader")
            try:
                tag, kind, payload = self._batches.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self._process.is_alive():
                    raise ReaderProcessError(f"the reader process (pid {self._process.pid}) died with exit code "
                                             f"{self._process.exitcode} while preparing batches") from None  # fmt: skip
                continue
            if tag != generation:
                continue  # prepared for an abandoned request
            if kind == "batch":
                yield payload
            elif kind == "end":
                return
            else:
                raise ReaderProcessError(f"the reader process failed:\n{payload}")

    def close(self) -> None:
        """Stop the child and wait for it (idempotent)."""
        self._finalizer()


def _stop(process, requests, batches, generation) -> None:
    """Ask the child to stop, drain what it may be blocked on, join it; terminate it if it does not exit."""
    if process.pid is None:
        return
    with generation.get_lock():
        generation.value += 1  # the child abandons the batch it is preparing
    try:
        requests.put(("stop",))
    except (OSError, ValueError):
        pass
    process.join(timeout=_JOIN_SECONDS)
    if process.is_alive():
        process.terminate()
        process.join(timeout=_JOIN_SECONDS)
    for q in (requests, batches):
        q.cancel_join_thread()
        q.close()


def _serve(reader_class: type, reader_args: dict[str, Any], requests, batches, generation, nice: int) -> None:
    """The child's loop: for each request, put ``(generation, "batch", batch)`` items then ``"end"``;
    give up on a request as soon as the shared generation moves past it."""
    import pyarrow as pa
    import torch


    if nice:
        os.nice(nice)
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    parent = os.getppid()

    def orphaned() -> bool:
        """The trainer died without closing us (SIGKILL): exit rather than linger."""
        return os.getppid() != parent

    def send(tag: int, kind: str, payload: Any) -> bool:
        """Put one item, waiting while the queue is full; False if the request was abandoned meanwhile."""
        while generation.value == tag:
            if orphaned():
                os._exit(0)
            try:
                batches.put((tag, kind, payload), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        reader = reader_class(**reader_args)
        batches.put((0, "ready", None))
    except BaseException:  # noqa: BLE001 - reported now and with every request
        reader, failure = None, traceback.format_exc()
        batches.put((0, "error", failure))
    while True:
        try:
            request = requests.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if orphaned():
                os._exit(0)
            continue
        if request[0] == "stop":
            # Exit now: nothing here needs flushing (batches nobody will read may still be queued),
            # and the interpreter's teardown of torch and pyarrow takes seconds on a loaded machine.
            os._exit(0)
        _, tag, epoch, start = request
        if reader is None:
            send(tag, "error", failure)
            continue
        try:
            for batch in reader.batches(epoch, start):
                if not send(tag, "batch", batch):
                    break
            else:
                send(tag, "end", None)
        except BaseException:  # noqa: BLE001 - re-raised in the trainer
            send(tag, "error", traceback.format_exc())
