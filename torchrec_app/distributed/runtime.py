"""Who and where this process is: rank, world, device and backend, from the launcher.

Under torchrun / torchx ``dist.ddp`` the environment carries ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and the rendezvous address. A plain
``python -m torchrec_app.train`` is a world of one: it still gets a real process group
(so the trainer has one code path), on a free loopback port.

The device decides the backend: nccl on CUDA, gloo on CPU. Nothing else in the code
branches on the device except through :class:`Runtime`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """True on the rank that writes run files and prints."""
        return self.rank == 0


def free_port() -> int:
    """A free TCP port on loopback (for a world of one, and for tests that start jobs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pick_device(local_rank: int) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def device_memory_gb(device: torch.device) -> float:
    """Total memory of a CUDA device in GiB (what the planner may fill); 0 for the CPU."""
    if device.type != "cuda":
        return 0.0
    return torch.cuda.get_device_properties(device).total_memory / 1024**3


def _store_for_this_attempt(rank: int, world_size: int, timeout: timedelta) -> dist.Store | None:
    """Under torchelastic, the rendezvous store with keys namespaced by restart attempt.

    torch assumes the agent makes a new store for every restart, but with the c10d
    rendezvous (``torchrun --standalone``) the store can outlive a failed round, and a
    restarted rank then reads a dead peer's gloo address and fails to connect ("Connection
    refused"). A prefix per ``TORCHELASTIC_RESTART_COUNT`` keeps each round's keys apart.
    Outside torchelastic: None (``env://`` as usual).
    """
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return None
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=not agent_store and rank == 0, timeout=timeout, multi_tenant=not agent_store,
    )
    return dist.PrefixStore(f"torchrec_app/attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


def init_runtime(timeout_s: float = 600.0) -> Runtime:
    """Join (or, alone, create) the default process group and describe this process."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    device = pick_device(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        dist.init_process_group(backend=backend, store=_store_for_this_attempt(rank, world_size, timeout),
                                rank=rank, world_size=world_size, timeout=timeout)
    return Runtime(rank, world_size, local_rank, local_world_size, device, backend)


def shutdown_runtime() -> None:
    """Destroy the default process group if one is up (safe to call twice)."""
    if dist.is_initialized():
        dist.destroy_process_group()
