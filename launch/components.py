"""torchx components for torchrec_app: ``torchx run -s SCHEDULER launch/components.py:NAME``.

Each component is ``torchx.components.dist.ddp`` with our module as the entry point;
they differ only in resources and share :func:`_trainer_app`. Their docstrings are
their ``--help``.

Two kinds of retry, on every scheduler:

* ``--max_restarts N``: torchrun (inside the job) restarts the worker group up to N
  times when a worker dies; the restarted ranks resume from the last checkpoint. This is
  what restarts a job under ``local_cwd``, and the fast path everywhere else.
  ``dist.ddp`` has no such parameter; :func:`_with_max_restarts` adds it to the
  torchrun command ddp builds.
* ``--max_retries N``: what torchx means by it, the scheduler resubmitting the failed
  job (slurm, kubernetes, ...). The local schedulers do not retry: with ``local_cwd``
  ``--max_retries`` alone ends ``FAILED`` after the first dead worker.

    torchx run -s local_cwd launch/components.py:train --nproc 2 --recipe default --data data/generated/parquet
    torchx run -s local_cwd launch/components.py:train_gpu --nproc 8 --recipe criteo_1tb_dcnv2_mlperf --data DIR
    torchx run -s local_cwd launch/components.py:smoke --nproc 2
"""


import torchx
import torchx.specs as specs
from torchx.components.dist import ddp


def _trainer_app(
    overrides: "tuple[str, ...]",
    recipe: str,
    data: str,
    out: str,
    nnodes: int,
    nproc: int,
    cpu: int,
    gpu: int,
    memMB: int,
    max_restarts: int,
    max_retries: int,
    rdzv_port: int,
    image: str,
) -> specs.AppDef:
    args = ["--recipe", recipe, "--data", data] + (["--out", out] if out else [])
    app = ddp(
        *args, *overrides,
        m="torchrec_app.train", j=f"{nnodes}x{nproc}", name=f"torchrec_app-{recipe}", cpu=cpu, gpu=gpu, memMB=memMB,
        max_retries=max_retries, rdzv_port=rdzv_port, image=image,
    )
    return _with_max_restarts(app, max_restarts)


def _with_max_restarts(app: specs.AppDef, max_restarts: int) -> specs.AppDef:
    """``app`` (from ``dist.ddp``) with ``torchrun --max_restarts max_restarts``.

    ddp runs ``bash -c "torchrun ARGS"``; the option goes right after ``torchrun``.
    """
    if max_restarts < 0:
        raise ValueError(f"--max_restarts must be >= 0, got {max_restarts}")
    for role in app.roles:
        if role.entrypoint != "bash" or len(role.args) != 2 or not role.args[1].startswith("torchrun "):
            raise RuntimeError(f"torchx's dist.ddp no longer builds `bash -c \"torchrun ...\"` (got {role.args}); "
                               "update launch/components.py:_with_max_restarts for this torchx version")
        role.args = [role.args[0], f"torchrun --max_restarts {max_restarts} {role.args[1].removeprefix('torchrun ')}"]
    return app


def train(
    *overrides: str,
    recipe: str = "default",
    data: str = "data/generated/parquet",
    out: str = "",
    nnodes: int = 1,
    nproc: int = 2,
    cpu: int = 2,
    memMB: int = 8192,
    max_restarts: int = 0,
    max_retries: int = 0,
    rdzv_port: int = 29500,
    image: str = torchx.IMAGE,
) -> specs.AppDef:
    """Train on CPU hosts (gloo): NNODES x NPROC ranks.

    Args:
        overrides: config overrides, section.key=value
        recipe: named recipe (torchrec-app show-config --list)
        data: preprocessed dataset directory
        out: run directory (default runs/<recipe>-<time>)
        nnodes: number of hosts
        nproc: processes per host
        cpu: CPUs per host (scheduler request)
        memMB: memory per host in MB (scheduler request)
        max_restarts: times torchrun restarts all workers after one fails (resuming from the last checkpoint); works on every scheduler, local_cwd included
        max_retries: times the scheduler resubmits the failed job (slurm, kubernetes; local schedulers do not retry)
        rdzv_port: rendezvous port on the first host
        image: image (local_cwd: ignored, the current directory is used)
    """
    return _trainer_app(overrides, recipe, data, out, nnodes, nproc, cpu, 0, memMB, max_restarts, max_retries, rdzv_port, image)


def train_gpu(
    *overrides: str,
    recipe: str = "criteo_1tb_dcnv2_mlperf",
    data: str = "",
    out: str = "",
    nnodes: int = 1,
    nproc: int = 8,
    cpu: int = 64,
    memMB: int = 512000,
    max_restarts: int = 0,
    max_retries: int = 0,
    rdzv_port: int = 29500,
    image: str = "torchrec_app:gpu",
) -> specs.AppDef:
    """Train on GPU hosts (nccl): NNODES x NPROC ranks, one GPU each.

    Args:
        overrides: config overrides, section.key=value
        recipe: named recipe (torchrec-app show-config --list)
        data: preprocessed dataset directory (shared storage on multi-node)
        out: run directory (default runs/<recipe>-<time>)
        nnodes: number of hosts
        nproc: GPUs (processes) per host
        cpu: CPUs per host (scheduler request)
        memMB: memory per host in MB (scheduler request)
        max_restarts: times torchrun restarts all workers after one fails (resuming from the last checkpoint); works on every scheduler, local_cwd included
        max_retries: times the scheduler resubmits the failed job (slurm, kubernetes; local schedulers do not retry)
        rdzv_port: rendezvous port on the first host
        image: container image built from the repo's Dockerfile
    """
    return _trainer_app(overrides, recipe, data, out, nnodes, nproc, cpu, nproc, memMB, max_restarts, max_retries,
                        rdzv_port, image)


def smoke(nnodes: int = 1, nproc: int = 2, rdzv_port: int = 29500, image: str = torchx.IMAGE) -> specs.AppDef:
    """Check the launch path alone: every rank joins the process group and all-reduces its rank.

    Args:
        nnodes: number of hosts
        nproc: processes per host
        rdzv_port: rendezvous port on the first host
        image: image (local_cwd: ignored)
    """
    return ddp(m="torchrec_app.distributed.smoke", j=f"{nnodes}x{nproc}", name="torchrec_app-smoke", rdzv_port=rdzv_port, image=image)
