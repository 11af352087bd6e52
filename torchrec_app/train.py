"""Train a sharded DLRM / DCNv2 model: ``torchrec-app train`` or ``python -m torchrec_app.train``.

One process (a world of one, gloo on CPU)::

    torchrec-app train --recipe default --data data/generated/parquet

Two CPU processes on this machine, through torchx (gloo)::

    torchx run -s local_cwd dist.ddp -j 1x2 -m torchrec_app.train -- --recipe default --data DIR
    torchx run -s local_cwd launch/components.py:train --nproc 2 --recipe default --data DIR

One GPU node with 8 GPUs (nccl), and two such nodes::

    torchx run -s local_cwd dist.ddp -j 1x8 -m torchrec_app.train -- --recipe criteo_1tb_dcnv2_mlperf --data DIR
    torchx run -s slurm dist.ddp -j 2x8 -m torchrec_app.train -- --recipe criteo_1tb_dcnv2_mlperf --data DIR

Each rank reads its share of the data; rank 0 writes the run directory (``--out``,
default ``runs/<recipe>-<time>``) with config, plan, metrics.jsonl and summary.json.
"""

from __future__ import annotations

import sys
from typing import Sequence

from torchrec_app.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m torchrec_app.train ARGS`` is ``torchrec-app train ARGS``."""
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
