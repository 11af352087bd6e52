"""Where a training step's time goes: a few steps under ``torch.profiler``, split by category.

The bench callback (``bench.profile_steps > 0``, :mod:`.callbacks`) creates a :class:`StepProfiler`, wraps each
epoch's batch iterator with :meth:`StepProfiler.wrap` (so time blocked on the reader shows
up as ``data_wait``) and calls :meth:`StepProfiler.step` after every step. After
:data:`WARMUP_STEPS` steps it records ``profile_steps`` steps; each op's *self* CPU time
is charged to the category of its nearest enclosing event that a rule below names
(torchrec's ``## ... ##`` record_function ranges, fbgemm ops, optimizer ranges), so an
``aten::mm`` inside the output all-to-all counts as communication, not dense compute.

Categories (ms per step, per rank):

* ``data_wait``: blocked in ``next(batches)``: reading, or waiting for the prefetch thread.
* ``input_all_to_all``: the KJT (sparse features) all-to-all and its splits exchange.
* ``embedding_lookup``: fbgemm's table-batched lookups, forward and backward; the fused
  table optimizer runs inside the backward, so the table update is here too.
* ``output_all_to_all``: the pooled-embedding all-to-all (and reduce-scatter for
  row-wise sharding), forward and backward.
* ``dense_all_reduce``: DDP's gradient all-reduce of the dense (data-parallel) layers.
* ``optimizer``: the dense optimizer's step and zero_grad.
* ``dense_fwd_bwd``: every other op: the dense/over arch, interaction, loss, backward.
* ``other``: time inside the step not in any op (Python, pipeline bookkeeping).

On CUDA this is host time: kernels run asynchronously, so read it as launch/wait time.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import torch
from torch.autograd.profiler import record_function

#: Steps run unprofiled before recording (plan caches, allocator, first all-to-all).
WARMUP_STEPS = 5
#: The record_function range that marks time spent waiting on the batch iterator.
DATA_WAIT = "## bench:data_wait ##"

CATEGORIES = (
    "data_wait", "input_all_to_all", "embedding_lookup", "output_all_to_all",
    "dense_all_reduce", "optimizer", "dense_fwd_bwd", "other",
)  # fmt: skip

#: (category, pattern) tried in order on an event's name; the nearest named ancestor wins.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern, re.IGNORECASE))
    for category, pattern in (
        ("data_wait", re.escape(DATA_WAIT)),
        ("input_all_to_all", r"all2all_data|kjt.?all.?to.?all|input_dist|## .*splits"),
        ("output_all_to_all", r"all2all_pooled|all2all_seq|reducescatter|reduce_scatter|allgather|all_gather_base|output_dist"),
        ("embedding_lookup", r"fbgemm|split_embedding|splitlookup|embedding_bag|embeddingbag|lookup"),
        ("dense_all_reduce", r"allreduce|all_reduce"),
        ("optimizer", r"optimizer\.|## optimizer|zero_grad|_single_tensor_|_multi_tensor_|adagrad|adam|sgd"),
    )
)


def category_of(name: str) -> str | None:
    """The category an event named ``name`` (and everything under it) belongs to, if a rule names it.

    >>> category_of("## all2all_data:kjt lengths ##"), category_of("## All2All_Pooled_bwd ##")
    ('input_all_to_all', 'output_all_to_all')
    >>> category_of("fbgemm::split_embedding_codegen_lookup_rowwise_adagrad_function_cpu")
    'embedding_lookup'
    >>> category_of("Optimizer.step#Adagrad.step"), category_of("aten::addmm") is None
    ('optimizer', True)
    """
    for category, pattern in RULES:
        if pattern.search(name):
            return category
    return None


def split_steps(events: list[Any]) -> dict[str, Any]:
    """Mean per-step milliseconds by category over the ``ProfilerStep`` ranges in ``events``.

    ``events`` are ``torch.autograd.profiler_util.FunctionEvent`` (``profile.events()``).
    """
    steps = [e for e in events if e.name.startswith("ProfilerStep")]
    totals = dict.fromkeys(CATEGORIES, 0.0)
    top_ops: dict[str, float] = {}
    for step in steps:
        totals["other"] += step.self_cpu_time_total
        stack = [(child, None) for child in step.cpu_children]
        while stack:
            event, inherited = stack.pop()
            category = category_of(event.name) or inherited
            key = category or "dense_fwd_bwd"
            totals[key] += event.self_cpu_time_total
            if event.self_cpu_time_total > 0:
                label = f"{key}: {event.name}"
                top_ops[label] = top_ops.get(label, 0.0) + event.self_cpu_time_total
            stack.extend((child, category) for child in event.cpu_children)
    n = max(1, len(steps))
    step_ms = sum(s.cpu_time_total for s in steps) / n / 1e3
    per_step = {k: v / n / 1e3 for k, v in totals.items()}
    heaviest = sorted(top_ops.items(), key=lambda kv: -kv[1])[:15]
    return {
        "steps": len(steps),
        "step_ms": step_ms,
        "ms": per_step,
        "share": {k: (v / step_ms if step_ms > 0 else 0.0) for k, v in per_step.items()},
        "top_ops_ms": [[name, us / n / 1e3] for name, us in heaviest],  # "category: op", heaviest first
    }


class _TimedBatches:
    """An iterator whose ``next`` runs inside the :data:`DATA_WAIT` range."""

    def __init__(self, batches: Iterator[Any]) -> None:
        self._batches = batches

    def __iter__(self) -> "_TimedBatches":
        return self

    def __next__(self) -> Any:
        with record_function(DATA_WAIT):
            return next(self._batches)


class StepProfiler:
    """Profiles ``steps`` training steps after :data:`WARMUP_STEPS`; :attr:`result` holds the split.

    With ``steps == 0`` every method is a cheap no-op, so the trainer calls it unconditionally.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.result: dict[str, Any] | None = None
        self._profile = None
        if steps > 0:
            activities = [torch.profiler.ProfilerActivity.CPU]
            self._profile = torch.profiler.profile(
                activities=activities,
                schedule=torch.profiler.schedule(wait=WARMUP_STEPS, warmup=1, active=steps, repeat=1),
                on_trace_ready=self._collect,
            )

    def _collect(self, profile: torch.profiler.profile) -> None:
        self.result = split_steps(list(profile.events()))

    def wrap(self, batches: Iterator[Any]) -> Iterator[Any]:
        """``batches``, with the time blocked in ``next`` charged to ``data_wait`` while profiling."""
        return _TimedBatches(batches) if self._profile is not None else batches

    def start(self) -> None:
        if self._profile is not None:
            self._profile.start()

    def step(self) -> None:
        """Mark the end of one training step."""
        if self._profile is not None:
            self._profile.step()

    def stop(self) -> None:
        if self._profile is not None:
            self._profile.stop()
            self._profile = None
