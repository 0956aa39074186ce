"""A scheduler model of a sweep: how long the planned arrays take on N GPUs (``geopeft sweep --simulate-gpus N``).

A discrete-event simulation (``heapq``) of what the submissions of a plan do on a cluster of ``N`` GPUs. Its
assumptions, all of them:

- **GPUs are one pool.** A task holds its shape's GPUs (nodes x tasks per node x GPUs per task) from start to end;
  node boundaries, CPUs and memory are not modelled. The prepare job needs no GPU.
- **FIFO without backfill.** Pending tasks are ordered by submission (job id), then array order within the
  submission, then task id. A scheduling pass starts them in that order and stops at the first task that does
  not fit the free GPUs (SLURM's main scheduler with no backfill); a task held back by its array's ``%P`` or an
  unmet dependency is skipped and blocks nothing. Priorities, fair share, reservations, other users and the
  queue wait of a fresh job are not modelled: the cluster is the sweep's alone from time 0.
- **The plan's own limits.** Each array runs at most its ``%P`` tasks at once; an array with ``afterany`` waits
  until the whole array before it has ended (the lanes of :func:`hpc.scheduler.arrays.plan_arrays`); the arrays of a
  submission with a prepare job start when it ends (``afterok``). A submission made later (the seeded cells of a
  search) is made the moment the tasks it waits for have ended, and queues behind everything submitted before.
- **Run times.** A task runs its cell's run time (the caller's: :mod:`hpc.simulate_plan` takes the paper's, as
  :mod:`hpc.plan.estimate` maps them), whatever its GPU count. A run longer than its time limit is cut: it gets USR2
  ``signal_lead`` before the limit, checkpoints and is requeued, so each cut segment holds its GPUs for the whole
  limit and advances the run by (limit - lead); the requeued task keeps its place in the queue and resumes from
  its checkpoint (the epoch lost at the cut is not modelled). Every task succeeds.

The result says when every run started and ended, what each start waited for (its submission, the prepare job,
the array before it, a ``%P`` slot, a GPU, a requeue) and so which chain of runs ends last (the critical chain).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from geopeft.errors import ConfigError

EPS = 1e-9  # minutes: events closer than this happen at once


@dataclass(frozen=True)
class Task:
    """One array task (one cell) as the model sees it.

    Args:
        label: what it runs, for the printed chain (the cell's slug).
        stage: the stage it belongs to (times are printed per stage).
        minutes: its run time.
        gpus: GPUs it holds while it runs.
        limit_min: its time limit (a longer run is cut and requeued).
        lead_min: minutes before the limit at which a cut run checkpoints (the profile's ``signal_lead_s``).
        tags: names that later submissions wait for (e.g. its stage, its search).
    """

    label: str
    stage: str
    minutes: float
    gpus: int = 1
    limit_min: float = math.inf
    lead_min: float = 0.0
    tags: frozenset[str] = frozenset()

    def segments(self) -> tuple[float, ...]:
        """Minutes each run of the task holds its GPUs: cut at the time limit, resumed after each requeue."""
        if self.minutes <= self.limit_min:
            return (self.minutes,)
        step = self.limit_min - self.lead_min
        if step <= 0:
            raise ConfigError(f"{self.label}: the signal lead must be shorter than the time limit to make progress")
        cuts = math.ceil((self.minutes - self.limit_min) / step)
        return (self.limit_min,) * cuts + (self.minutes - cuts * step,)


@dataclass(frozen=True)
class Array:
    """One job array: its tasks in task-id order, its ``%P`` and the array of its submission it waits for."""

    name: str
    tasks: tuple[Task, ...]
    cap: int
    after: int = -1


@dataclass(frozen=True)
class Submission:
    """What one ``geopeft sweep`` command submits.

    Args:
        name: for the printed chain.
        arrays: its arrays in submission order.
        prepare_min: minutes of its cache-prepare job (0: none); its arrays wait for it.
        after: the command is run the moment every task carrying one of these tags has ended (empty: at time 0).
    """

    name: str
    arrays: tuple[Array, ...]
    prepare_min: float = 0.0
    after: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Run:
    """One run (segment) of a task: when it held its GPUs and what its start waited for.

    ``cause`` is the index of the run whose end let it start (-1: nothing, it started at time 0).
    """

    task: Task
    array: str
    start: float
    end: float
    why: str
    cause: int


@dataclass(frozen=True)
class Result:
    """A simulated plan: every run (prepare jobs included, with 0 GPUs), the GPUs, the makespan."""

    gpus: int
    runs: tuple[Run, ...]

    @property
    def makespan_min(self) -> float:
        """Minutes from the first submission to the end of the last run."""
        return max((r.end for r in self.runs), default=0.0)

    @property
    def busy_gpu_min(self) -> float:
        """GPU-minutes held by runs."""
        return sum(r.task.gpus * (r.end - r.start) for r in self.runs)

    @property
    def utilisation(self) -> float:
        """Busy GPU time over ``gpus`` x makespan."""
        span = self.makespan_min
        return self.busy_gpu_min / (self.gpus * span) if span > 0 else 0.0

    def chain(self) -> list[Run]:
        """The critical chain: the run that ends last, what it waited for, and so on back to time 0."""
        if not self.runs:
            return []
        i = max(range(len(self.runs)), key=lambda k: (self.runs[k].end, -k))
        out = []
        while i >= 0:
            out.append(self.runs[i])
            i = self.runs[i].cause
        return out[::-1]


class _ArrayState:
    """The mutable state of one array during a simulation."""

    def __init__(self, array: Array) -> None:
        self.array = array
        self.pending: list[tuple[int, int, tuple[float, ...], int]] = []  # (task id, runs so far, segments, cause)
        self.running = 0
        self.left = len(array.tasks)
        self.ready_at: float | None = None  # when its dependencies were met (its tasks then queue)
        self.ready_why = ""
        self.ready_cause = -1
        self.ended_at: float | None = None
        self.last = -1  # the run that ended it


def simulate(submissions: Sequence[Submission], gpus: int) -> Result:
    """Play ``submissions`` through the scheduler model on ``gpus`` GPUs (see the module docstring)."""
    if gpus < 1:
        raise ConfigError(f"the simulated cluster needs at least 1 GPU, got {gpus}")
    for sub in submissions:
        for a in sub.arrays:
            if a.cap < 1:
                raise ConfigError(f"array {a.name}: %P must be >= 1, got {a.cap}")
            big = next((t for t in a.tasks if t.gpus > gpus), None)
            if big is not None:
                raise ConfigError(f"{big.label} needs {big.gpus} GPUs; the simulated cluster has {gpus}")
    states = [[_ArrayState(a) for a in sub.arrays] for sub in submissions]
    tag_left = Counter(tag for sub in submissions for a in sub.arrays for t in a.tasks for tag in t.tags)
    tag_last: dict[str, int] = {}
    submitted: set[int] = set()
    made: dict[int, tuple[str, int]] = {}  # submission -> (why, cause) once its prepare job (if any) has ended
    order: list[tuple[float, int, int]] = []  # (submitted at, submission, array): the queue's priority order
    runs: list[Run] = []
    where: dict[int, tuple[int, int, int, int, tuple[float, ...]]] = {}  # running run -> its array and task
    home: list[tuple[int, int]] = []  # run -> (submission, array); (-1, -1) for a prepare job
    events: list[tuple[float, int, int]] = []  # (time, run, submission whose prepare job the run is, or -1)
    free = gpus

    def submit(t: float) -> None:
        for s, sub in enumerate(submissions):
            if s in submitted or any(tag_left[tag] for tag in sub.after):
                continue
            submitted.add(s)
            cause = max((tag_last[g] for g in sub.after if g in tag_last), key=lambda i: runs[i].end, default=-1)
            why = f"submitted when {', '.join(sorted(sub.after))} ended" if sub.after else "submitted at time 0"
            for j in range(len(sub.arrays)):
                bisect.insort(order, (t, s, j))
            if sub.prepare_min <= 0:
                made[s] = (why, cause)
                continue
            job = Task("prepare job", "prepare", sub.prepare_min, gpus=0)
            runs.append(Run(job, sub.name, t, t + sub.prepare_min, why, cause))
            home.append((-1, -1))
            heapq.heappush(events, (t + sub.prepare_min, len(runs) - 1, s))

    def activate(t: float) -> None:
        for s, (why, cause) in made.items():
            for st in states[s]:
                before = states[s][st.array.after] if st.array.after >= 0 else None
                if st.ready_at is not None or (before is not None and before.ended_at is None):
                    continue
                st.ready_at, st.ready_why, st.ready_cause = t, why, cause
                if before is not None and before.ended_at == t:
                    st.ready_why, st.ready_cause = f"after array {before.array.name} (afterany)", before.last
                st.pending = [(k, 0, task.segments(), -1) for k, task in enumerate(st.array.tasks)]
                if not st.pending:
                    st.ended_at = t

    def schedule(t: float, ended: list[int], full: set[tuple[int, int]]) -> None:
        nonlocal free
        for _, s, j in order:
            st = states[s][j]
            while st.ready_at is not None and st.pending and st.running < st.array.cap:
                k, n, segs, cause = st.pending[0]
                task = st.array.tasks[k]
                if task.gpus > free:
                    return  # strict FIFO: nothing behind the first task that does not fit starts
                st.pending.pop(0)
                if n and abs(runs[cause].end - t) <= EPS:
                    why = "requeued after its time limit"
                elif not n and abs(t - st.ready_at) <= EPS:
                    why, cause = st.ready_why, st.ready_cause
                else:
                    mine = [i for i in ended if home[i] == (s, j)]
                    slot = bool(mine) and (s, j) in full
                    why, cause = (
                        ("a %P slot of its array", mine[0]) if slot else ("a free GPU", ended[0] if ended else -1)
                    )
                runs.append(Run(task, st.array.name, t, t + segs[n], why, cause))
                heapq.heappush(events, (t + segs[n], len(runs) - 1, -1))
                where[len(runs) - 1] = (s, j, k, n, segs)
                home.append((s, j))
                st.running += 1
                free -= task.gpus

    submit(0.0)
    activate(0.0)
    schedule(0.0, [], set())
    while events:
        t = events[0][0]
        ended: list[int] = []
        full: set[tuple[int, int]] = set()
        while events and events[0][0] <= t + EPS:
            _, i, prep = heapq.heappop(events)
            if prep >= 0:
                made[prep] = ("after the prepare job (afterok)", i)
                continue
            ended.append(i)
            s, j, k, n, segs = where.pop(i)
            st = states[s][j]
            if st.running >= st.array.cap:
                full.add((s, j))
            st.running -= 1
            free += runs[i].task.gpus
            if n + 1 < len(segs):
                bisect.insort(st.pending, (k, n + 1, segs, i))
                continue
            st.left -= 1
            for tag in runs[i].task.tags:
                tag_left[tag] -= 1
                tag_last[tag] = i
            if st.left == 0:
                st.ended_at, st.last = t, i
        for _ in range(len(submissions) + 1):  # a submission made now may hold empty arrays that end at once
            submit(t)
            activate(t)
        schedule(t, ended, full)
    stuck = [st.array.name for row in states for st in row if st.ended_at is None]
    if stuck:
        raise ConfigError(f"the plan never runs array(s) {', '.join(stuck)}: a dependency is never met")
    return Result(gpus, tuple(runs))


def lower_bounds(submissions: Sequence[Submission], gpus: int) -> dict[str, float]:
    """Minutes no schedule of the plan can beat, one per limit: the GPUs, ``%P`` with the dependencies, the chain.

    ``GPUs``: the earliest an array can start plus all GPU time over ``gpus``. ``%P``: with GPUs unlimited, each
    array takes at least max(its work / %P, its longest task) after its dependencies. ``chain``: with GPUs and %P
    unlimited, the longest chain of prepare job, lanes, searched rates and the cells that wait for them.
    """
    tasks = [t for sub in submissions for a in sub.arrays for t in a.tasks]
    work = sum(sum(t.segments()) * t.gpus for t in tasks)
    first = min((sub.prepare_min for sub in submissions if not sub.after), default=0.0)
    return {
        "GPUs": first + work / gpus,
        "%P": _dependency_bound(submissions, capped=True),
        "chain": _dependency_bound(submissions, capped=False),
    }


def _dependency_bound(submissions: Sequence[Submission], capped: bool) -> float:
    holders: dict[str, set[int]] = {}  # tag -> the submissions whose tasks carry it
    for s, sub in enumerate(submissions):
        for tag in {g for a in sub.arrays for t in a.tasks for g in t.tags}:
            holders.setdefault(tag, set()).add(s)
    ends: dict[tuple[int, int], float] = {}
    tag_end: dict[str, float] = {}
    done: set[int] = set()
    while len(done) < len(submissions):
        ready = [
            s
            for s, sub in enumerate(submissions)
            if s not in done and all(holders.get(g, set()) <= done for g in sub.after)
        ]
        if not ready:
            raise ConfigError("the plan's submissions wait for each other; a dependency is never met")
        for s in ready:
            sub = submissions[s]
            start = max((tag_end.get(g, 0.0) for g in sub.after), default=0.0) + sub.prepare_min
            for j, a in enumerate(sub.arrays):
                begin = max(start, ends[(s, a.after)]) if a.after >= 0 else start
                runs = [sum(t.segments()) for t in a.tasks]
                longest = max(runs, default=0.0)
                ends[(s, j)] = begin + (max(longest, sum(runs) / a.cap) if capped else longest)
                for tag in {g for t in a.tasks for g in t.tags}:
                    whole = all(tag in t.tags for t in a.tasks)
                    mine = max(r for r, t in zip(runs, a.tasks, strict=True) if tag in t.tags)
                    tag_end[tag] = max(tag_end.get(tag, 0.0), ends[(s, j)] if whole else begin + mine)
            done.add(s)
    return max(ends.values(), default=0.0)
