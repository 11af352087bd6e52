"""``torchrec-app plan``: the sharding plan for a config on a cluster you need not have.

Builds the model the trainer would build (tables on ``meta``), runs the same TorchRec
planner as training for the given topology, and prints per table where it went and per
rank what it costs (memory, estimated compute and communication), followed by
TorchRec's own planner statistics. No process group, no GPU::

    torchrec-app plan --recipe criteo_1tb_dcnv2_mlperf --world-size 16 --hbm-gb 80 --json plan16.json --png plan16.png
    torchrec-app train --recipe ... --plan plan16.json        # trains with exactly that plan
    torchrec-app plan --diff plan16.json plan16_rw.json       # what changed between two plans

Exit status: 0 when a plan was found, 1 when the model does not fit (the explanation
says which table and rank fail, by how much, and what would fix it), 2 on bad input.
See docs/PLAN.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import AppConfig
from torchrec_app.distributed.planning import STORAGE_MARGIN, build_constraints
from torchrec_app.utils.fs import write_json_atomic

DEFAULT_RANKS_PER_GPU_HOST = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``plan``'s flags (the recipe, --data and overrides are common to all commands)."""
    topo = parser.add_argument_group("topology (it need not exist)")
    topo.add_argument("--world-size", type=int, default=None, help="number of ranks (required unless --diff)")
    topo.add_argument("--local-world-size", type=int, default=None,
                      help=f"ranks per host (default: {DEFAULT_RANKS_PER_GPU_HOST} on cuda, all on one host on cpu)")
    topo.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="device type of the ranks (default cuda)")
    topo.add_argument("--hbm-gb", type=float, default=None, help="HBM per GPU, GiB (default sharding.hbm_gb, else 32)")
    topo.add_argument("--ddr-gb", type=float, default=None, help="host memory per rank, GiB (default sharding.ddr_gb, else 128)")
    topo.add_argument("--intra-host-gbps", type=float, default=0.0, help="bandwidth within a host, GiB/s (default 600)")
    topo.add_argument("--inter-host-gbps", type=float, default=0.0, help="bandwidth between hosts, GiB/s (default 12.5)")
    topo.add_argument("--batch-size", type=int, default=None, help="rows per rank per step (default train.batch_size)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", default=None, help="write the report and the loadable plan as JSON")
    out.add_argument("--png", metavar="FILE", default=None, help="chart of memory and cost per rank, by table")
    out.add_argument("--no-stats", action="store_true", help="leave TorchRec's planner statistics table out of the text")
    out.add_argument("--diff", nargs=2, metavar=("A.json", "B.json"), default=None,
                     help="compare two saved plans instead of planning")


def run(args: argparse.Namespace, config: AppConfig) -> int:
    """Plan (or diff) and report; 0 planned, 1 does not fit."""
    if args.diff:
        return _run_diff(*args.diff)
    return _run_plan(args, config)


def _read_json(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read plan {path}: {err}") from None


def _run_diff(path_a: str, path_b: str) -> int:
    from torchrec_app.tools.plan.diff import diff_plans, format_diff

    try:
        diff = diff_plans(_read_json(path_a), _read_json(path_b))
    except (KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path_a} / {path_b}: not plan files from `torchrec-app plan --json` ({err!r})") from None
    sys.stdout.write(format_diff(diff, path_a, path_b))
    return 0


def topology_spec(args: argparse.Namespace, config: AppConfig):
    """The topology from the flags, falling back to the config's ``sharding`` / ``train`` sections."""
    from torchrec_app.tools.plan.report import TopologySpec

    if args.world_size is None:
        raise ConfigError("plan needs --world-size N (the number of ranks to plan for)")
    local = args.local_world_size
    if local is None:
        local = min(args.world_size, DEFAULT_RANKS_PER_GPU_HOST) if args.device == "cuda" else args.world_size
    try:
        return TopologySpec(
            world_size=args.world_size, device=args.device, local_world_size=local,
            hbm_gb=config.sharding.hbm_gb if args.hbm_gb is None else args.hbm_gb,
            ddr_gb=config.sharding.ddr_gb if args.ddr_gb is None else args.ddr_gb,
            intra_host_gbps=args.intra_host_gbps, inter_host_gbps=args.inter_host_gbps,
            batch_size=args.batch_size or config.train.batch_size,
        )
    except ValueError as err:
        raise ConfigError(f"topology: {err}") from None


def _run_plan(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.tools.plan.fit import explain_no_fit, format_no_fit
    from torchrec_app.tools.plan.model import build_planning_model, planning_inputs
    from torchrec_app.tools.plan.planner_run import PlanDoesNotFit, quiet_torchrec, run_planner
    from torchrec_app.tools.plan.report import REPORT_FORMAT, REPORT_VERSION, build_report, report_to_dict
    from torchrec_app.tools.plan.text import format_report

    spec = topology_spec(args, config)
    metadata, source = planning_inputs(config, args.data)
    model, tables = build_planning_model(config, metadata)
    constraints = build_constraints(config.sharding, tables, spec.device)
    with quiet_torchrec():
        topology = spec.build()
    try:
        planner_run = run_planner(model, topology, spec.batch_size, constraints)
    except PlanDoesNotFit as failed:
        explanation = explain_no_fit(failed.run, model, spec.batch_size, constraints, str(failed.error))
        sys.stdout.write(format_no_fit(explanation, config.recipe))
        if args.json:
            import dataclasses

            write_json_atomic(args.json, {
                "format": REPORT_FORMAT, "version": REPORT_VERSION, "fits": False, "recipe": config.recipe,
                "topology": dataclasses.asdict(spec), "explanation": dataclasses.asdict(explanation),
            })
        return 1
    report = build_report(planner_run, spec, config.recipe, STORAGE_MARGIN)
    text = format_report(report, with_stats=not args.no_stats)
    sys.stdout.write(text)
    data = report_to_dict(report)
    data["model_inputs"] = source
    data["planner_messages"] = planner_run.messages
    if args.json:
        write_json_atomic(args.json, data)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "plan.txt").write_text(format_report(report))
        write_json_atomic(Path(args.out) / "plan.json", data)
    if args.png:
        from torchrec_app.tools.plan.chart import write_chart

        write_chart(report, args.png)
    return 0
