"""Where a result came from: code version, library versions, host, scheduler ids."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import geopeft

_LIBRARIES = ("torch", "peft", "timm", "numpy", "h5py", "rasterio", "submitit")


def git_state(start: Path | None = None) -> dict[str, Any]:
    """``{"sha": ..., "dirty": bool}`` of the repository holding geopeft, or nulls outside a checkout."""
    where = start or Path(geopeft.__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": bool(status.strip())}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape a result."""
    out: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def scheduler_ids() -> dict[str, str | None]:
    """SLURM job / array ids of the current process (nulls outside SLURM)."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_JOB_NODELIST")
    return {k.lower(): os.environ.get(k) for k in keys}


def provenance() -> dict[str, Any]:
    """Everything above plus geopeft's version, the host and Python."""
    return {
        "geopeft": geopeft.__version__,
        "git": git_state(),
        "libraries": library_versions(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "scheduler": scheduler_ids(),
    }
