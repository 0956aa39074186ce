"""Rendering the plain sbatch scripts of a sweep from ``sbatch/*.sbatch`` and its manifest.

A script is what is submitted, and what an admin can read and submit by hand: ``prepare`` builds the
caches, ``array`` runs single-process cells, ``multinode`` runs cells trained by several processes. An array
task id is a manifest index minus the script's offset; indices at or above the cluster's MaxArraySize go
into further arrays with larger offsets, so every task id stays below it.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from geopeft.errors import ConfigError
from geopeft.paths import SweepPaths
from hpc.profiles import ClusterProfile, Resources

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "sbatch"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Script:
    """One rendered sbatch script.

    Args:
        kind: ``prepare``, ``array`` or ``multinode``.
        path: where it is (or would be) written.
        text: the script.
        indices: manifest indices it runs (empty for ``prepare``).
        offset: manifest index = array task id + offset.
        resources: the shape of its cells (None for ``prepare``).
        after: the ordinal, among the arrays of the same submission, of the array this one starts after
            (``afterany``; -1 for none): with more arrays than ``max_parallel`` they run in that many lanes.
    """

    kind: str
    path: Path
    text: str
    indices: tuple[int, ...] = ()
    offset: int = 0
    resources: Resources | None = None
    after: int = -1

    def task_id(self, index: int) -> int:
        """The array task id of manifest ``index``."""
        return index - self.offset

    @property
    def directives(self) -> list[str]:
        """Its ``#SBATCH`` lines."""
        return [line for line in self.text.splitlines() if line.startswith("#SBATCH")]


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{{name}}`` placeholders of ``sbatch/<template>.sbatch``; drop lines that render empty."""
    path = TEMPLATE_DIR / f"{template}.sbatch"
    text = path.read_text(encoding="utf-8")
    wanted = set(PLACEHOLDER.findall(text))
    if wanted - set(values):
        raise ConfigError(
            f"{path}: no value for {sorted(wanted - set(values))}; the template and hpc/sbatch.py differ"
        )
    lines = []
    for line in text.splitlines():
        filled = PLACEHOLDER.sub(lambda m: values[m.group(1)], line)
        if filled or not line:
            lines.append(filled)
    return "\n".join(lines) + "\n"


def array_spec(task_ids: Sequence[int], parallel: int) -> str:
    """``--array`` value: ids as ranges, with the ``%P`` cap, e.g. ``0-3,7,9-10%2``."""
    ids = sorted(set(task_ids))
    parts: list[str] = []
    start = prev = ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return f"{','.join(parts)}%{min(parallel, len(ids))}"


def chunks(indices: Iterable[int], max_array_size: int) -> list[tuple[int, list[int]]]:
    """Split manifest indices into ``(offset, indices)`` groups whose task ids lie in [0, max_array_size)."""
    groups: dict[int, list[int]] = {}
    for i in sorted(indices):
        groups.setdefault(i // max_array_size * max_array_size, []).append(i)
    return sorted(groups.items())


def throttles(sizes: Sequence[int], parallel: int) -> list[int]:
    """The ``%P`` of each array of one submission, so that together they never run more than ``parallel`` tasks.

    Up to ``parallel`` arrays share the cap in proportion to their sizes (largest remainder; at least 1, at most
    its size each). With more arrays than that, each gets 1, and :func:`array_scripts` makes array ``j`` wait for
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
    """Indices as ranges for comments, e.g. ``0-3,7``."""
    return array_spec(indices, 1).rsplit("%", 1)[0]


def slurm_time(minutes: int) -> str:
    """Minutes as SLURM's ``D-HH:MM:SS``."""
    return f"{minutes // 1440}-{minutes % 1440 // 60:02d}:{minutes % 60:02d}:00"


def options(profile: ClusterProfile, resources: Resources | None) -> str:
    """The optional ``#SBATCH`` lines: partition, account, qos, GPUs, memory."""
    lines = [f"#SBATCH --{k}={v}" for k, v in (("partition", profile.partition), ("account", profile.account))]
    lines = [line for line in lines if not line.endswith("=")]
    if profile.qos:
        lines.append(f"#SBATCH --qos={profile.qos}")
    if resources is not None and resources.gpus_per_task:
        lines.append(f"#SBATCH --gpus-per-task={resources.gpus_per_task}")
    if resources is not None and resources.mem_gb:
        lines.append(f"#SBATCH --mem={resources.mem_gb}G")
    return "\n".join(lines)


@dataclass(frozen=True)
class Context:
    """What every script of one submission shares.

    Args:
        sweep: sweep name.
        root: sweep directory.
        kind: ``sweep`` or ``rerun``.
        git: the code version submitting (``{"sha": ..., "dirty": ...}``).
        stamp: the submission time as printed in the scripts.
        seq: the submission's number in this sweep (names its scripts).
        python: the interpreter the scripts call; empty for the profile's, else this one.
        code: the code snapshot the scripts put first on ``PYTHONPATH`` (:mod:`hpc.snapshot`); empty for none.
    """

    sweep: str
    root: Path
    kind: str
    git: Mapping[str, object]
    stamp: str
    seq: int
    python: str = ""
    code: str = ""

    @property
    def prefix(self) -> str:
        """File-name prefix of this submission's scripts, e.g. ``0003-rerun``."""
        return f"{self.seq:04d}-{self.kind}"

    @property
    def script_dir(self) -> Path:
        """Where the rendered scripts are written (kept: they record what was submitted)."""
        return SweepPaths(self.root).slurm_dir

    def common(self, profile: ClusterProfile, name: str) -> dict[str, str]:
        """Placeholder values shared by every template."""
        sha = str(self.git.get("sha") or "unknown")[:12]
        return {
            "sweep": self.sweep,
            "root": shlex.quote(str(self.root)),
            "kind": self.kind,
            "when": self.stamp,
            "git": sha + (" with uncommitted changes" if self.git.get("dirty") else ""),
            "script": str(self.script_dir / name),
            "log_dir": str(SweepPaths(self.root).slurm_logs),
            "setup": "\n".join(profile.setup) or "true",
            "python": shlex.quote(self.python or profile.python or sys.executable),
            "code": f"export PYTHONPATH={shlex.quote(self.code)}${{PYTHONPATH:+:$PYTHONPATH}}" if self.code else "",
        }


def array_scripts(ctx: Context, profile: ClusterProfile, shapes: Mapping[Resources, list[int]]) -> list[Script]:
    """One script per resource shape and MaxArraySize chunk; together they run at most ``max_parallel`` cells.

    The cap holds across shapes and chunks (:func:`throttles`): each array gets its share as ``%P``, and with
    more arrays than ``max_parallel`` each waits for the one ``max_parallel`` places before it.
    """
    parts = [
        (shape_no, res, offset, part)
        for shape_no, (res, indices) in enumerate(shapes.items())
        for offset, part in chunks(indices, profile.max_array_size)
    ]
    caps = throttles([len(part) for *_, part in parts], profile.max_parallel)
    lanes = profile.max_parallel
    out: list[Script] = []
    for ordinal, ((shape_no, res, offset, part), cap) in enumerate(zip(parts, caps, strict=True)):
        template = "multinode" if res.multi_task else "array"
        name = f"{ctx.prefix}-shape{shape_no}-from{offset}.sbatch"
        values = {
            **ctx.common(profile, name),
            "job_name": f"geopeft-{ctx.sweep}",
            "array": array_spec([i - offset for i in part], cap),
            "offset": str(offset),
            "indices": compact(part),
            "time": slurm_time(res.time_limit_min),
            "nodes": str(res.nodes),
            "tasks_per_node": str(res.tasks_per_node),
            "ranks": str(res.nodes * res.tasks_per_node),
            "cpus_per_task": str(res.cpus_per_task),
            "signal_lead_s": str(profile.signal_lead_s),
            "options": options(profile, res),
        }
        text = render(template, values)
        after = ordinal - lanes if len(parts) > lanes and ordinal >= lanes else -1
        out.append(Script(template, ctx.script_dir / name, text, tuple(part), offset, res, after))
    return out


def prepare_script(ctx: Context, profile: ClusterProfile, commands: Sequence[Sequence[str]], datasets: str) -> Script:
    """The cache-prepare job: one ``python -m hpc prepare ...`` line per dataset."""
    name = f"{ctx.prefix}-prepare.sbatch"
    python = ctx.common(profile, name)["python"]
    values = {
        **ctx.common(profile, name),
        "job_name": f"geopeft-{ctx.sweep}-prepare",
        "time": slurm_time(profile.prepare_time_min),
        "cpus_per_task": str(profile.prepare_cpus),
        "options": options(profile, None),
        "datasets": datasets,
        "commands": "\n".join(f"{python} -m hpc " + shlex.join(c) for c in commands),
    }
    return Script("prepare", ctx.script_dir / name, render("prepare", values))
