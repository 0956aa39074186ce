"""Which process this is: ranks from torchrun or from SLURM, the rendezvous, and the process group's life.

Two kinds of launcher give ranks. ``torchrun`` (and a hand-set environment) exports ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and so does submitit's ``TorchDistributedEnvironment``, which
geopeft's SLURM tasks run before the cell (launcher ``submitit``); ``srun`` alone (one task per GPU, e.g.
``sbatch/cells.sbatch``) exports ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and ``SLURM_JOB_NODELIST``.
The torch names win when both are present. Without a given port, the rendezvous port is derived from the cell id, so
array tasks of different cells that share a node never meet on one port; the address is the first host of the
node list. :meth:`DistEnv.export` writes the torch names back, which DeepSpeed needs (it otherwise tries MPI).

A rank that dies (killed, out of host memory, its node gone) breaks the next collective of the others: gloo raises
"Connection closed by peer", the store a network error. :func:`process_group` turns that into a failure of class
``peer`` (rank 0 records it), so the status table tells a lost rank from an error of the cell's own code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed import PrefixStore, Store, TCPStore  # type: ignore[attr-defined]  # not re-exported

from geopeft.errors import CellFailed, ConfigError

#: Rendezvous ports derived from a cell id lie in [PORT_BASE, PORT_BASE + PORT_SPAN).
PORT_BASE, PORT_SPAN = 20000, 30000


def port_for(cell_id: str) -> int:
    """The rendezvous port of a cell: a hash of its id mapped into [20000, 50000)."""
    digest = int(hashlib.sha256(cell_id.encode()).hexdigest()[:8], 16)
    return PORT_BASE + digest % PORT_SPAN


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list such as ``gpu[007-009,012],cpu01`` (here ``gpu007``)."""
    head = re.match(r"([^,\[]+)(\[([^\]]*)\])?", nodelist.strip())
    if head is None or not head.group(1):
        raise ConfigError(f"SLURM_JOB_NODELIST {nodelist!r} names no host; launch the cell with srun inside a job")
    prefix, ranges = head.group(1), head.group(3)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"environment variable {name}={env[name]!r} is not an integer; fix the launcher") from None


@dataclass(frozen=True)
class DistEnv:
    """The rank layout of this process.

    Args:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this node (picks the GPU).
        master_addr: host of rank 0.
        master_port: rendezvous port.
        launcher: ``single``, ``torchrun``, ``submitit`` (torch names exported by submitit) or ``slurm``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = PORT_BASE
    launcher: str = "single"

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ConfigError(
                f"rank {self.rank} / world size {self.world_size} / local rank {self.local_rank} from the "
                f"{self.launcher} environment are inconsistent; fix the launcher's variables"
            )

    @classmethod
    def from_env(cls, cell_id: str, env: Mapping[str, str] | None = None) -> DistEnv:
        """Read the layout from ``env`` (default ``os.environ``); the port falls back to :func:`port_for`."""
        env = os.environ if env is None else env
        port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else port_for(cell_id)
        if "RANK" in env and "WORLD_SIZE" in env:
            return cls(
                rank=_int(env, "RANK"),
                world_size=_int(env, "WORLD_SIZE"),
                local_rank=_int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
                master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                master_port=port,
                launcher="submitit" if env.get("SUBMITIT_EXECUTOR") == "slurm" else "torchrun",
            )
        if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
            addr = env.get("MASTER_ADDR") or first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
            return cls(
                rank=_int(env, "SLURM_PROCID"),
                world_size=_int(env, "SLURM_NTASKS"),
                local_rank=_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
                master_addr=addr,
                master_port=port,
                launcher="slurm",
            )
        return cls(master_port=port)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    def export(self) -> None:
        """Write ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` into ``os.environ``."""
        os.environ.update(
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            LOCAL_RANK=str(self.local_rank),
            MASTER_ADDR=self.master_addr,
            MASTER_PORT=str(self.master_port),
        )

    def device(self, kind: str) -> torch.device:
        """This rank's device: ``cuda:<local rank>`` (made current) or ``cpu``."""
        if kind != "cuda":
            return torch.device(kind)
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {self.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "request as many GPUs per node as tasks per node"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)


#: Process groups this process has joined; each gets its own key prefix in the rendezvous store.
_GROUPS = [0]


def _store(env: DistEnv, timeout: timedelta) -> Store:
    """The rendezvous store of a new group: torchrun's agent store, or one that rank 0 serves on the port.

    Keys are prefixed per group, so a later group of this process (the next cell run in it) never reads the
    addresses an earlier, destroyed group left in a store that outlives it (torchrun's).
    """
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and env.launcher == "torchrun"
    store = TCPStore(
        env.master_addr,
        env.master_port,
        env.world_size,
        is_master=env.is_main and not agent,
        timeout=timeout,
        wait_for_workers=False,
    )
    _GROUPS[0] += 1
    return PrefixStore(f"geopeft/group{_GROUPS[0]}", store)


@contextlib.contextmanager
def process_group(env: DistEnv, device: torch.device, *, always: bool = False) -> Iterator[None]:
    """Join the process group for the body (gloo on CPU, nccl on GPU), then barrier and destroy it.

    Nothing happens with one process unless ``always`` (DeepSpeed wants a group even then). A group that
    exists already (made by the caller) is used and left alone.
    """
    if dist.is_initialized() or (env.world_size == 1 and not always):
        yield
        return
    env.export()
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(minutes=30)
    dist.init_process_group(
        backend, store=_store(env, timeout), rank=env.rank, world_size=env.world_size, timeout=timeout
    )
    try:
        yield
        dist.barrier()
    except RuntimeError as exc:
        lost = peer_lost(exc)
        if lost is None:
            raise
        raise lost from exc
    finally:
        dist.destroy_process_group()


#: What gloo's TCP transport says when the other side of a collective died or cannot be reached (its messages name
#: the source file: ``.../gloo/transport/tcp/pair.cc``; a peer that hangs times out in ``unbound_buffer.cc``).
PEER_MARKS = ("gloo/transport/", "Connection closed by peer", "Connection reset by peer")


def peer_lost(exc: BaseException) -> CellFailed | None:
    """The failure (class ``peer``) of a collective or store call that lost another rank; None for other errors."""
    text = str(exc)
    store = isinstance(exc, (dist.DistNetworkError, dist.DistStoreError))
    if not store and not (isinstance(exc, RuntimeError) and any(mark in text for mark in PEER_MARKS)):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return CellFailed(
        f"another rank of this cell failed or became unreachable ({first}); see the log lines of every rank, "
        "then rerun the cell (geopeft rerun --failed): it resumes from its last checkpoint",
        reason="peer",
    )


def world_size() -> int:
    """Ranks in the current process group (1 without one)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def _comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum ``values`` over all ranks (float64); the identity without a process group."""
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def any_rank(flags: list[bool]) -> list[bool]:
    """For each flag, whether it is set on any rank (one all-reduce for all flags)."""
    if world_size() == 1:
        return flags
    t = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.cpu()]


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if world_size() > 1:
        dist.barrier()
