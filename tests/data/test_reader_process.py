"""data.reader_process: the train stream prepared in a separate process yields the thread reader's
batches in the same order (across epochs, after a resume), reports the child's errors and death,
and leaves no child behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import replace

import pytest
import torch

from torchrec_app.config.data import ReaderConfig
from torchrec_app.data.reader import SplitReader, TrainBatches, read_batches
from torchrec_app.data.reader_process import ReaderProcess, ReaderProcessError

CONFIG = ReaderConfig(shuffle_buffer_rows=500, prefetch_batches=2)


def _train_reader(out, config=CONFIG, batch_size=512, **kwargs):
    return read_batches(out, "train", batch_size=batch_size, rank=1, world_size=2, config=config, shuffle=True, seed=5, **kwargs)


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("dense_features", "labels", "weights")) and torch.equal(
        a.sparse_features.values(), b.sparse_features.values()) and torch.equal(a.sparse_features.lengths(), b.sparse_features.lengths())  # fmt: skip


def failing_batch_maker(table, batch_size):
    """A picklable batch maker that fails on the first batch (module level, so the child can import it)."""
    raise ValueError("planted failure in make_batch")


def test_process_stream_equals_thread_stream_across_epochs_and_after_resume(generated):
    _, out = generated
    thread = TrainBatches(_train_reader(out))
    steps = thread.batches_per_epoch + 3  # into the second epoch
    expected = list(thread.take(steps))

    process = TrainBatches(_train_reader(out, replace(CONFIG, reader_process=True)))
    try:
        assert process.wait_ready() > 0
        head = list(process.take(4)) + list(process.take(3))  # two segments share the live epoch iterator
        state = process.state_dict()
        process.load_state_dict({"epoch": 1, "batch_in_epoch": 1})  # a seek: the child abandons epoch 0
        seeked = list(process.take(2))
        process.load_state_dict(state)  # resume where the first segment ended
        tail = list(process.take(steps - len(head)))
    finally:
        process.close()
    assert process.state_dict() == {"epoch": 1, "batch_in_epoch": 3}
    assert all(_same(a, b) for a, b in zip(head + tail, expected, strict=True))
    assert all(_same(a, b) for a, b in zip(seeked, expected[thread.batches_per_epoch + 1 :], strict=True))
    assert not process.process._process.is_alive() and process.process._process.exitcode == 0
    assert process.process._process not in multiprocessing.active_children()  # joined: no zombie


def test_child_errors_and_death_reach_the_trainer_and_close_leaves_no_child(generated):
    _, out = generated
    reader = _train_reader(out, batch_size=64, batch_maker=(["label"], failing_batch_maker))
    failing = ReaderProcess(SplitReader, reader.arguments, depth=1)
    try:
        with pytest.raises(ReaderProcessError, match="planted failure in make_batch"):
            next(failing.batches(0, 0))
        # The child survives its request's error; kill it and the next wait names the exit code.
        os.kill(failing.pid, signal.SIGKILL)
        with pytest.raises(ReaderProcessError, match="died with exit code -9"):
            next(failing.batches(0, 1))
    finally:
        failing.close()
    failing.close()  # idempotent
    assert failing._process not in multiprocessing.active_children()
    with pytest.raises(ReaderProcessError, match="closed"):
        failing.batches(0, 0)
