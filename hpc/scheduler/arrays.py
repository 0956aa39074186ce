"""How the cells of one SLURM submission become jobs: the prepare job, then arrays per resource shape and chunk.

Cells with the same resources (:meth:`hpc.scheduler.profiles.ClusterProfile.resources_for`) share an array; an array
holds
at most MaxArraySize cells (array task ``k`` runs the ``k``-th of its manifest indices). ``max_parallel`` caps the
whole submission (:func:`throttles`): the arrays share it as their ``%P``, and with more arrays than
``max_parallel`` each waits (``afterany``) for the one ``max_parallel`` places before it, so they run in that many
lanes. The scripts themselves are written by submitit (:mod:`hpc.launch.slurm_jobs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpc.scheduler.profiles import ClusterProfile, Resources


@dataclass(frozen=True)
class Script:
    """One job of a submission and its sbatch script (submitit's text).

    Args:
        kind: ``prepare`` or ``array``.
        path: where the script is kept (``<sweep>/slurm/<name>.sbatch``).
        text: the script (with placeholders for the dependencies in a dry run).
        indices: manifest indices it runs, array task ``k`` running ``indices[k]`` (empty for ``prepare``).
        resources: the shape of its cells (None for ``prepare``).
        parallelism: its ``%P``.
        after: the ordinal, among the arrays of the same submission, of the array this one starts after
            (``afterany``; -1 for none).
    """

    kind: str
    path: Path
    text: str = ""
    indices: tuple[int, ...] = ()
    resources: Resources | None = None
    parallelism: int = 1
    after: int = -1

    def task_id(self, index: int) -> int:
        """The array task id of manifest ``index``."""
        return self.indices.index(index)

    @property
    def directives(self) -> list[str]:
        """Its ``#SBATCH`` lines."""
        return [line for line in self.text.splitlines() if line.startswith("#SBATCH")]


def chunks(indices: Iterable[int], max_array_size: int) -> list[list[int]]:
    """Sorted manifest indices in groups of at most ``max_array_size`` (an array's task ids are 0..n-1)."""
    ordered = sorted(indices)
    return [ordered[i : i + max_array_size] for i in range(0, len(ordered), max_array_size)]


def throttles(sizes: Sequence[int], parallel: int) -> list[int]:
    """The ``%P`` of each array of one submission, so that together they never run more than ``parallel`` tasks.

    Up to ``parallel`` arrays share the cap in proportion to their sizes (largest remainder; at least 1, at most
    its size each). With more arrays than that, each gets 1, and :func:`plan_arrays` makes array ``j`` wait for
    array ``j - parallel``.
    """
    n = len(sizes)
    if n > parallel:
        return [1] * n
    if sum(sizes) <= parallel:
        return list(sizes)
    quotas = [parallel * size / sum(sizes) for size in sizes]
    caps = [max(1, min(size, int(q))) for size, q in zip(sizes, quotas, strict=True)]
    while sum(caps) > parallel:  # the floors of 1 pushed it over: take from the largest
        caps[caps.index(max(caps))] -= 1
    by_remainder = sorted(range(n), key=lambda i: quotas[i] - int(quotas[i]), reverse=True)
    while sum(caps) < parallel:
        grown = False
        for i in by_remainder:
            if caps[i] < sizes[i] and sum(caps) < parallel:
                caps[i] += 1
                grown = True
        if not grown:
            break
    return caps


def compact(indices: Sequence[int]) -> str:
    """Indices as ranges, e.g. ``0-3,7``."""
    ids = sorted(set(indices))
    if not ids:
        return ""
    parts: list[str] = []
    start = prev = ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def plan_arrays(
    profile: ClusterProfile, shapes: Mapping[Resources, list[int]], prefix: str, folder: Path
) -> list[Script]:
    """The arrays of one submission (without their text): one per shape and chunk, with ``%P`` and lanes.

    Args:
        profile: the cluster profile (``max_array_size``, ``max_parallel``).
        shapes: resources -> the manifest indices of that shape.
        prefix: the scripts' file-name prefix, e.g. ``0003-rerun``.
        folder: where the scripts are kept.
    """
    parts = [
        (shape_no, res, part)
        for shape_no, (res, indices) in enumerate(shapes.items())
        for part in chunks(indices, profile.max_array_size)
    ]
    caps = throttles([len(part) for *_, part in parts], profile.max_parallel)
    lanes = profile.max_parallel
    out: list[Script] = []
    for ordinal, ((shape_no, res, part), cap) in enumerate(zip(parts, caps, strict=True)):
        after = ordinal - lanes if len(parts) > lanes and ordinal >= lanes else -1
        name = f"{prefix}-shape{shape_no}-from{part[0]}.sbatch"
        out.append(Script("array", folder / name, "", tuple(part), res, cap, after))
    return out
