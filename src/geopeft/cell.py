"""``run_cell``: the one function every launcher calls to train and test one cell.

It writes ``spec.json``, logs the attempt, trains with the paper's protocol, tests the
best-validation checkpoint on every region of the dataset and writes ``result.json`` atomically, or
``failed.json`` with a failure class when anything goes wrong. A cell with a valid result is never run again; an
empty, truncated or invalid ``result.json`` is moved aside and the cell resumed from its checkpoint (tested again).
"""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from collections.abc import Callable

import torch

from geopeft.attempts import end_attempt, skip_attempt, start_attempt
from geopeft.cache.reader import open_split
from geopeft.data.normalisation import resolve as resolve_normalisation
from geopeft.data.registry import get_dataset
from geopeft.errors import CacheError, CellFailed, ConfigError, DataError, GeopeftError
from geopeft.io import atomic_write_json, read_json
from geopeft.lease import Lease, attempt_times, held
from geopeft.models.build import build_segmentor, resolve_bands
from geopeft.models.weights.pretrained import describe_weights
from geopeft.paths import CellPaths
from geopeft.provenance import provenance
from geopeft.result import CellResult, RegionMetrics, TrainSummary, failure_record
from geopeft.spec import CellSpec, RunEnv
from geopeft.train import checkpoint, precision
from geopeft.train.distributed import DistEnv, any_rank, process_group
from geopeft.train.engine import FitData, evaluate, fit
from geopeft.train.faults import requeue
from geopeft.train.loaders import eval_loader, pin_memory
from geopeft.train.memory import checkpoint_blocks
from geopeft.train.preprocess import BatchPreprocess
from geopeft.train.retry import AttemptCounter, retry_oom, starting_layout
from geopeft.train.sampling import BatchLayout
from geopeft.tuning.registry import apply_tuning, load_trainable_state_dict, trainable_state_dict

Log = Callable[[str], None]
#: Puts a preempted cell's job back in the queue and returns its id (None when not under a scheduler).
Requeue = Callable[[], str | None]


def _log(message: str) -> None:
    print(message, flush=True)


def run_cell(
    spec: CellSpec, env: RunEnv, paths: CellPaths, *, log: Log = _log, requeue: Requeue = requeue
) -> CellResult | None:
    """Train and test one cell, or return its existing result; ``None`` when another process owns the cell.

    Args:
        spec: what to train.
        env: where the caches are and how many workers/threads to use.
        paths: the cell directory (``paths.dir`` ends with ``spec.cell_id``).
        log: sink for progress lines.
        requeue: puts a preempted cell's job back in the queue (its id; None outside SLURM). The default runs
            ``scontrol requeue``; a launcher passes its own (``hpc.launch.task``: through submitit's
            ``Checkpointable``).

    Every rank of a multi-process launch (torchrun, or srun with one task per GPU) calls it; the ranks come from
    the environment (:class:`~geopeft.train.distributed.DistEnv`), all of them train and test, and only rank 0
    logs and writes files. Rank 0 first takes the cell's lease (:mod:`geopeft.lease`): when a live process already
    holds it, rank 0 writes one ``skipped`` line to ``attempts.jsonl``, every rank returns ``None`` and nothing else
    is touched. A preempted cell (SIGUSR2) is requeued under SLURM after its records are written; the lease is
    released only after every record of the attempt is written.

    Raises:
        CellFailed: (or the original exception) after ``failed.json`` was written.
    """
    ranks = DistEnv.from_env(spec.cell_id)
    if not ranks.is_main:
        log = _silent
    else:
        _write_spec(spec, paths)
    done = _existing_result(spec, paths, log)
    if done is not None:
        return done
    lease: Lease | None = None
    attempt = AttemptCounter(0)
    if ranks.is_main:
        taken = Lease.acquire(paths)
        if isinstance(taken, Lease):
            lease = taken
            _set_aside_invalid_result(paths, log)
            attempt = AttemptCounter(start_attempt(paths), lease)
            lease.update(attempt=attempt.number)
        else:
            skip_attempt(paths, taken.describe())
            log(f"{spec.slug} [{spec.cell_id}]: already running ({taken.describe()}); leaving it to that process")
    with held(lease):
        return _attempt(spec, env, paths, log, ranks, lease, attempt, requeue)


def _existing_result(spec: CellSpec, paths: CellPaths, log: Log) -> CellResult | None:
    """The cell's valid ``result.json``; None when there is none, or when it is empty, truncated or invalid.

    ``geopeft status`` shows a cell with an invalid result as failed, so ``geopeft rerun`` runs it again: it resumes
    from ``ckpt/last.pt`` (after the last epoch: it only tests) and writes a new result.
    """
    if not paths.result.exists():
        return None
    try:
        done = CellResult.from_dict(read_json(paths.result), str(paths.result))
    except (GeopeftError, OSError) as exc:
        log(f"{spec.slug} [{spec.cell_id}]: {exc}; running the cell again")
        return None
    log(f"{spec.slug} [{spec.cell_id}]: already done, {paths.result}")
    return done


def _set_aside_invalid_result(paths: CellPaths, log: Log) -> None:
    """Under the lease: move an invalid ``result.json`` to ``result.json.invalid-<UTC time>`` (kept for inspection)."""
    try:
        CellResult.from_dict(read_json(paths.result), str(paths.result))
    except FileNotFoundError:
        return
    except (GeopeftError, OSError):
        aside = paths.result.with_name(f"{paths.result.name}.invalid-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        os.replace(paths.result, aside)
        log(f"{paths.result}: invalid, moved to {aside.name}")


def _attempt(
    spec: CellSpec,
    env: RunEnv,
    paths: CellPaths,
    log: Log,
    ranks: DistEnv,
    lease: Lease | None,
    attempt: AttemptCounter,
    requeue: Requeue,
) -> CellResult | None:
    """The attempt of :func:`run_cell` while rank 0 holds the lease (or learns, with every rank, that it does not)."""
    try:
        device = ranks.device(resolve_device(env.device).type)
        with process_group(ranks, device, always=spec.train.strategy.startswith("deepspeed")):
            if any_rank([ranks.is_main and lease is None])[0]:
                return None  # another process owns the cell; rank 0 wrote the skipped line
            log(f"{spec.slug} [{spec.cell_id}]: attempt {attempt.number} in {paths.dir} ({ranks.world_size} rank(s))")
            with precision.matmul_precision(spec.train.matmul_precision):
                result = _train_and_test(spec, env, paths, log, ranks, attempt, lease)
    except BaseException as exc:
        if ranks.is_main and lease is not None:
            _record_failure(spec, paths, log, exc, attempt.number, requeue)
        raise
    if ranks.is_main:
        atomic_write_json(paths.result, result.to_dict())
        paths.failed.unlink(missing_ok=True)
        end_attempt(paths, attempt.number, "success")
    log(f"{spec.slug} [{spec.cell_id}]: done, {paths.result}")
    return result


def _record_failure(
    spec: CellSpec, paths: CellPaths, log: Log, exc: BaseException, number: int, requeue: Requeue
) -> None:
    """Rank 0's records of a failed attempt: ``failed.json`` and the end line; a requeue after a preemption.

    A superseded attempt (its lease was taken over) writes only its end line: the cell belongs to the new owner.

    Raises:
        CellFailed: SLURM refused the requeue of a preempted cell (``failed.json`` says so).
    """
    reason = classify(exc)
    end_attempt(paths, number, "canceled" if reason == "canceled" else "failed", reason)
    if reason == "superseded":
        return
    record = failure_record(
        spec.cell_id,
        spec.slug,
        reason,
        f"{type(exc).__name__}: {exc}",
        "".join(traceback.format_exception(exc)[-12:]),
        number,
        {"time": time.time()},
    )
    atomic_write_json(paths.failed, record)
    if reason == "preempted":
        try:
            job = requeue()
        except CellFailed as refused:  # failed.json says why the cell stays failed instead of requeued
            atomic_write_json(paths.failed, {**record, "error": f"{record['error']}; {refused}"})
            raise refused from exc
        if job:
            log(f"{spec.slug} [{spec.cell_id}]: preempted; requeued SLURM job {job}")


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def classify(exc: BaseException) -> str:
    """A short failure class for status tables: oom, nan, data, config, canceled or error."""
    if isinstance(exc, CellFailed):
        return exc.reason
    if isinstance(exc, torch.OutOfMemoryError):
        return "oom"
    if isinstance(exc, (DataError, CacheError)):
        return "data"
    if isinstance(exc, ConfigError):
        return "config"
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "canceled"
    return "error"


def _write_spec(spec: CellSpec, paths: CellPaths) -> None:
    if paths.spec.exists():
        stored = read_json(paths.spec)
        if stored.get("cell_id") != spec.cell_id:
            raise GeopeftError(
                f"{paths.spec} belongs to cell {stored.get('cell_id')}, not {spec.cell_id}; "
                "a cell directory must be named after its cell id"
            )
        return
    atomic_write_json(paths.spec, {"cell_id": spec.cell_id, "slug": spec.slug, "spec": spec.to_dict()})


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("env.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    return torch.device(name)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _train_and_test(
    spec: CellSpec,
    env: RunEnv,
    paths: CellPaths,
    log: Log,
    ranks: DistEnv,
    attempt: AttemptCounter,
    lease: Lease | None,
) -> CellResult:
    if env.threads:
        torch.set_num_threads(env.threads)
    device = ranks.device(resolve_device(env.device).type)
    checkpoint.seed_everything(spec.seed)
    info = get_dataset(spec.dataset, where=spec.slug)
    bands = resolve_bands(spec.model)
    split_names = (info.train_split, info.val_split, *info.regions)
    splits = {
        s: open_split(
            env.cache_root, spec.dataset, s, bands=bands, train=s == info.train_split, metadata=spec.model.metadata
        )
        for s in split_names
    }
    train_ds = splits[info.train_split]
    if len(train_ds) < spec.train.batch_size:
        raise ConfigError(
            f"{spec.slug}: the train split has {len(train_ds)} samples, fewer than batch_size "
            f"{spec.train.batch_size}; lower train.batch_size"
        )
    norm = resolve_normalisation(
        spec.train.normalisation,
        spec.dataset,
        bands,
        scale=info.scale,
        study=info.study_stats,
        train_split=train_ds.header.train_stats(),
        where=spec.slug,
    )
    prep = BatchPreprocess(norm, pad_to=info.pad_to, ignore_index=info.ignore_index)
    img_size = prep.size(*splits[info.val_split].shape[1:])[1]
    model = build_segmentor(
        spec.model,
        spec.decoder,
        num_classes=len(info.classes),
        img_size=img_size,
        where=spec.slug,
        weights_root=env.weights_root,
    )
    report = apply_tuning(model, spec.tuning, where=spec.slug)
    if spec.train.activation_checkpointing:
        log(f"{spec.slug}: activation checkpointing of {checkpoint_blocks(model, spec.slug)} transformer blocks")
    model.to(device)
    log(f"{spec.slug}: {report.trainable:,} of {report.total:,} parameters trainable ({100 * report.fraction:.2f} %)")

    # rank 0 checks at every step that its generation of the lease is still the newest (one directory listing)
    owner_lost = (lambda: not lease.owned()) if lease is not None else (lambda: False)
    beat = lease.update if lease is not None else (lambda: None)
    data = FitData(train_ds, splits[info.val_split], prep, env.num_workers, owner_lost, beat)
    outcome = retry_oom(
        lambda layout: fit(
            model,
            spec.train,
            data,
            paths,
            device,
            layout=layout,
            seed=spec.seed,
            rank=ranks.rank,
            num_classes=len(info.classes),
            trainable_state=lambda: trainable_state_dict(model),
            log=log,
        ),
        starting_layout(paths, BatchLayout.full(spec.train.batch_size, ranks.world_size)),
        model=model,
        paths=paths,
        attempt=attempt,
        is_main=ranks.is_main,
        log=log,
    )
    batch = max(spec.train.batch_size // ranks.world_size, 1)
    load_trainable_state_dict(model, checkpoint.load(paths.best_ckpt)["model"])
    regions: dict[str, RegionMetrics] = {}
    for region in info.regions:
        ds = splits[region]
        metrics = evaluate(
            model,
            eval_loader(ds, batch, ranks.rank, ranks.world_size, env.num_workers, pin_memory(device)),
            device,
            prep=prep,
            num_classes=len(info.classes),
            precision=spec.train.precision,
        )
        if metrics.n != len(ds):
            raise CellFailed(f"{spec.slug}: evaluated {metrics.n} samples of {region}, expected {len(ds)}")
        regions[region] = metrics
        log(f"{spec.slug}: {region} mIoU {100 * metrics.miou:.2f} (n={metrics.n})")
    times = attempt_times(paths, now=time.time()) if ranks.is_main else []  # every attempt, this one to now
    return CellResult(
        cell_id=spec.cell_id,
        slug=spec.slug,
        spec=spec.to_dict(),
        regions=regions,
        train=TrainSummary(
            best_epoch=outcome.best_epoch,
            epochs_run=outcome.epochs_run,
            wall_time_s=sum(times),
            attempt_times_s=tuple(times),
            time_per_epoch_s=outcome.time_per_epoch_s,
            samples_per_s=outcome.samples_per_s,
            peak_memory_mb=_peak_memory_mb(device),
            device=_device_name(device),
            world_size=ranks.world_size,
            resumed_from_epoch=outcome.resumed_from_epoch,
            data_wait_fraction=outcome.data_wait_fraction,
        ),
        params=report.to_dict(),
        provenance={
            **provenance(),
            "argv": sys.argv,
            "env": env.to_dict(),
            "determinism": checkpoint.determinism(),
            "precision": precision.describe(),
            "distributed": {
                "launcher": ranks.launcher,
                "world_size": ranks.world_size,
                "strategy": spec.train.strategy,
                "micro_batch": outcome.layout.micro_batch,
                "accumulation": outcome.layout.accumulation,
            },
            "weights": describe_weights(spec.model.weights, env.weights_root),
            "normalisation": norm.to_dict(),
        },
        cache_keys={s: ds.key for s, ds in splits.items()},
    )
