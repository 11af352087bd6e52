"""``torchrec-app bench``: how fast and how good is this setup, and why.

    torchrec-app bench --suite cpu --out runs/bench-cpu            # docs/BENCHMARKS.md
    torchrec-app bench --recipe bench_kaggle_like_dlrm --nproc 2   # one case
    torchrec-app bench --case "dlrm=bench_kaggle_like_dlrm@2" \\
        --case "dlrm_rw=bench_kaggle_like_dlrm@2 sharding.types=row_wise" --repeats 5
    torchrec-app bench --data criteo_kaggle --suite cpu --target-auc 0.80 --steps 5000

For every case (recipe + overrides on N processes; see :mod:`torchrec_app.tools.bench.cases`)
and every repeat, it trains ``--steps`` steps through the torchx ``train`` component
twice: end to end (reading Parquet; the first repeat also profiles a few steps for the
step-time split) and on in-memory batches (``bench.in_memory``, the ceiling). Cases are
interleaved within each repeat. Without ``--data`` it trains on generated data (made
once under ``data/generated/bench-<rows>``), which also gives the gap to the oracle AUC.
Positional ``section.key=value`` overrides apply to every case. Writes into ``--out``:
``bench.json``, ``bench.md``, ``samples_per_second.png``, ``auc_vs_samples.png`` and
the run directories under ``runs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from torchrec_app.config import AppConfig, ConfigError, resolve_config
from torchrec_app.tools.bench.cases import SUITES, BenchCase, parse_case
from torchrec_app.tools.bench.levers import LEVER_SUITES

#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ('recipe', 'data', 'out')

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``torchrec-app bench``."""
    parser.add_argument("--suite", choices=sorted([*SUITES, *LEVER_SUITES]),
                        help="a named list of cases (torchrec_app.tools.bench.cases.SUITES), or a levers suite measured as "
                             "time to target (torchrec_app.tools.bench.levers.LEVER_SUITES: feed)")  # fmt: skip
    parser.add_argument("--case", action="append", default=[], metavar="'NAME=RECIPE@NPROC [k=v ...]'",
                        help="a case to run (repeatable; added after --suite's). Default: --recipe on --nproc")  # fmt: skip
    parser.add_argument("--nproc", type=int, default=1, help="processes for the default case (--recipe)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case and kind (median and spread)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run (train.max_steps)")
    parser.add_argument("--evals", type=int, default=4, help="validations during each end-to-end run (AUC vs samples)")
    parser.add_argument("--profile-steps", type=int, default=5, help="steps profiled in the first repeat (0: none)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the in-memory (ceiling) runs")
    parser.add_argument("--target-auc", type=float, default=0.0, help="stop a run once validation AUC reaches this")
    parser.add_argument("--rows", type=int, default=500_000, help="rows of generated data when --data is not given")
    parser.add_argument("--reader-batches", type=int, default=50, help="batches read when measuring the reader alone")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds before one run counts as failed")
    parser.add_argument("--peer-dlrm", metavar="PATH", help="a fetched torchrec_dlrm/dlrm_main.py: run it with each dlrm/dcnv2 "
                        "case's shapes in the same run and report it next to ours (torchrec_app.tools.bench.peer)")  # fmt: skip
    parser.add_argument("--keep-cadence", action="store_true",
                        help="keep each recipe's validation cadence and early stopping (time to quality; --steps is then "
                             "the most steps); default with a suite that asks for it (--suite ttq)")  # fmt: skip

    parser.add_argument("--target-tolerance", type=float, default=0.002,
                        help="levers suites: an objective reaches its target when its AUC is within this of it")  # fmt: skip


def bench_cases(args: argparse.Namespace) -> list[BenchCase]:
    """The cases named by ``--suite`` and ``--case``, or the one ``--recipe`` on ``--nproc``."""
    cases = list(SUITES[args.suite].cases) if args.suite else []
    cases += [parse_case(text) for text in args.case]
    if not cases:
        cases = [BenchCase(name=args.recipe, recipe=args.recipe, nproc=args.nproc)]
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ConfigError(f"bench case names must be unique, got {names}")
    return cases


def run_overrides(args: argparse.Namespace, kind: str, repeat: int) -> list[str]:
    """Overrides that make a training run a measurement of ``kind`` (end_to_end or ceiling).

    >>> ns = argparse.Namespace(steps=40, evals=4, profile_steps=5, target_auc=0.0)
    >>> run_overrides(ns, "ceiling", 0)[-2:]
    ['bench.in_memory=true', 'train.eval_every=0']
    """
    from torchrec_app.tools.bench.step_profile import WARMUP_STEPS

    keep_cadence = getattr(args, "keep_cadence", False)
    common = [f"train.max_steps={args.steps}", "train.epochs=1000", "train.progress_bar=false",
              *([] if keep_cadence else ["train.early_stop_patience=0"]), "checkpoint.at_end=false", "checkpoint.resume=false",
              "checkpoint.every=0"]  # fmt: skip
    if kind == "ceiling":
        return [*common, "train.eval_adaptive=false", "bench.in_memory=true", "train.eval_every=0"]
    every = max(1, args.steps // args.evals) if args.evals else 0
    extra = [] if keep_cadence else [f"train.eval_every={every}"]
    if repeat == 0 and args.profile_steps and args.steps >= WARMUP_STEPS + 1 + args.profile_steps:
        extra.append(f"bench.profile_steps={args.profile_steps}")
    if args.target_auc:
        extra.append(f"bench.stop_at_auc={args.target_auc}")
    return [*common, *extra]


def command_line(args: argparse.Namespace) -> str:
    """The ``torchrec-app bench`` command that reproduces this run (flags that differ from defaults)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    words = ["torchrec-app", "bench"]
    if args.data:
        words += ["--data", args.data]
    if not args.suite and not args.case:
        words += ["--recipe", args.recipe]
    for name, value in vars(args).items():
        if name in defaults and value != defaults[name] and name != "case":
            flag = "--" + name.replace("_", "-")
            words += [flag] if value is True else [flag, str(value)]
    for text in args.case:
        words += ["--case", text]
    return shlex.join([*words, *args.overrides])


def _machine() -> str:
    import torch

    device = f"{torch.cuda.device_count()}× {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}; torch {torch.__version__}, Python {platform.python_version()}"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run(args: argparse.Namespace, config: AppConfig) -> int:
    """Entry point of ``torchrec-app bench``."""
    from torchrec_app.data.metadata import load_metadata
    from torchrec_app.tools.bench.data import dataset_for_bench
    from torchrec_app.tools.bench.data_speed import measure_reader
    from torchrec_app.tools.bench.launch import BenchRunError, run_training
    from torchrec_app.tools.bench.peer import PeerRunError, check_peer_script, peer_flags_by_case, run_peer, summarize_peer
    from torchrec_app.tools.bench.plots import plot_auc_vs_samples, plot_samples_per_second
    from torchrec_app.tools.bench.report import markdown_report, summarize_case

    if args.suite in LEVER_SUITES:  # time to target per lever, its own runs and report
        from torchrec_app.tools.bench.levers import run_lever_suite

        return run_lever_suite(args, config)
    if args.repeats < 1 or args.steps < 1 or args.evals < 0:
        raise ConfigError("bench needs --repeats >= 1, --steps >= 1 and --evals >= 0")
    suite = SUITES[args.suite] if args.suite else None
    if suite is not None:  # a suite's own settings, unless given on the command line
        args.target_auc = args.target_auc or suite.target_auc
        args.keep_cadence = args.keep_cadence or suite.keep_cadence
    if args.target_auc and not args.evals and not args.keep_cadence:
        raise ConfigError("--target-auc needs validations during training: --evals > 0 (or --keep-cadence)")
    cases = bench_cases(args)
    kinds = ["end_to_end"] if args.no_ceiling else ["end_to_end", "ceiling"]
    common = list(args.overrides)
    configs = {}
    for case in cases:  # every case must resolve before the first run starts
        case.check(tuple(common))
        configs[case.name] = resolve_config(case.recipe, [*case.overrides, *common])
    peer_script = check_peer_script(args.peer_dlrm) if args.peer_dlrm else None
    out = Path(args.out or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    started, load_before = time.perf_counter(), _load()
    data = dataset_for_bench(args.data, args.rows, config.generate, config.preprocess)
    meta = load_metadata(data)
    peers = {}
    if peer_script:
        peers = peer_flags_by_case(cases, configs, meta, args.steps)
    peer_runs: dict[str, list] = {name: [] for name in peers}

    readers: dict[tuple, dict[str, Any]] = {}
    for case in cases:
        cfg = configs[case.name]
        key = (cfg.train.batch_size, repr(cfg.data))
        if key not in readers:
            readers[key] = measure_reader(data, cfg.train.batch_size, cfg.data, args.reader_batches, cfg.train.seed)
            print(f"bench: reader alone, batch {cfg.train.batch_size}: {readers[key]['samples_per_second']:,.0f} samples/s per process", flush=True)

    results: dict[str, dict[str, list]] = {c.name: {k: [] for k in kinds} for c in cases}
    total, done = len(cases) * len(kinds) * args.repeats, 0
    for repeat in range(args.repeats):
        peer_this_repeat: dict[tuple, dict] = {}
        for case in cases:
            for kind in kinds:
                run_dir = out / "runs" / case.name / f"{kind}-{repeat}"
                done += 1
                print(f"bench [{done}/{total}] {case.name} ({case.recipe}, {case.nproc} proc) {kind.replace('_', ' ')} "
                      f"repeat {repeat + 1}/{args.repeats} ...", end=" ", flush=True)  # fmt: skip
                try:
                    result = run_training(case, data, run_dir, run_overrides(args, kind, repeat) + common, args.timeout)
                except BenchRunError as err:
                    print("failed", flush=True)
                    print(f"torchrec-app bench: {err}", file=sys.stderr)
                    return 1
                results[case.name][kind].append(result)
                s = result.summary
                auc = f", valid AUC {s['valid_auc']:.4f}" if s.get("valid_auc") is not None else ""
                print(f"{s['samples_per_second']:,.0f} samples/s ({s['train_seconds']:.1f}s training, "
                      f"{result.wall_seconds:.0f}s wall{auc})", flush=True)  # fmt: skip
            key = (case.nproc, *peers.get(case.name, ()))  # cases with the same peer command share its run
            if case.name in peers and key in peer_this_repeat:
                peer_runs[case.name].append(peer_this_repeat[key])
            elif case.name in peers:
                print(f"bench: {case.name} peer dlrm_main.py repeat {repeat + 1}/{args.repeats} ...", end=" ", flush=True)
                try:
                    peer = run_peer(peer_script, case.nproc, peers[case.name], configs[case.name].train.batch_size * case.nproc,
                                    out / "runs" / case.name / f"peer-{repeat}", args.timeout)  # fmt: skip
                except PeerRunError as err:
                    print("failed", flush=True)
                    print(f"torchrec-app bench: {err}", file=sys.stderr)
                    return 1
                peer_runs[case.name].append(peer_this_repeat.setdefault(key, peer))
                print(f"{peer['samples_per_second']:,.0f} samples/s (load {peer['load_average']['after']})", flush=True)

    entries = []
    for case in cases:
        cfg = configs[case.name]
        runs = results[case.name]
        entries.append(summarize_case(case, runs["end_to_end"], runs.get("ceiling", []), readers[(cfg.train.batch_size, repr(cfg.data))]))
        if peer_runs.get(case.name):
            entries[-1]["peer"] = summarize_peer(entries[-1], peer_runs[case.name], peers[case.name])
    bench = {
        "bench": {
            "command": command_line(args),
            "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": _machine(),
            "data": str(data),
            "split_rows": meta.split_rows,
            "repeats": args.repeats,
            "steps": args.steps,
            "profile_steps": args.profile_steps,
            "target_auc": args.target_auc or None,
            "load_average": {"before": load_before, "after": _load()},
            "wall_seconds": time.perf_counter() - started,
            "runs_dir": str(out / "runs"),
        },
        "reader": list(readers.values()),
        "cases": entries,
    }
    (out / "bench.json").write_text(json.dumps(bench, indent=2, default=str) + "\n")
    (out / "bench.md").write_text(markdown_report(bench))
    plot_samples_per_second(bench, out / "samples_per_second.png")
    plot_auc_vs_samples(bench, out / "auc_vs_samples.png")
    print(markdown_report(bench))
    print(f"bench: wrote {out}/bench.json, bench.md, samples_per_second.png, auc_vs_samples.png", flush=True)
    return 0
