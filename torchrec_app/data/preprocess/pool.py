"""Worker processes: a fork pool with one task per worker at a time, or inline for one.

After a failure the pending work is cancelled and the running workers are waited for, so
no worker writes after the run has reported its error.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing


class _InlineExecutor:
    """Runs submitted work in this process (one worker, or a single task)."""

    def submit(self, fn, *args):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(err)
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def executor(parallel: int):
    """A pool of ``parallel`` forked workers, or inline execution for one."""
    if parallel <= 1:
        return _InlineExecutor()
    return cf.ProcessPoolExecutor(max_workers=parallel, mp_context=multiprocessing.get_context("fork"))


def abandon(futures: list[cf.Future], pool) -> None:
    """After a failure: cancel what has not started and wait for the workers to stop."""
    for f in futures:
        f.cancel()
    if isinstance(pool, cf.ProcessPoolExecutor):
        pool.shutdown(wait=True, cancel_futures=True)


def gather(futures: list[cf.Future], pool) -> list:
    try:
        return [f.result() for f in futures]
    except BaseException:
        abandon(futures, pool)
        raise
