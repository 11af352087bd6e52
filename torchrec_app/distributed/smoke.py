"""Launch-path smoke test: ``python -m torchrec_app.distributed.smoke`` under torchrun/torchx.

Every rank joins the process group and all-reduces its rank; rank 0 prints the sum and
checks it, so a broken rendezvous, backend or network shows up before a real job.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from torchrec_app.distributed.runtime import init_runtime, shutdown_runtime


def main() -> int:
    runtime = init_runtime(timeout_s=120)
    try:
        value = torch.tensor([float(runtime.rank)], device=runtime.device)
        dist.all_reduce(value)
        expected = runtime.world_size * (runtime.world_size - 1) / 2
        if runtime.is_main:
            print(f"smoke: world_size={runtime.world_size} backend={runtime.backend} all_reduce={value.item():.0f} expected={expected:.0f}")
        return 0 if value.item() == expected else 1
    finally:
        shutdown_runtime()


if __name__ == "__main__":
    sys.exit(main())
