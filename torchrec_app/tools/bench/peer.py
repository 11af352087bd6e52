"""The peer in a benchmark: TorchRec's own ``torchrec_dlrm/dlrm_main.py``, same shapes, same run.

``torchrec-app bench --peer-dlrm PATH`` runs a fetched copy of dlrm_main (facebookresearch/dlrm,
never vendored; see ``docs/BENCHMARKS.md`` for how to export it under ``data/external/``)
next to every case it can express, with the case's shapes and optimizer, on its own random
in-memory batches (``RandomRecDataset``: 10 batches generated up front and cycled)::

    torchrun --standalone --nproc_per_node N dlrm_main.py --num_embeddings_per_feature ... \\
        --embedding_dim 64 --dense_arch_layer_sizes 512,256,64 --over_arch_layer_sizes 512,512,256,1 \\
        --batch_size 2048 --adagrad --learning_rate 0.01 --limit_train_batches STEPS ...

It runs unmodified: nothing is patched. dlrm_main prints no throughput; its rank 0 draws a
``tqdm`` bar (``Epoch 0: 40%|...| 12/30 [00:03<00:04, 3.81it/s]``) and then
``Total number of iterations: N``. tqdm reads its defaults from ``TQDM_*`` environment
variables, so the run gets ``TQDM_MININTERVAL=0`` (every step is printed) and
``TQDM_SMOOTHING=0`` (the printed rate is ``steps / elapsed`` exactly, not a moving average).
:func:`parse_tqdm_throughput` turns those lines into samples/s two ways: over all training
steps (what our trainer's ``samples_per_second`` counts), and after :data:`WARMUP_STEPS`.

A case maps to dlrm_main's flags (:func:`peer_flags`) when its model is ``dlrm`` (dot
interaction: ``--interaction_type original``) or ``dcnv2`` with one low-rank cross network
(``--interaction_type dcn``) over 26 sparse features; other cases get no peer run.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torchrec_app.config import AppConfig, ConfigError
from torchrec_app.data.metadata import DatasetMetadata
from torchrec_app.data.reader import table_sizes
from torchrec_app.distributed.runtime import free_port

#: Steps left out of the steady-state figures (pipeline fill, allocator, first all-to-alls, compilation):
#: for the peer from its bar, for ours from the trainer's log intervals (``metrics.jsonl``, every
#: ``train.log_every`` = 10 steps in the bench recipes) that start at or after this step.
WARMUP_STEPS = 10
#: dlrm_main's sparse features: torchrec's ``DEFAULT_CAT_NAMES`` (26, like Criteo).
PEER_SPARSE_FEATURES = 26

_TQDM_STEP = re.compile(r"Epoch (\d+):\s*\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+) \[[^,\]]*,\s*([0-9.]+)(it/s|s/it)\]")
_DONE = "Total number of iterations:"


class PeerRunError(RuntimeError):
    """The peer failed, or its output has no throughput to read; the message shows its log's tail."""


@dataclass(frozen=True, slots=True)
class PeerThroughput:
    """What one peer run's output says."""

    steps: int
    """Training steps rank 0 counted."""
    seconds: float
    """Seconds of those steps (tqdm's elapsed time, from the bar's creation)."""
    samples_per_second: float
    """``steps x global batch / seconds``: all steps, as our trainer counts."""
    steady_samples_per_second: float | None
    """The same after :data:`WARMUP_STEPS` steps (``None`` if the run was not longer)."""


def parse_tqdm_throughput(log: str, global_batch_size: int, warmup_steps: int = WARMUP_STEPS) -> PeerThroughput:
    """Samples/s from dlrm_main's training bar, printed with ``TQDM_SMOOTHING=0`` (rate = steps / elapsed).

    Only epoch 0's bar before the first ``Total number of iterations`` line counts (the bar is
    redrawn once more when the process exits, with evaluation inside its elapsed time).

    >>> bar = "Epoch 0: {:3d}%|#    | {}/8 [00:01<00:00, {}]"
    >>> log = "\\r".join(bar.format(100 * n // 8, n, rate) for n, rate in
    ...                  [(0, "?it/s"), (1, "2.00it/s"), (5, "4.00it/s"), (6, "4.00it/s"), (8, "4.40it/s")])
    >>> result = parse_tqdm_throughput(log + "Total number of iterations: 8\\n", global_batch_size=100, warmup_steps=5)
    >>> result.steps, round(result.seconds, 3), round(result.samples_per_second), round(result.steady_samples_per_second)
    (8, 1.818, 440, 528)
    """
    done = log.find(_DONE)
    if done < 0:
        raise PeerRunError(f"no '{_DONE}' line: the peer did not finish its training epoch")
    points: dict[int, float] = {}  # steps -> elapsed seconds
    for match in _TQDM_STEP.finditer(log[:done]):
        epoch, steps, value, unit = int(match[1]), int(match[2]), float(match[4]), match[5]
        if epoch != 0 or steps == 0 or value == 0:
            continue
        points.setdefault(steps, steps / value if unit == "it/s" else steps * value)
    if not points:
        raise PeerRunError("no tqdm training-bar lines ('Epoch 0: ...| n/N [..., rate]') before the end of training")
    steps = max(points)
    seconds = points[steps]
    steady = None
    if warmup_steps in points and steps > warmup_steps and seconds > points[warmup_steps]:
        steady = (steps - warmup_steps) * global_batch_size / (seconds - points[warmup_steps])
    return PeerThroughput(steps=steps, seconds=seconds, samples_per_second=steps * global_batch_size / seconds,
                          steady_samples_per_second=steady)  # fmt: skip


def peer_flags(config: AppConfig, num_embeddings: Sequence[int], steps: int) -> list[str]:
    """dlrm_main's command-line flags for the model, tables and optimizer of ``config``.

    ``num_embeddings``: rows of each of the 26 tables, in feature order. Raises
    ``ConfigError`` for a model dlrm_main cannot build.

    >>> from torchrec_app.config import resolve_config
    >>> flags = peer_flags(resolve_config("bench_kaggle_like_dlrm", []), [100] * 26, steps=30)
    >>> " ".join(flags[2:])
    '--embedding_dim 64 --dense_arch_layer_sizes 512,256,64 --over_arch_layer_sizes 512,512,256,1 --batch_size 2048 --limit_train_batches 30 --limit_val_batches 1 --limit_test_batches 1 --seed 0 --interaction_type original --adagrad --learning_rate 0.01'
    """
    model = config.model
    if len(num_embeddings) != PEER_SPARSE_FEATURES:
        raise ConfigError(f"dlrm_main has {PEER_SPARSE_FEATURES} sparse features (torchrec's DEFAULT_CAT_NAMES); "
                          f"this dataset has {len(num_embeddings)}")  # fmt: skip
    if config.sparse.dims or config.sparse.compress or config.sparse.compress_default != "full":
        raise ConfigError("dlrm_main has one width and full tables: sparse.dims and sparse.compress must be empty")
    if config.optim.dense not in ("adagrad", "sgd"):
        raise ConfigError(f"dlrm_main trains with adagrad or sgd, not optim.dense={config.optim.dense}")
    flags = [
        "--num_embeddings_per_feature", ",".join(str(n) for n in num_embeddings),
        "--embedding_dim", str(config.sparse.embedding_dim),
        "--dense_arch_layer_sizes", ",".join(map(str, model.dense_arch)),
        "--over_arch_layer_sizes", ",".join(map(str, model.over_arch)),
        "--batch_size", str(config.train.batch_size),
        "--limit_train_batches", str(steps), "--limit_val_batches", "1", "--limit_test_batches", "1",
        "--seed", str(config.train.seed),
    ]  # fmt: skip
    if model.name == "dlrm":
        flags += ["--interaction_type", "original"]
    elif model.name == "dcnv2" and model.structure == "stacked" and model.cross.kind == "low_rank":
        flags += ["--interaction_type", "dcn", "--dcn_num_layers", str(model.cross.num_layers),
                  "--dcn_low_rank_dim", str(model.cross.low_rank)]  # fmt: skip
    else:
        raise ConfigError(f"dlrm_main builds dlrm (dot) and stacked low-rank dcnv2 only, not model.name={model.name} "
                          f"(structure={model.structure}, cross.kind={model.cross.kind})")  # fmt: skip
    if config.optim.dense == "adagrad":
        flags.append("--adagrad")
    return flags + ["--learning_rate", str(config.optim.dense_lr)]


def peer_command(script: Path, nproc: int, flags: list[str]) -> list[str]:
    """``torchrun`` (this Python's) on ``nproc`` local processes, the launch dlrm_main's README uses."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{free_port()}", str(script), *flags]  # fmt: skip


def check_peer_script(path: str | os.PathLike) -> Path:
    """``path`` as an absolute Path if it is a file, else ``ConfigError`` saying how to get dlrm_main."""
    script = Path(path).resolve()  # the peer runs in its own directory (it imports its data/ package from there)
    if not script.is_file():
        raise ConfigError(f"--peer-dlrm {path}: no such file; fetch facebookresearch/dlrm and export torchrec_dlrm/ "
                          "under data/external/dlrm/ (docs/BENCHMARKS.md, 'DLRM step vs dlrm_main')")  # fmt: skip
    return script


def run_peer(script: Path, nproc: int, flags: list[str], global_batch_size: int, run_dir: Path,
             timeout_s: float) -> dict[str, Any]:  # fmt: skip
    """Run the peer once into ``run_dir/peer.log``; return its throughput and the load average around it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "peer.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_MININTERVAL="0", TQDM_SMOOTHING="0")
    load_before, start = os.getloadavg()[0], time.perf_counter()
    with open(log, "w") as out:
        try:
            code = subprocess.run(peer_command(script, nproc, flags), stdout=out, stderr=subprocess.STDOUT, env=env,
                                  cwd=script.parent, timeout=timeout_s).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    tail = _child_output_tail(text)
    if code != 0:
        raise PeerRunError(f"peer {script.name} exited with {code} after {wall:.0f}s; log {log} ends with:\n{tail}")
    try:
        result = parse_tqdm_throughput(text, global_batch_size)
    except PeerRunError as err:
        raise PeerRunError(f"peer {script.name}, log {log}: {err}; the log ends with:\n{tail}") from None
    return {"run_dir": str(run_dir), "samples_per_second": result.samples_per_second,
            "steady_samples_per_second": result.steady_samples_per_second, "steps": result.steps,
            "train_seconds": result.seconds, "wall_seconds": wall,
            "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}  # fmt: skip


def _child_output_tail(text: str, lines: int = 25) -> str:
    """The last ``lines`` lines the peer's processes printed, before torchrun's own failure report.

    >>> _child_output_tail("step 1\\rstep 2\\nValueError: bad flag\\nE1201 12:00 torch/distributed/elastic/api.py:1] failed")
    'step 1\\nstep 2\\nValueError: bad flag'
    """
    child = text.split("torch/distributed/elastic/multiprocessing/api.py", 1)[0].rsplit("\n", 1)[0] if "torch/distributed/elastic" in text else text
    return "\n".join(child.replace("\r", "\n").splitlines()[-lines:])


def steady_samples_per_second(run_dir: str | os.PathLike, global_batch_size: int, after_step: int = WARMUP_STEPS) -> float | None:
    """Our trainer's samples/s over the log intervals of ``metrics.jsonl`` that start at or after ``after_step``.

    Each interval record holds its end ``step`` and its ``samples_per_second``; its seconds are
    ``steps x global batch / samples_per_second`` (every row of a bench batch is real).
    """
    path = Path(run_dir) / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    intervals = [r for r in records if "samples_per_second" in r and "loss" in r]
    samples = seconds = 0.0
    for previous, record in zip([{"step": 0}, *intervals], intervals):
        steps = record["step"] - previous["step"]
        if previous["step"] >= after_step and record["samples_per_second"] > 0:
            samples += steps * global_batch_size
            seconds += steps * global_batch_size / record["samples_per_second"]
    return samples / seconds if seconds else None


def summarize_peer(case: dict[str, Any], runs: list[dict[str, Any]], flags: list[str]) -> dict[str, Any]:
    """The ``peer`` entry of a case in ``bench.json``: medians, ratios of ours to the peer, the loads seen.

    ``*_steady`` figures leave out the first :data:`WARMUP_STEPS` steps on both sides.
    """
    peer = statistics.median(r["samples_per_second"] for r in runs)
    ours = case["samples_per_second"]["median"]
    ceiling = case.get("ceiling_samples_per_second", {}).get("median")
    loads = [r["load_average"][k] for r in runs for k in ("before", "after")]

    def median_or_none(values):
        values = [v for v in values if v]
        return statistics.median(values) if values else None

    def ours_steady(kind):
        return median_or_none(steady_samples_per_second(r["run_dir"], case["global_batch_size"])
                              for r in case.get("runs", []) if r["kind"] == kind)  # fmt: skip

    return {"script": "dlrm_main.py", "flags": flags, "samples_per_second": peer,
            "ours_over_peer": ours / peer if peer else None,
            "ceiling_over_peer": ceiling / peer if ceiling and peer else None,
            "steady": {"peer": median_or_none(r["steady_samples_per_second"] for r in runs),
                       "end_to_end": ours_steady("end_to_end"), "ceiling": ours_steady("ceiling")},
            "load_average": {"min": min(loads), "max": max(loads)}, "runs": runs}  # fmt: skip


def peer_markdown(cases: list[dict[str, Any]]) -> list[str]:
    """The "Against dlrm_main" table of ``bench.md`` (empty when no case had a peer run)."""
    with_peer = [c for c in cases if c.get("peer")]
    if not with_peer:
        return []

    def num(value):
        return f"{value:,.0f}" if value else "–"

    def ratio(value, peer):
        return f"{value / peer:.2f}×" if value and peer else "–"

    lines = ["", "## Against TorchRec's dlrm_main (same shapes, same run)", "",
             "Peer: `torchrec_dlrm/dlrm_main.py` on its random in-memory batches, same processes, tables, widths, "
             "batch and optimizer; median over repeats. *All steps*: samples/s over every training step, as the "
             f"tables above count; *steady*: after the first {WARMUP_STEPS} steps (ours from the trainer's log intervals).", "",
             "| case | model | procs | dlrm_main | ours end-to-end | ours in-memory | end-to-end ÷ peer | in-memory ÷ peer | "
             "steady: dlrm_main | steady: ours e2e | steady: ours in-memory | steady e2e ÷ peer | steady in-mem ÷ peer | "
             "load average (peer runs) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for c in with_peer:
        p, steady = c["peer"], c["peer"]["steady"]
        ours, ceiling = c["samples_per_second"]["median"], c.get("ceiling_samples_per_second", {}).get("median")
        lines.append(
            f"| {c['name']} | {c['model']} | {c['nproc']} | {num(p['samples_per_second'])} | {num(ours)} | {num(ceiling)} | "
            f"{ratio(ours, p['samples_per_second'])} | {ratio(ceiling, p['samples_per_second'])} | {num(steady['peer'])} | "
            f"{num(steady['end_to_end'])} | {num(steady['ceiling'])} | {ratio(steady['end_to_end'], steady['peer'])} | "
            f"{ratio(steady['ceiling'], steady['peer'])} | {p['load_average']['min']}–{p['load_average']['max']} |"
        )
    return lines


def peer_flags_by_case(cases: Sequence[Any], configs: dict[str, AppConfig], meta: DatasetMetadata, steps: int,
                       log=print) -> dict[str, list[str]]:  # fmt: skip
    """dlrm_main's flags for every case it can run (``case.name -> flags``); the others are named in the log.

    Table rows are the case's own (the dataset's, capped by ``data.max_ind_range`` as the reader caps ids).
    """
    flags = {}
    for case in cases:
        config = configs[case.name]
        sizes = table_sizes(meta, config.data)
        try:
            flags[case.name] = peer_flags(config, [sizes[f] for f in meta.sparse_features], steps)
        except ConfigError as err:
            log(f"bench: case {case.name} gets no dlrm_main peer run: {err}")
    return flags
