"""Build the HDF5 cache of a dataset from its raw files: one file per split, atomic, reused when unchanged.

This module never imports torch: the login node and the sweep pre-flight check import it.

Each split file is written to a hidden temporary sibling, checked (count and one decoded sample) and renamed into
place (:func:`geopeft.io.temporary_save_path`), so an interrupted build never leaves a visible half cache. The train
split is built first; its per-band mean and standard deviation (after the dataset's constant scale) are stored in
every split's file. A split is rebuilt when its split file, the names or sizes of its raw files, the train split
(through the statistics), the codec or the builder version change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from geopeft.cache import schema
from geopeft.data.bands import WAVELENGTHS_UM
from geopeft.data.registry import DatasetSource, NativeSplits, RawSample, get_source, read_split_ids
from geopeft.errors import CacheError, DataError, unknown_choice
from geopeft.io import temporary_save_path


@dataclass(frozen=True)
class PrepareOutcome:
    """What :func:`prepare` did for one split.

    Args:
        split: the split name.
        path: its cache file.
        key: the file's key.
        n: number of samples.
        built: ``False`` when a valid cache with the same inputs was reused.
        corrupt: where a corrupt file that stood at ``path`` was moved before the rebuild, and why; ``None`` when
            there was none.
    """

    split: str
    path: Path
    key: str
    n: int
    built: bool
    corrupt: tuple[Path, str] | None = None


@dataclass(frozen=True)
class SplitPlan:
    """The inputs of one split's cache file.

    Args:
        split: the split name.
        ids: sample ids in split-file order.
        identity: the identity attributes (see :data:`geopeft.cache.schema.IDENTITY_ATTRS`).
    """

    split: str
    ids: tuple[str, ...]
    identity: dict[str, Any]


def cache_path(cache_root: str | os.PathLike[str], dataset: str, split: str) -> Path:
    """``<cache_root>/<dataset>/<split>.h5``."""
    return Path(cache_root) / dataset / f"{split}.h5"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_splits(
    source: DatasetSource, raw: Path, splits_dir: Path | None, codec: str = schema.DEFAULT_CODEC
) -> dict[str, SplitPlan]:
    """Read every split file and stat every raw file (no pixel is read).

    Raises:
        DataError: the raw folder, a split file or a sample's file is missing.
    """
    info = source.info
    if not raw.is_dir():
        raise DataError(f"{info.name}: raw folder {raw} does not exist; pass --raw the folder holding the dataset")
    folder = source.default_splits_dir if splits_dir is None else splits_dir
    native = source.native_splits(raw) if splits_dir is None and isinstance(source, NativeSplits) else None
    hashes: dict[str, tuple[list[str], str, str]] = {}
    for split in info.splits:
        if native is not None:
            ids, split_bytes = native[0][split], native[1]
        else:
            split_file = source.split_file(split, folder)
            ids, split_bytes = read_split_ids(split_file, split), split_file.read_bytes()
        files = source.source_files(raw, split, ids)
        listing = sorted((p.name, p.stat().st_size) for p in files)
        hashes[split] = (ids, _sha256(split_bytes), _sha256(json.dumps(listing).encode()))
    _, train_split_sha, train_sources_sha = hashes[info.train_split]
    common = {
        "dataset": info.name,
        "builder_version": schema.BUILDER_VERSION,
        "codec": codec,
        "bands": list(info.bands),
        "wavelengths": [WAVELENGTHS_UM.get(b, float("nan")) for b in info.bands],
        "gsd": float(info.gsd),
        "scale": float(info.scale),
        "classes": list(info.classes),
        "stats_sha256": _sha256(f"{train_split_sha}:{train_sources_sha}".encode()),
    }
    return {
        split: SplitPlan(
            split,
            tuple(ids),
            {**common, "split": split, "split_file_sha256": split_sha, "sources_sha256": sources_sha},
        )
        for split, (ids, split_sha, sources_sha) in hashes.items()
    }


class RunningStats:
    """Per-band mean and population standard deviation over many images (Chan et al.'s pairwise update)."""

    def __init__(self, bands: int) -> None:
        self.count = 0
        self.mean = np.zeros(bands)
        self.m2 = np.zeros(bands)

    def add(self, image: npt.NDArray[np.generic], scale: float) -> None:
        """Add every pixel of a ``[C, H, W]`` image, multiplied by ``scale`` first."""
        x = image.reshape(image.shape[0], -1).astype(np.float64) * scale
        n = x.shape[1]
        mean = x.mean(axis=1)
        m2 = ((x - mean[:, None]) ** 2).sum(axis=1)
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    def result(self) -> tuple[list[float], list[float]]:
        """``(mean, std)``; a constant band gets std 1 so that standardising it stays finite."""
        std = np.sqrt(self.m2 / max(self.count, 1))
        return self.mean.tolist(), np.where(std > 0, std, 1.0).tolist()


def write_sample(f: h5py.File, i: int, sample: RawSample) -> None:
    """Store sample ``i`` (image, mask and metadata) in an open cache file."""
    f[schema.IMAGES][i] = sample.image
    f[schema.MASKS][i] = sample.mask
    f[schema.DATE][i] = sample.date or ""
    f[schema.LAT][i] = np.nan if sample.lat is None else sample.lat
    f[schema.LON][i] = np.nan if sample.lon is None else sample.lon


def _create(f: h5py.File, plan: SplitPlan, first: RawSample) -> None:
    n, (c, h, w) = len(plan.ids), first.image.shape
    comp = schema.compression(plan.identity["codec"])
    f.create_dataset(schema.IMAGES, (n, c, h, w), dtype=first.image.dtype, chunks=(1, c, h, w), **comp)
    f.create_dataset(schema.MASKS, (n, h, w), dtype=schema.MASK_DTYPE, chunks=(1, h, w), **comp)
    f.create_dataset(schema.IDS, data=np.array(plan.ids, dtype=object), dtype=h5py.string_dtype())
    f.create_dataset(schema.DATE, (n,), dtype=h5py.string_dtype())
    f.create_dataset(schema.LAT, (n,), dtype=np.float64, fillvalue=np.nan)
    f.create_dataset(schema.LON, (n,), dtype=np.float64, fillvalue=np.nan)


def _write(
    f: h5py.File, source: DatasetSource, raw: Path, plan: SplitPlan, stats: RunningStats | None, progress: bool
) -> RawSample:
    """Write every sample of ``plan``; return the last one (for the check)."""
    info, first = source.info, source.read_sample(raw, plan.ids[0])
    _create(f, plan, first)
    sample = first
    for i, sample_id in enumerate(
        tqdm(plan.ids, desc=f"{info.name}/{plan.split}", disable=not progress, file=sys.stderr)
    ):
        sample = first if i == 0 else source.read_sample(raw, sample_id)
        if sample.image.shape != first.image.shape or sample.image.dtype != first.image.dtype:
            raise DataError(
                f"{info.name} split {plan.split}: sample {sample_id} is {sample.image.shape} {sample.image.dtype}, "
                f"but {plan.ids[0]} is {first.image.shape} {first.image.dtype}; one split must share shape and dtype"
            )
        write_sample(f, i, sample)
        if stats is not None:
            stats.add(sample.image, info.scale)
    return sample


def build_split(
    source: DatasetSource,
    raw: Path,
    plan: SplitPlan,
    path: Path,
    stats: tuple[list[float], list[float]] | None,
    progress: bool = True,
) -> schema.CacheHeader:
    """Build one split's cache file atomically and return its checked header.

    Args:
        source: the dataset's source.
        raw: the raw root.
        plan: the split's ids and identity.
        path: the final file name.
        stats: train ``(mean, std)``; ``None`` computes them from this split (the train split).
        progress: show a progress bar on stderr.

    Raises:
        DataError: a raw file is malformed.
        CacheError: the written file does not read back.
    """
    running = RunningStats(len(source.info.bands))
    with temporary_save_path(path) as tmp:
        with schema.open_h5(tmp, "w") as f:
            last = _write(f, source, raw, plan, running if stats is None else None, progress)
            mean, std = running.result() if stats is None else stats
            attrs: dict[str, Any] = {**plan.identity, "mean": mean, "std": std, "n": len(plan.ids)}
            attrs[schema.KEY_ATTR] = schema.compute_key(attrs)
            f.attrs.update(attrs)
        header = schema.read_header(tmp, source.info.name, plan.split, path.parent.parent)
        with schema.open_h5(tmp) as f:
            ok = (
                header.n == len(plan.ids)
                and np.array_equal(f[schema.IMAGES][-1], last.image)
                and np.array_equal(f[schema.MASKS][-1], last.mask)
            )
        if not ok:
            raise CacheError(f"{path}: the file just written does not read back (n or the last sample differ)")
    return dataclasses.replace(header, path=path)


def move_aside(path: Path) -> Path:
    """Rename a corrupt cache file to ``<split>.corrupt-<UTC time>.h5`` beside it and return the new path."""
    aside = path.with_name(f"{path.stem}.corrupt-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}{path.suffix}")
    os.replace(path, aside)
    return aside


def _valid_header(path: Path, dataset: str, split: str) -> schema.CacheHeader | None:
    try:
        return schema.read_header(path, dataset, split)
    except CacheError:
        return None


def prepare(
    dataset: str,
    raw: str | os.PathLike[str],
    cache_root: str | os.PathLike[str],
    *,
    splits_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    codec: str = schema.DEFAULT_CODEC,
    verify: bool = True,
) -> list[PrepareOutcome]:
    """Build (or verify and reuse) one HDF5 cache file per split of ``dataset``, the train split first.

    A file with the same inputs is reused only after every chunk of it decodes with a good checksum
    (:func:`geopeft.cache.schema.first_bad_chunk`; ``verify=False`` skips that read). A corrupt one is moved aside to
    ``<split>.corrupt-<time>.h5`` (kept for inspection, never deleted) and the split is rebuilt.

    Args:
        dataset: dataset registry name.
        raw: the dataset's raw root.
        cache_root: where ``<dataset>/<split>.h5`` go.
        splits_dir: folder of split files; ``None`` uses the official ones shipped with geopeft.
        force: rebuild even when a valid cache with the same inputs exists.
        progress: show progress bars on stderr.
        codec: image and mask compression, one of :data:`geopeft.cache.schema.CODECS` (part of the key).
        verify: decode every chunk of a file before reusing it.

    Returns:
        One :class:`PrepareOutcome` per split, in the dataset's split order.

    Raises:
        ConfigError: unknown dataset or codec.
        CacheError: ``codec`` needs ``hdf5plugin`` and it is not installed.
        DataError: missing or malformed raw or split files (checked for every split before anything is built).
    """
    if codec not in schema.CODECS:
        raise unknown_choice("codec", codec, schema.CODECS, "prepare")
    schema.load_plugins(codec)
    source = get_source(dataset, "prepare")
    plans = plan_splits(source, Path(raw), None if splits_dir is None else Path(splits_dir), codec)
    stats: tuple[list[float], list[float]] | None = None
    outcomes = []
    for split, plan in plans.items():
        path = cache_path(cache_root, dataset, split)
        old = None if force else _valid_header(path, dataset, split)
        corrupt = None
        if old is not None and old.matches(plan.identity):
            problem = schema.first_bad_chunk(path) if verify else None
            if problem is not None:
                corrupt = (move_aside(path), problem)
                old = None
        if old is not None and old.matches(plan.identity):
            header, built = old, False
        else:
            header, built = build_split(source, Path(raw), plan, path, stats, progress), True
        if stats is None:
            stats = (list(header.mean), list(header.std))
        outcomes.append(PrepareOutcome(split, path, header.key, header.n, built, corrupt))
    return outcomes


def cache_state(
    cache_root: str | os.PathLike[str],
    dataset: str,
    raw: str | os.PathLike[str] | None = None,
    splits_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str | None]:
    """Split -> key of its valid cache file, or ``None`` when missing, corrupt or (given ``raw``) stale.

    Opens attributes only; with ``raw`` it also stats the raw files and reads the split files, never pixels.

    Args:
        cache_root: the cache root.
        dataset: dataset registry name.
        raw: when given, a file whose inputs differ from the current raw and split files counts as stale.
        splits_dir: split files to compare with (``None``: the official ones); used only with ``raw``.

    Raises:
        ConfigError: unknown dataset.
        DataError: ``raw`` is given but its files are incomplete.
    """
    source = get_source(dataset, "cache_state")
    plans = None if raw is None else plan_splits(source, Path(raw), None if splits_dir is None else Path(splits_dir))
    state: dict[str, str | None] = {}
    for split in source.info.splits:
        header = _valid_header(cache_path(cache_root, dataset, split), dataset, split)
        if header is not None and (plans is None or header.matches(plans[split].identity, ignore=("codec",))):
            state[split] = header.key
        else:
            state[split] = None
    return state
