"""Cluster profiles: where and with what resources cells run (files in ``hpc/clusters/*.toml``).

A profile names an executor (``local``: processes on this machine; ``slurm``: sbatch arrays) and, for
SLURM, the partition, account, qos, resources per task, time limit, setup lines, the cluster's
MaxArraySize, the ``%P`` concurrency cap and the signal lead time. ``[[shape]]`` tables give other
resources to the cells they match (e.g. more time and GPUs for the 600M backbones); cells are submitted
as one array per resulting resource shape.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from geopeft.errors import ConfigError, unknown_choice
from geopeft.io import atomic_write_json, read_json
from geopeft.spec import CellSpec

PROFILE_DIR = Path(__file__).resolve().parents[1] / "clusters"


class Executor(StrEnum):
    """Where a profile's cells run: ``local`` (submitit's LocalExecutor, here) or ``slurm`` (its SlurmExecutor)."""

    LOCAL = "local"
    SLURM = "slurm"


EXECUTORS = tuple(e.value for e in Executor)
RESOURCE_KEYS = ("nodes", "tasks_per_node", "gpus_per_task", "cpus_per_task", "mem_gb", "time_limit_min")


@dataclass(frozen=True)
class Resources:
    """What one array task asks for: a resource shape.

    Args:
        nodes: nodes per cell.
        tasks_per_node: processes (DDP ranks) per node, launched by ``srun``.
        gpus_per_task: GPUs per process (0 on CPU-only clusters).
        cpus_per_task: CPU cores per process.
        mem_gb: memory per node in GB (0 leaves it to the partition's default).
        time_limit_min: wall-clock limit per cell, in minutes.
    """

    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: int = 0
    time_limit_min: int = 120

    @property
    def gpus(self) -> int:
        """GPUs a cell holds."""
        return self.nodes * self.tasks_per_node * self.gpus_per_task

    @property
    def multi_task(self) -> bool:
        """Whether a cell spans several processes (DDP under ``srun``)."""
        return self.nodes * self.tasks_per_node > 1

    def check(self, where: str) -> None:
        """Raise a :class:`ConfigError` naming ``where`` for impossible values."""
        for name in RESOURCE_KEYS:
            value = getattr(self, name)
            lowest = 0 if name in ("gpus_per_task", "mem_gb") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ConfigError(f"{where}: {name} must be an integer >= {lowest}, got {value!r}")


@dataclass(frozen=True)
class Shape:
    """Resources for the cells matching ``where`` (dotted spec keys -> value or list of values)."""

    where: tuple[tuple[str, Any], ...]
    set: tuple[tuple[str, int], ...]

    def matches(self, spec: CellSpec) -> bool:
        """Whether ``spec`` matches every key of :attr:`where`."""
        doc = spec.to_dict()
        for dotted, expected in self.where:
            node: Any = doc
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if not (node in expected if isinstance(expected, tuple) else node == expected):
                return False
        return True


@dataclass(frozen=True)
class ClusterProfile:
    """Resources and limits for the cells of a sweep.

    Args:
        name: profile name (the file's stem).
        executor: ``local`` (submitit's LocalExecutor) or ``slurm`` (sbatch arrays).
        time_limit_min: wall-clock limit per cell, in minutes.
        signal_lead_s: seconds before the limit at which USR2 (checkpoint, requeue) is sent.
        max_parallel: cells running at once (the ``%P`` of each array).
        partition: SLURM partition; empty for the cluster's default.
        account: SLURM account to charge; empty for the user's default.
        qos: SLURM quality of service; empty for none.
        nodes: nodes per cell.
        tasks_per_node: processes per node (DDP ranks).
        gpus_per_task: GPUs per process; 0 makes the profile CPU-only.
        cpus_per_task: CPU cores per process.
        mem_gb: memory per node in GB; 0 for the partition's default.
        max_array_size: the cluster's MaxArraySize (``scontrol show config``); arrays are chunked below it.
        setup: shell lines run before the cell (modules, venv, ``export HDF5_USE_FILE_LOCKING=FALSE``).
        python: the interpreter on the compute nodes; empty for the one submitting.
        prepare_cpus: CPU cores of the cache-prepare job.
        prepare_time_min: time limit of the cache-prepare job.
        shape: other resources for matching cells (from ``[[shape]]`` tables).
    """

    name: str
    executor: Executor = Executor.LOCAL
    time_limit_min: int = 120
    signal_lead_s: int = 60
    max_parallel: int = 2
    partition: str = ""
    account: str = ""
    qos: str = ""
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: int = 0
    max_array_size: int = 1001
    setup: tuple[str, ...] = ()
    python: str = ""
    prepare_cpus: int = 1
    prepare_time_min: int = 60
    shape: tuple[Shape, ...] = ()

    def __post_init__(self) -> None:
        where = f"cluster profile {self.name!r}"
        self._check_types(where)
        if self.python:
            from hpc.scheduler.names import check_script_path

            check_script_path(self.python, f"{where}: python")
        if self.executor not in EXECUTORS:
            raise unknown_choice(f"executor in {where}", self.executor, EXECUTORS)
        object.__setattr__(self, "executor", Executor(self.executor))
        for name in ("time_limit_min", "max_parallel", "max_array_size", "prepare_cpus", "prepare_time_min"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}: {name} must be >= 1")
        if self.signal_lead_s < 0 or self.signal_lead_s >= self.time_limit_min * 60:
            raise ConfigError(f"{where}: signal_lead_s must lie in [0, time_limit_min * 60)")
        object.__setattr__(self, "setup", tuple(self.setup))
        self.default_resources.check(where)
        for i, shape in enumerate(self.shape):
            self._apply(shape).check(f"{where}: shape[{i}]")
            if self.gpus_per_task == 0 and dict(shape.set).get("gpus_per_task", 0) > 0:
                raise ConfigError(
                    f"{where}: shape[{i}] asks for GPUs but the profile is CPU-only (gpus_per_task = 0); "
                    "use a GPU profile or drop gpus_per_task from the shape"
                )

    def _check_types(self, where: str) -> None:
        """Each key has its declared type: ``"30"`` is not an int, ``true`` is not a number, setup is strings."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "shape":
                continue
            if f.name == "setup":
                if isinstance(value, str) or not all(isinstance(line, str) for line in value):
                    raise ConfigError(
                        f'{where}: setup must be a list of shell lines, e.g. setup = ["module load cuda"]'
                    )
            elif isinstance(f.default, bool) or not isinstance(f.default, int):
                if not isinstance(value, str):
                    raise ConfigError(f"{where}: {f.name} must be a string, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where}: {f.name} must be an integer, got {value!r} ({type(value).__name__})")

    @property
    def default_resources(self) -> Resources:
        """The resources of a cell no shape matches."""
        return Resources(**{k: getattr(self, k) for k in RESOURCE_KEYS})

    def _apply(self, shape: Shape) -> Resources:
        return replace(self.default_resources, **dict(shape.set))

    def resources_for(self, spec: CellSpec) -> Resources:
        """The resources of ``spec``: those of the last matching shape, else the defaults."""
        for shape in reversed(self.shape):
            if shape.matches(spec):
                return self._apply(shape)
        return self.default_resources


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
    return _from_doc(doc, path.stem, str(path))


def _from_doc(doc: dict[str, Any], name: str, where: str) -> ClusterProfile:
    allowed = [f.name for f in fields(ClusterProfile) if f.name != "name"]
    unknown = [k for k in doc if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    doc = dict(doc)
    shapes = tuple(_shape(s, f"{where}: shape[{i}]") for i, s in enumerate(doc.pop("shape", [])))
    try:
        return ClusterProfile(name=name, shape=shapes, **doc)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def profile_to_dict(profile: ClusterProfile) -> dict[str, Any]:
    """The profile as the keys of its TOML file (plus ``name``), for recording with a submission."""
    doc = {f.name: getattr(profile, f.name) for f in fields(ClusterProfile) if f.name != "shape"}
    doc["setup"] = list(profile.setup)
    doc["shape"] = [
        {"where": {k: list(v) if isinstance(v, tuple) else v for k, v in s.where}, **dict(s.set)}
        for s in profile.shape
    ]
    return doc


def record_profile(path: Path, profile: ClusterProfile) -> None:
    """Record the profile a sweep was submitted with (``SweepPaths.cluster``), atomically."""
    atomic_write_json(path, {"profile": profile_to_dict(profile)})


def recorded_profile(path: Path) -> ClusterProfile | None:
    """The profile recorded at ``path`` by :func:`record_profile`; None when nothing was recorded."""
    if not path.exists():
        return None
    recorded = read_json(path)
    doc = recorded.get("profile") if isinstance(recorded, dict) else None
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ConfigError(f"{path}: no recorded cluster profile; pass --cluster PROFILE (it is recorded again)")
    doc = dict(doc)
    return _from_doc(doc, doc.pop("name"), str(path))


def _shape(doc: Any, where: str) -> Shape:
    if not isinstance(doc, dict) or not isinstance(doc.get("where"), dict) or not doc["where"]:
        raise ConfigError(f'{where}: needs a non-empty `where` table, e.g. where = {{"model.name" = "..."}}')
    unknown = [k for k in doc if k != "where" and k not in RESOURCE_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: where, {', '.join(RESOURCE_KEYS)}")
    match = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in doc["where"].items())
    return Shape(where=match, set=tuple((k, v) for k, v in doc.items() if k != "where"))
