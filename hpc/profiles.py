"""Cluster profiles: where and with what resources cells run (files in ``hpc/clusters/*.toml``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from geopeft.errors import ConfigError, unknown_choice

PROFILE_DIR = Path(__file__).parent / "clusters"
EXECUTORS = ("local",)


@dataclass(frozen=True)
class ClusterProfile:
    """Resources and limits for the cells of a sweep.

    Args:
        name: profile name (the file's stem).
        executor: ``local`` (submitit's LocalExecutor).
        time_limit_min: wall-clock limit per cell, in minutes.
        signal_lead_s: seconds before the limit at which the checkpoint signal is sent.
        max_parallel: cells running at once.
    """

    name: str
    executor: str = "local"
    time_limit_min: int = 120
    signal_lead_s: int = 60
    max_parallel: int = 2

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise unknown_choice(f"executor in cluster profile {self.name!r}", self.executor, EXECUTORS)
        for name in ("time_limit_min", "max_parallel"):
            if getattr(self, name) < 1:
                raise ConfigError(f"cluster profile {self.name!r}: {name} must be >= 1")


def profile_names() -> list[str]:
    """Profiles shipped in ``hpc/clusters``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> ClusterProfile:
    """Load a shipped profile by name, or any profile file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        if name_or_path not in profile_names():
            raise unknown_choice("cluster profile", name_or_path, profile_names())
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"{path}: cluster profile not found")
    try:
        doc: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    allowed = [f.name for f in fields(ClusterProfile) if f.name != "name"]
    unknown = [k for k in doc if k not in allowed]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return ClusterProfile(name=path.stem, **doc)
